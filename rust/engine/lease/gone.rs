//! Holders proven gone: an owner whose session is gone gets its grace, in
//! case its process lives on and is getting a new session; but a process of
//! this machine that has ended (`lease::process`) needs none. Its grace is
//! set over, and what it held is free at once: when this process registers
//! (a program restarted after a crash finds its predecessor), and when a
//! start finds the holder of its root without a session. A live process
//! whose session merely dropped is never proven gone, and keeps its grace.

use std::time::Duration;

use tokio::time::timeout;
use tokio_postgres::{Client, Row};

use crate::engine::lease::owner::CONNECTED;
use crate::engine::lease::process::Process;
use crate::engine::sql::{Sql, Statements};
use crate::engine::workflow::col;
use crate::engine::{Engine, EngineError};

impl Engine {
    /// Whether the holder described by `row` (of `checkpoint::start::HOLDER`,
    /// whose session is gone) is a process of this machine that has ended;
    /// if so, its grace is set over before this returns.
    pub(crate) async fn holder_gone(&self, row: &Row) -> Result<bool, EngineError> {
        let Some(here) = &self.inner.owner.process else {
            return Ok(false);
        };
        let Some((holder, id, session)) = recorded(row)? else {
            return Ok(false);
        };
        if !here.proves_gone(&holder) {
            return Ok(false);
        }
        retrying!(self, "setting the grace of an ended process over", |client| async {
            let statement = client.prepare_cached(&self.inner.sql.owner_gone).await?;
            client.execute(&statement, &[&id, &session, &holder.start]).await
        })?;
        ended(&id, &holder);
        Ok(true)
    }
}

/// Sets over the grace of every owner of this machine whose session is
/// gone and whose process has ended. Run once, by a process that has just
/// registered as owner `id` (on its session, within `limit`).
pub(crate) async fn release_ended(
    client: &Client,
    sql: &Statements,
    here: &Process,
    id: &str,
    limit: Duration,
) -> Result<(), EngineError> {
    let context = "looking for owners of this machine that have ended";
    let answer = timeout(limit, async {
        let rows = client
            .query(&sql.owners_gone_here, &[&here.boot_id, &here.namespace, &id])
            .await?;
        let mut ended_here = Vec::new();
        for row in &rows {
            if let Some((holder, owner, session)) = recorded(row).ok().flatten() {
                if here.proves_gone(&holder) {
                    client
                        .execute(&sql.owner_gone, &[&owner, &session, &holder.start])
                        .await?;
                    ended_here.push((owner, holder));
                }
            }
        }
        Ok::<_, tokio_postgres::Error>(ended_here)
    });
    let ended_here = answer
        .await
        .map_err(|_| EngineError::Unexpected(format!("{context}: no answer")))?
        .map_err(|e| EngineError::database(context, &e))?;
    for (owner, holder) in &ended_here {
        ended(owner, holder);
    }
    Ok(())
}

/// The process an owner row records, its id and its session's pid; `None`
/// for an owner of an earlier version, or one that could not tell.
fn recorded(row: &Row) -> Result<Option<(Process, String, i32)>, EngineError> {
    let (Some(boot_id), Some(namespace), Some(start)) = (
        col::<Option<String>>(row, "boot_id")?,
        col::<Option<String>>(row, "pid_namespace")?,
        col::<Option<i64>>(row, "process_start")?,
    ) else {
        return Ok(None);
    };
    let process = Process {
        boot_id,
        namespace,
        pid: col(row, "pid")?,
        start,
    };
    Ok(Some((process, col(row, "owner_id")?, col(row, "backend_pid")?)))
}

fn ended(owner: &str, process: &Process) {
    log::info!(
        "the process that was owner {owner} here (pid {}) has ended: its workflows may be taken over without \
         waiting out its grace",
        process.pid
    );
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

/// The owners other than `$3` of the machine `$1` and pid namespace `$2`
/// whose session is gone and whose grace runs (for `release_ended`).
pub(crate) const OWNERS_GONE_HERE: Sql = Sql::new(
    "
SELECT o.id::text AS owner_id, o.backend_pid, o.boot_id, o.pid_namespace, o.pid, o.process_start
FROM {schema}.owner AS o
WHERE o.boot_id = $1 AND o.pid_namespace = $2 AND o.id <> $3::text::uuid AND o.expires_at > now()
  AND o.session_grace > interval '0' AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace)
  AND NOT {connected}",
)
.with(&[("connected", CONNECTED)]);
