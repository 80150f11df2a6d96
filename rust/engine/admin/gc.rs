//! Garbage collection: deleting the trees of finished root workflows.

use std::time::Duration;

use crate::engine::Engine;
use crate::engine::error::EngineError;
use crate::engine::sql::Sql;
use crate::engine::workflow::col;

impl Engine {
    /// Deletes the trees (root, children, steps) of root workflows that
    /// finished (completed, failed or cancelled) more than `older_than` ago
    /// on the database's clock, `batch` roots per statement, each statement
    /// its own short transaction, until none is left. Returns how many roots
    /// were deleted. Runs that are not finished are never touched, nor are
    /// roots another transaction holds locked at that moment (a concurrent
    /// start of a failed run): they are left for the next collection.
    pub async fn gc(&self, older_than: Duration, batch: i64) -> Result<u64, EngineError> {
        if batch < 1 {
            return Err(EngineError::InvalidOption(format!(
                "batch must be at least 1, not {batch}"
            )));
        }
        self.check_open()?;
        let seconds = older_than.as_secs_f64();
        let sql = &self.inner.sql;
        let mut total = 0;
        loop {
            let row = retrying!(self, "deleting finished workflows", |client| async {
                let statement = client.prepare_cached(&sql.gc).await?;
                client.query_one(&statement, &[&seconds, &batch]).await
            })?;
            let deleted: i64 = col(&row, "roots")?;
            total += u64::try_from(deleted).unwrap_or(0);
            if deleted < batch {
                return Ok(total);
            }
        }
    }
}

/// Deletes up to `$2` finished roots that completed more than `$1` seconds
/// ago, with every row of their trees (by `root_id`, so no row is left to
/// the cascade). The roots are locked first, skipping locked ones, and the
/// lock rechecks the status: a root started again meanwhile (a failed run
/// resumed) is no longer finished and stays.
pub(crate) const GC: Sql = Sql::new(
    "
WITH doomed AS (
    SELECT id FROM {schema}.task
    WHERE parent_id IS NULL AND status IN ('completed', 'failed', 'cancelled')
      AND completed_at < now() - make_interval(secs => $1::float8)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM {schema}.task AS t USING doomed WHERE t.root_id = doomed.id
    RETURNING t.parent_id IS NULL AS is_root
)
SELECT count(*) FILTER (WHERE is_root) AS roots FROM deleted",
);
