//! The recovery pass of executors: the runs of dead holders go back to
//! their queue, runs this process holds in the database but not in memory
//! go back too, and cancelled runs of dead holders give their slot back.
//! One statement, every `recovery_interval`.
//!
//! Who is charged for a crash: a holder that died while it ran several
//! runs cannot say which of them took it down. Its runs are requeued
//! *isolated* and not charged; an isolated run is claimed only by an
//! executor that holds nothing else, and runs alone until it finishes. A
//! holder that dies while it runs one run alone charges that run
//! (`recoveries + 1`), and a run charged more than `max_recoveries` times
//! fails with `TooManyRecoveries`. So a run that kills its process fails
//! after at most `max_recoveries + 2` crashes, and its neighbours never.

use crate::engine::Engine;
use crate::engine::error::EngineError;
use crate::engine::lease::owner::CONNECTED;
use crate::engine::sql::Sql;
use crate::engine::workflow::col;

/// What one recovery pass did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Runs of dead holders put back in their queue.
    pub requeued: u64,
    /// Runs failed after too many crashes while running alone.
    pub failed: u64,
    /// Runs that the database says this process holds, but no handle of
    /// it does (a claim whose answer was lost): put back in their queue.
    pub orphans: u64,
    /// Cancelled runs of dead holders: their queue slot is free now.
    pub freed: u64,
    /// The queues with waiting runs.
    pub queues: Vec<String>,
    /// True when an isolated run of the functions is due: an executor makes
    /// room (claims nothing new until it is idle) to run it alone.
    pub isolated_waiting: bool,
}

impl Engine {
    /// One recovery pass for the functions `workflows` (see the module's
    /// documentation): marks the holders whose session is gone (which
    /// starts their grace), requeues or fails the runs of dead holders
    /// (whatever their version: requeueing is not running), frees the
    /// slots of their cancelled runs, and requeues this process's orphans.
    pub async fn recover(
        &self,
        workflows: &[String],
        version: Option<&str>,
        max_recoveries: i32,
    ) -> Result<Recovered, EngineError> {
        self.check_open()?;
        if workflows.is_empty() {
            return Ok(Recovered::default());
        }
        // No claim is between its commit and its holds while the held names
        // are read and compared: a claimed run is never taken for an orphan.
        let _alone = self.inner.claiming.write().await;
        let held = self.inner.holds.names();
        let schema = self.schema();
        let owner = self.owner_id();
        let sql = &self.inner.sql;
        let rows = retrying!(self, "recovering the runs of dead holders", |client| async {
            let statement = client.prepare_cached(&sql.recovery_pass).await?;
            client
                .query(
                    &statement,
                    &[&workflows, &max_recoveries, &schema, &owner, &held, &version],
                )
                .await
        })?;
        let mut found = Recovered::default();
        for row in &rows {
            let kind: String = col(row, "kind")?;
            let value: Option<String> = col(row, "value")?;
            match (kind.as_str(), value) {
                ("requeued", _) => found.requeued += 1,
                ("failed", _) => found.failed += 1,
                ("orphan", _) => found.orphans += 1,
                ("freed", _) => found.freed += 1,
                ("queue", Some(name)) => found.queues.push(name),
                ("isolated", _) => found.isolated_waiting = true,
                _ => {}
            }
        }
        if found.orphans > 0 {
            log::warn!(
                "{} runs were held by this process in the database but by no handle here (a claim whose \
                 answer was lost, or a release that did not reach the database); they are queued again",
                found.orphans
            );
        }
        if found.requeued + found.failed + found.orphans + found.freed > 0 {
            self.inner.events.more_work();
        }
        Ok(found)
    }
}

