//! Executors as the database knows them: each registers the functions it
//! runs (and at which version), so that a waiting run can tell whether any
//! live executor knows its function (see `read::runs::COLUMNS`).

use crate::engine::sql::Sql;
use crate::engine::{Engine, EngineError};

impl Engine {
    /// Registers an executor of this process that runs `workflows` at
    /// `version`, so that waiting runs can tell whether a live executor
    /// knows their function; returns its number, for `unregister_executor`.
    /// Each executor of a process has its own registration.
    pub async fn register_executor(&self, workflows: &[String], version: Option<&str>) -> Result<i64, EngineError> {
        self.check_open()?;
        let owner = self.owner_id();
        let id = self.inner.executors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sql = &self.inner.sql;
        retrying!(self, "registering this executor", |client| async {
            let statement = client.prepare_cached(&sql.register_executor).await?;
            client.execute(&statement, &[&owner, &id, &workflows, &version]).await
        })?;
        Ok(id)
    }

    /// Removes the registration `id` (the executor stopped). The others of
    /// this process keep theirs.
    pub async fn unregister_executor(&self, id: i64) -> Result<(), EngineError> {
        self.check_open()?;
        let owner = self.owner_id();
        let sql = &self.inner.sql;
        retrying!(self, "unregistering this executor", |client| async {
            let statement = client.prepare_cached(&sql.unregister_executor).await?;
            client.execute(&statement, &[&owner, &id]).await
        })?;
        Ok(())
    }
}

/// Registers the executor `$2` of owner `$1`: it runs the functions `$3` at
/// version `$4`.
pub(crate) const REGISTER_EXECUTOR: Sql = Sql::new(
    "
INSERT INTO {schema}.executor (owner_id, id, workflows, version) VALUES ($1::text::uuid, $2, $3, $4)
ON CONFLICT (owner_id, id) DO UPDATE SET workflows = EXCLUDED.workflows, version = EXCLUDED.version",
);

/// Removes the registration of executor `$2` of owner `$1`.
pub(crate) const UNREGISTER_EXECUTOR: Sql =
    Sql::new("DELETE FROM {schema}.executor WHERE owner_id = $1::text::uuid AND id = $2");
