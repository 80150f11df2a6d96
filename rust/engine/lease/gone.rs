//! Holders proven gone: a start that finds the holder of its root without a
//! session asks, if that holder ran on this machine, whether its process
//! still exists (`lease::process`). A process that has ended needs no
//! grace: its grace is set to over, and the claim that follows takes the
//! root at once. A live process whose session merely dropped is never
//! proven gone, and keeps its grace.

use tokio_postgres::Row;

use crate::engine::lease::owner::CONNECTED;
use crate::engine::lease::process::Process;
use crate::engine::sql::Sql;
use crate::engine::workflow::col;
use crate::engine::{Engine, EngineError};

impl Engine {
    /// Whether the holder described by `row` (of `checkpoint::start::HOLDER`,
    /// whose session is gone) is a process of this machine that has ended;
    /// if so, its grace is set to over before this returns.
    pub(crate) async fn holder_gone(&self, row: &Row) -> Result<bool, EngineError> {
        let Some(here) = &self.inner.owner.process else {
            return Ok(false);
        };
        let recorded = (
            col::<Option<String>>(row, "boot_id")?,
            col::<Option<String>>(row, "pid_namespace")?,
            col::<Option<i64>>(row, "process_start")?,
        );
        let (Some(boot_id), Some(namespace), Some(start)) = recorded else {
            return Ok(false); // an owner of an earlier version, or one that could not tell
        };
        let holder = Process {
            boot_id,
            namespace,
            pid: col(row, "pid")?,
            start,
        };
        if !here.proves_gone(&holder) {
            return Ok(false);
        }
        let id: String = col(row, "owner_id")?;
        let session: i32 = col(row, "backend_pid")?;
        retrying!(self, "marking the grace of an ended process over", |client| async {
            let statement = client.prepare_cached(&self.inner.sql.owner_gone).await?;
            client.execute(&statement, &[&id, &session, &start]).await
        })?;
        log::info!(
            "the process that held a workflow here (owner {id}, pid {}) has ended: its workflows are taken over \
             without waiting out its grace",
            holder.pid
        );
        Ok(true)
    }
}

/// Sets the grace of the owner `$1` over: its `session_lost_at` goes back by
/// its grace (never forward), so every claimant, of this version or an
/// earlier one, finds it dead while its session stays gone. Only for the very
/// session (`$2`) and process (`$3`, its start time) found gone.
pub(crate) const OWNER_GONE: Sql = Sql::new(
    "
UPDATE {schema}.owner AS o SET session_lost_at = least(coalesce(o.session_lost_at, now()), now() - o.session_grace)
WHERE o.id = $1::text::uuid AND o.backend_pid = $2 AND o.process_start = $3 AND NOT {connected}",
)
.with(&[("connected", CONNECTED)]);