/// The recovery pass (see `Engine::recover`). `$1` the functions, `$2`
/// `max_recoveries`, `$3` the schema (notifications), `$4` this owner, `$5`
/// the root names this process holds or is starting, `$6` the version.
/// Rows: `(kind, value)`.
///
/// * `lost`, `marked`: the first to see an owner's session gone records
///   when, which starts its grace (only owners that hold something of
///   interest); only on the very session seen gone (`backend_pid` pinned,
///   as the heartbeat does), since a row that changed meanwhile is
///   re-checked against this transaction's cached view of the sessions, in
///   which an owner's new session may not show yet.
/// * `dead`: running roots of the functions whose holder is dead (its row
///   expired or gone, or its session gone for its grace), with whether it
///   held nothing else (`alone`).
/// * `recovered`: those go back to their queue, charged if alone and
///   isolated if not; charged past `$2` they fail.
/// * `freed`: cancelled roots of dead holders stop counting in their queue.
/// * `orphans`: running roots held by this owner that it does not hold in
///   memory go back to their queue (no recovery counted), their running
///   children released with them.
/// * `queues`: the queues with waiting runs, one index probe per queue.
/// * `isolated`: whether an isolated run of the functions is due (in a
///   queue that is not paused: executors make room for it).
pub(crate) const RECOVERY_PASS: Sql = Sql::new(
    "
WITH RECURSIVE lost AS (
    SELECT o.id, o.backend_pid FROM {schema}.owner AS o
    WHERE o.session_lost_at IS NULL AND o.expires_at > now() AND NOT {connected}
      AND EXISTS (SELECT 1 FROM {schema}.task AS t
                  WHERE t.owner_id = o.id AND t.parent_id IS NULL
                    AND ((t.status = 'running' AND t.workflow = ANY($1))
                         OR (t.status = 'cancelled' AND t.queue IS NOT NULL)))
), marked AS (
    UPDATE {schema}.owner AS o SET session_lost_at = now()
    FROM lost
    WHERE o.id = lost.id AND o.backend_pid = lost.backend_pid AND o.session_lost_at IS NULL
), dead AS (
    SELECT t.id,
           NOT EXISTS (SELECT 1 FROM {schema}.task AS x
                       WHERE x.owner_id = t.owner_id AND x.status = 'running' AND x.workflow IS NOT NULL
                         AND x.parent_id IS NULL AND x.id <> t.id) AS alone
    FROM {schema}.task AS t LEFT JOIN {schema}.owner AS o ON o.id = t.owner_id
    WHERE t.status = 'running' AND t.parent_id IS NULL AND t.workflow = ANY($1)
      AND (o.id IS NULL OR o.expires_at <= now()
           OR (o.session_lost_at <= now() - o.session_grace AND NOT {connected}))
    ORDER BY t.id
    LIMIT 1000
    FOR UPDATE OF t SKIP LOCKED
), recovered AS (
    UPDATE {schema}.task AS t
    SET status = CASE WHEN d.alone AND t.recoveries >= $2 THEN 'failed' ELSE 'queued' END,
        owner_id = NULL, run_at = now(), updated_at = now(), waiting = NULL, waiting_on = NULL,
        recoveries = t.recoveries + CASE WHEN d.alone THEN 1 ELSE 0 END,
        isolated = t.isolated OR NOT d.alone,
        completed_at = CASE WHEN d.alone AND t.recoveries >= $2 THEN now() END,
        error = CASE WHEN d.alone AND t.recoveries >= $2 THEN jsonb_build_object(
            'type', 'TooManyRecoveries', 'module', 'durable.errors',
            'message', format('workflow %s was running alone in an executor that died, %s times: it is failed '
                              'so that it stops taking executors down with it (max_recoveries=%s). Fix the '
                              'cause, then resume it', t.name, t.recoveries + 1, $2),
            'traceback', '') ELSE t.error END
    FROM dead AS d WHERE t.id = d.id
    RETURNING t.status, t.queue, t.isolated
), freed AS (
    UPDATE {schema}.task AS t SET owner_id = NULL, updated_at = now()
    WHERE t.status = 'cancelled' AND t.owner_id IS NOT NULL AND t.queue IS NOT NULL AND t.parent_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM {schema}.owner AS o
                      WHERE o.id = t.owner_id AND o.expires_at > now()
                        AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace
                             OR {connected}))
    RETURNING t.queue
), orphans AS (
    UPDATE {schema}.task AS t
    SET status = 'queued', owner_id = NULL, run_at = now(), updated_at = now(), waiting = NULL, waiting_on = NULL
    WHERE t.owner_id = $4::text::uuid AND t.status = 'running' AND t.workflow IS NOT NULL AND t.parent_id IS NULL
      AND NOT t.name = ANY($5::text[])
    RETURNING t.id, t.queue
), orphan_children AS (
    UPDATE {schema}.task AS t SET owner_id = NULL, updated_at = now()
    FROM orphans AS o
    WHERE t.root_id = o.id AND t.id <> o.id AND t.kind = 'workflow' AND t.status = 'running'
      AND t.owner_id = $4::text::uuid
), forgotten AS (
    DELETE FROM {schema}.task_queue_key WHERE last_started < now() - interval '1 day'
), queues(name) AS (
    SELECT min(queue) FROM {schema}.task WHERE status IN ('queued', 'scheduled') AND parent_id IS NULL
    UNION ALL
    SELECT (SELECT min(t.queue) FROM {schema}.task AS t
            WHERE t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL AND t.queue > queues.name)
    FROM queues WHERE queues.name IS NOT NULL
), changed AS (
    SELECT status AS kind, queue FROM recovered
    UNION ALL SELECT 'freed', queue FROM freed
    UNION ALL SELECT 'orphan', queue FROM orphans
)
SELECT CASE WHEN kind = 'queued' THEN 'requeued' ELSE kind END AS kind,
       left(pg_notify('durable', $3::text || ' queued ' || coalesce(queue, ''))::text, 0) AS value
FROM changed
UNION ALL
SELECT 'queue', name FROM queues WHERE name IS NOT NULL
UNION ALL
SELECT 'isolated', NULL WHERE EXISTS (SELECT 1 FROM recovered WHERE isolated AND status = 'queued') OR EXISTS (
    SELECT 1 FROM {schema}.task AS t
    WHERE t.isolated AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL AND t.run_at <= now()
      AND t.workflow = ANY($1) AND (t.version IS NULL OR t.version = $6)
      AND NOT EXISTS (SELECT 1 FROM {schema}.task_queue AS q WHERE q.name = t.queue AND q.paused))",
)
.with(&[("connected", CONNECTED)]);
