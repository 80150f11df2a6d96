//! Reading a run from anywhere: what `Run.result` and `durable.result` are
//! made of (the waiting is `watcher`'s). Nothing here takes a run over or
//! writes.

use tokio_postgres::Row;

use crate::engine::error::EngineError;
use crate::engine::sql::Sql;
use crate::engine::values::jsonb::JsonText;
use crate::engine::workflow::{Status, col};
use crate::engine::{Engine, validate_name};

/// A root run as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub id: i64,
    pub status: Status,
    pub output: Option<JsonText>,
    pub error: Option<JsonText>,
}

impl RunState {
    /// True once the run completed, failed or was cancelled.
    pub fn finished(&self) -> bool {
        matches!(self.status, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// The run in `row` (its `id`, `status`, `output` and `error`).
    pub(crate) fn from_row(row: &Row) -> Result<RunState, EngineError> {
        Ok(RunState {
            id: col(row, "id")?,
            status: Status::parse(col(row, "status")?)?,
            output: col(row, "output")?,
            error: col(row, "error")?,
        })
    }
}

/// Reads the root `$1`.
pub(crate) const RUN_STATE: Sql = Sql::new(
    "
SELECT id, status, output, error FROM {schema}.task WHERE parent_id IS NULL AND name = $1",
);

impl Engine {
    /// The root run `name` as it is now; `None` if there is none.
    pub async fn run_state(&self, name: &str) -> Result<Option<RunState>, EngineError> {
        validate_name("workflow", name)?;
        self.check_open()?;
        let row = retrying!(self, &format!("reading workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.run_state).await?;
            client.query_opt(&statement, &[&name]).await
        })?;
        row.as_ref().map(RunState::from_row).transpose()
    }
}
