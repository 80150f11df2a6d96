//! Reading a run from anywhere, and waiting for it to finish: what
//! `Run.result` and `durable.result` are made of. Nothing here takes a run
//! over or writes.

use std::time::{Duration, Instant};

use crate::engine::error::EngineError;
use crate::engine::sql::Sql;
use crate::engine::values::jsonb::JsonText;
use crate::engine::workflow::{Status, col};
use crate::engine::{Engine, validate_name};

/// Wait between two looks at a run when no notification says it finished
/// (one may be missed while the liveness session reconnects).
const FALLBACK_POLL: Duration = Duration::from_secs(1);

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
        row.map(|row| {
            Ok(RunState {
                id: col(&row, "id")?,
                status: Status::parse(col(&row, "status")?)?,
                output: col(&row, "output")?,
                error: col(&row, "error")?,
            })
        })
        .transpose()
    }

    /// Waits until the root run `name` finished, or `timeout` ran out; returns
    /// it as it then is (`None` if there is no such run). Woken by the
    /// notification of its end, with a slow poll as a backstop.
    pub async fn wait_finished(&self, name: &str, timeout: Duration) -> Result<Option<RunState>, EngineError> {
        let give_up = Instant::now() + timeout;
        let Some(state) = self.run_state(name).await? else {
            return Ok(None);
        };
        if state.finished() {
            return Ok(Some(state));
        }
        // Watched (by its id, which the first look gave) before the next
        // look, so that no end is missed between.
        let mut watch = self.inner.events.watch_finish(state.id);
        loop {
            let Some(state) = self.run_state(name).await? else {
                return Ok(None);
            };
            if state.finished() || Instant::now() >= give_up {
                return Ok(Some(state));
            }
            let wake_at = give_up.min(Instant::now() + FALLBACK_POLL);
            if let Ok(false) = tokio::time::timeout_at(wake_at.into(), watch.finished()).await {
                tokio::time::sleep_until(wake_at.into()).await;
            }
        }
    }
}
