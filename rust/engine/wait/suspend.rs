//! Waiting workflows leave their process: suspension and wake-up.
//!
//! A root run by an executor that has to wait long (a durable sleep, a run
//! it waits for, a message) is *suspended*: in one fenced statement it goes
//! back to waiting for an executor (`scheduled` with `run_at` = its wake-up
//! time, or `run_at` NULL when only an event ends the wait), with no owner
//! and a record of why it waits (`task.waiting`). An executor claims it
//! again when it is due, exactly as a queued run; it replays its steps and
//! reaches the wait again, which is over by then.
//!
//! Wake-ups, and why none is lost:
//!
//! * Waiting for another root (`waiting_on`): when that root finishes, a
//!   trigger (`wake_waiters`, migration 9) makes its suspended waiters due
//!   now. The suspension first share-locks the awaited root and reads its
//!   status, in a statement of its own before it locks the waiter: a root
//!   finishing meanwhile either commits first (the suspension sees it
//!   finished and is refused) or waits for the suspension to commit (its
//!   trigger then finds the waiter suspended). Locking the awaited root
//!   before the waiter is the trigger's order too, so the two cannot
//!   deadlock.
//! * Anything else (`Engine::wake`, for messages): a wake of a root that is
//!   still running sets `wake_pending`, and the next suspension is refused
//!   (and clears it); a wake of a suspended root makes it due now. Both
//!   update the root's row, so they are serialized on its lock. A waiter
//!   looks for what it waits for *after* its previous suspension attempt
//!   and before the next, so a wake committed after its look is either
//!   pending at its suspension or finds it suspended.

use crate::engine::error::EngineError;
use crate::engine::sql::Sql;
use crate::engine::values::jsonb::JsonText;
use crate::engine::wait::messages::FENCE;
use crate::engine::workflow::{WorkflowId, col};
use crate::engine::{Engine, validate_name};

/// What a suspension records and when the run is due again.
#[derive(Debug, Clone, Copy)]
pub struct Suspension<'a> {
    /// When the run is due again, microseconds since the epoch on the
    /// database's clock; `None`: only a wake makes it due.
    pub until_us: Option<i64>,
    /// Why it waits: `{"kind", "step", "detail"}` (shown by `durable show`).
    pub waiting: &'a JsonText,
    /// The name of the root whose end it waits for, if any.
    pub waiting_on: Option<&'a str>,
    /// For a wait for a message: the receiving workflow's id and the
    /// topic. A message of that topic not yet received refuses the
    /// suspension (the receiver looks again).
    pub message: Option<(i64, &'a str)>,
}

/// How a suspension went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspended {
    /// The tree left this process: the caller unwinds its run.
    Yes,
    /// Refused: what it waits for happened meanwhile (a wake, the awaited
    /// run finished). The run keeps its hold; the caller looks again.
    Woken,
}

impl Engine {
    /// The database's clock, microseconds since the epoch (wake-up times
    /// are on this clock, as `run_at` is).
    pub async fn db_now(&self) -> Result<i64, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let row = retrying!(self, "reading the database's clock", |client| async {
            let statement = client.prepare_cached(&sql.db_now).await?;
            client.query_one(&statement, &[]).await
        })?;
        col(&row, "now_us")
    }

    /// Suspends the tree of the executor-run root `root` (held by this
    /// engine at its epoch): see the module's documentation. `LeaseLost`
    /// when the root is not held so any more (or has no registered
    /// function: only executor runs are suspended). The caller ends the
    /// hold on `Suspended::Yes`.
    pub async fn suspend(&self, root: WorkflowId, wait: Suspension<'_>) -> Result<Suspended, EngineError> {
        self.check_open()?;
        let owner = self.owner_id();
        let schema = self.schema();
        let sql = &self.inner.sql;
        let row = retrying!(self, "suspending a waiting workflow", |client| async {
            let tx = client.transaction().await?;
            // An awaited run that does not exist (any more) counts as finished:
            // the waiter looks again and reports it.
            let (mut target, mut target_finished) = (None::<i64>, false);
            if let Some(name) = wait.waiting_on {
                let lock = tx.prepare_cached(&sql.lock_target).await?;
                let row = tx.query_opt(&lock, &[&name]).await?;
                target = row.as_ref().map(|row| row.try_get("id")).transpose()?;
                target_finished = row.map_or(Ok(true), |row| row.try_get("finished"))?;
            }
            let suspend = tx.prepare_cached(&sql.suspend).await?;
            let (receiver, topic) = wait.message.unzip();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
                &root.id,
                &owner,
                &root.epoch,
                &wait.until_us,
                wait.waiting,
                &target,
                &target_finished,
                &schema,
                &receiver,
                &topic,
            ];
            let row = tx.query_opt(&suspend, &params).await?;
            tx.commit().await?;
            Ok(row)
        })?;
        let Some(row) = row else {
            return Err(EngineError::LeaseLost { workflow_id: root.id });
        };
        if col::<bool>(&row, "woken")? {
            return Ok(Suspended::Woken);
        }
        // This engine's executor has a free slot now.
        self.inner.events.more_work();
        Ok(Suspended::Yes)
    }

    /// Wakes the root `root_id`: suspended, it is due now (executors are
    /// told); still running, its next suspension is refused. False when it
    /// is neither (finished, or waiting in a queue without being suspended).
    pub async fn wake(&self, root_id: i64) -> Result<bool, EngineError> {
        self.check_open()?;
        let schema = self.schema();
        let sql = &self.inner.sql;
        let rows = retrying!(self, "waking a waiting workflow", |client| async {
            let statement = client.prepare_cached(&sql.wake).await?;
            client.query(&statement, &[&root_id, &schema]).await
        })?;
        Ok(!rows.is_empty())
    }

    /// Records on the running root (held under `root`'s epoch) why it waits
    /// in its process (`None`: it no longer does), for `durable.get` and
    /// `durable show`; a suspension or a claim replaces it. Best effort:
    /// nothing is written once the lease is gone.
    pub async fn note_wait(&self, root: WorkflowId, waiting: Option<&JsonText>) -> Result<(), EngineError> {
        self.check_open()?;
        let owner = self.owner_id();
        let sql = &self.inner.sql;
        retrying!(self, "recording what a workflow waits for", |client| async {
            let statement = client.prepare_cached(&sql.note_wait).await?;
            client
                .execute(&statement, &[&root.id, &owner, &root.epoch, &waiting])
                .await
        })?;
        Ok(())
    }

    /// Records that the root `root` (held here at its epoch) waits for the
    /// end of the root run `target`, or (`None`) that it no longer waits.
    /// A wait that would close a cycle (the awaited run waits, directly or
    /// through others, for this root; or it is this root) is refused with
    /// `WaitCycle`, and nothing is recorded. Waits are recorded one at a
    /// time (a transaction-scoped advisory lock per schema): two runs
    /// starting to wait for each other at once cannot both miss the cycle.
    /// `LeaseLost`/`Cancelled` when the root is not held here any more.
    pub async fn wait_on(&self, root: WorkflowId, target: Option<&str>) -> Result<(), EngineError> {
        self.check_open()?;
        let owner = self.owner_id();
        let schema = self.schema();
        let sql = &self.inner.sql;
        let Some(target) = target else {
            retrying!(self, "recording the end of a wait", |client| async {
                let statement = client.prepare_cached(&sql.clear_wait).await?;
                client.execute(&statement, &[&root.id, &owner, &root.epoch]).await
            })?;
            return Ok(());
        };
        validate_name("workflow", target)?;
        let row = retrying!(self, &format!("recording a wait for {target:?}"), |client| async {
            let tx = client.transaction().await?;
            let lock = tx.prepare_cached(&sql.lock_waits).await?;
            tx.execute(&lock, &[&WAIT_LOCK_CLASS, &schema]).await?;
            let statement = tx.prepare_cached(&sql.wait_on).await?;
            let row = tx
                .query_one(&statement, &[&root.id, &owner, &root.epoch, &target])
                .await?;
            tx.commit().await?;
            Ok(row)
        })?;
        if let Some(cycle) = col::<Option<Vec<String>>>(&row, "cycle")? {
            return Err(EngineError::WaitCycle {
                waiter: cycle.last().cloned().unwrap_or_default(),
                cycle,
            });
        }
        if col::<i64>(&row, "recorded")? == 0 {
            return Err(self.refused(root, "recording a wait").await);
        }
        Ok(())
    }

    /// Saves the sleep `name` of the running `workflow` as its step
    /// (attempt `attempt`): its result the wake-up time `wake`, and its
    /// `waiting` record `{"kind": "sleep"}`, which tells a sleep from a step
    /// that returns a time (`durable ui` draws the sleep). Fenced on the
    /// lease, as every step's save; nothing if the step completed already.
    pub async fn save_sleep(
        &self,
        workflow: WorkflowId,
        name: &str,
        attempt: i32,
        wake: &JsonText,
    ) -> Result<(), EngineError> {
        validate_name("step", name)?;
        self.check_open()?;
        let owner = self.owner_id();
        let sql = &self.inner.sql;
        let row = retrying!(self, &format!("saving sleep {name:?}"), |client| async {
            let statement = client.prepare_cached(&sql.save_sleep).await?;
            client
                .query_one(
                    &statement,
                    &[&workflow.id, &workflow.epoch, &owner, &name, &attempt, wake],
                )
                .await
        })?;
        if col::<i64>(&row, "fenced")? == 0 {
            return Err(self.refused(workflow, &format!("saving sleep {name:?}")).await);
        }
        Ok(())
    }

    /// `wake`, by the root's name.
    pub async fn wake_named(&self, name: &str) -> Result<bool, EngineError> {
        validate_name("workflow", name)?;
        let Some(state) = self.run_state(name).await? else {
            return Ok(false);
        };
        self.wake(state.id).await
    }
}

/// First key of the advisory lock that records waits one at a time (the
/// second is the schema's hash). Chosen at random; spells nothing.
const WAIT_LOCK_CLASS: i32 = 0x7761_6974;

/// Takes the lock that records waits one at a time (`$1` its class, `$2`
/// the schema), until the transaction ends.
pub(crate) const LOCK_WAITS: Sql = Sql::new("SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))");

/// Records that the running root `$1` (held by owner `$2` at epoch `$3`)
/// waits for the root named `$4`, unless that closes a cycle. `chain`
/// follows the waits from the awaited run (what each unfinished root waits
/// for: `waiting_on`, set while it waits in its process or suspended) until
/// it reaches the waiter or ends. `cycle`: the names along the way, the
/// waiter last, when it was reached (then nothing is recorded); `recorded`:
/// 1 when the wait was recorded, 0 when the waiter is not held so.
pub(crate) const WAIT_ON: Sql = Sql::new(
    "
WITH RECURSIVE chain(id, name, waiting_on, depth) AS (
    SELECT t.id, t.name, t.waiting_on, 1 FROM {schema}.task AS t
    WHERE t.parent_id IS NULL AND t.name = $4 AND t.status NOT IN ('completed', 'failed', 'cancelled')
    UNION ALL
    SELECT n.id, n.name, n.waiting_on, c.depth + 1 FROM chain AS c
    JOIN {schema}.task AS n ON n.id = c.waiting_on
    WHERE c.id <> $1 AND c.depth < 10000 AND n.parent_id IS NULL
      AND n.status NOT IN ('completed', 'failed', 'cancelled')
), closing AS (
    SELECT min(depth) AS depth FROM chain WHERE id = $1
), recorded AS (
    UPDATE {schema}.task AS t SET waiting_on = (SELECT id FROM chain WHERE depth = 1)
    WHERE t.id = $1 AND t.owner_id = $2::text::uuid AND t.lease_epoch = $3 AND t.status = 'running'
      AND (SELECT depth FROM closing) IS NULL
    RETURNING t.id
)
SELECT (SELECT array_agg(c.name ORDER BY c.depth) FROM chain AS c, closing
        WHERE c.depth <= closing.depth) AS cycle,
       (SELECT count(*) FROM recorded) AS recorded",
);

/// The running root `$1` (held by owner `$2` at epoch `$3`) no longer waits.
pub(crate) const CLEAR_WAIT: Sql = Sql::new(
    "
UPDATE {schema}.task SET waiting_on = NULL
WHERE id = $1 AND owner_id = $2::text::uuid AND lease_epoch = $3 AND status = 'running' AND waiting_on IS NOT NULL",
);

/// Why the running root `$1`, held by owner `$2` under epoch `$3`, waits in
/// its process (`$4`; NULL: it no longer does).
pub(crate) const NOTE: Sql = Sql::new(
    "
UPDATE {schema}.task SET waiting = $4
WHERE id = $1 AND owner_id = $2::text::uuid AND lease_epoch = $3 AND status = 'running'",
);

/// Saves step `$4` (attempt `$5`) of the fenced workflow (`messages::FENCE`)
/// as completed with the wake-up time `$6`, marked a sleep (its `waiting`
/// record); nothing if it completed already. `fenced` 0: the lease was
/// refused.
pub(crate) const SAVE_SLEEP: Sql = Sql::new(
    "{fence}, step AS (
             INSERT INTO {schema}.task AS t
                 (parent_id, root_id, kind, name, status, attempt, output, waiting, started_at, completed_at)
             SELECT fenced.id, fenced.root_id, 'step', $4, 'completed', $5, $6::jsonb,
                    jsonb_build_object('kind', 'sleep'), now(), now()
             FROM fenced
             ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET
                 status = 'completed', attempt = EXCLUDED.attempt, output = EXCLUDED.output,
                 waiting = EXCLUDED.waiting, error = NULL, completed_at = now(), updated_at = now()
             WHERE t.kind = 'step' AND t.status <> 'completed'
             RETURNING t.id
         )
         SELECT (SELECT count(*) FROM fenced) AS fenced",
)
.with(&[("fence", FENCE)]);

/// The database's clock (not the transaction's start), in microseconds.
pub(crate) const NOW: Sql = Sql::new("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS now_us");

/// Share-locks the root named `$1` that a suspension waits for: its id,
/// and whether it finished. Under READ COMMITTED a row locked by a writer in flight is
/// read again once that writer commits: its status is the latest.
pub(crate) const LOCK_TARGET: Sql = Sql::new(
    "
SELECT id, status IN ('completed', 'failed', 'cancelled') AS finished
FROM {schema}.task WHERE parent_id IS NULL AND name = $1
FOR SHARE",
);

/// Suspends the root `$1` held by owner `$2` at epoch `$3` and releases
/// every running workflow of its tree this owner holds (as `RELEASE` does),
/// unless a wake is pending, `$7` (the awaited run finished), or a message
/// on topic `$10` for the workflow `$9` waits unreceived: then only the
/// pending wake is cleared. `$4` due time (microseconds since the epoch;
/// NULL: none), `$5` why it waits, `$6` the awaited root, `$8` the schema:
/// the executors are told, as the run's queue slot is free (and the run due
/// at once, if it is). No row: not held.
pub(crate) const SUSPEND: Sql = Sql::new(
    "
WITH root AS (
    SELECT id, queue,
           (wake_pending OR $7::bool
            OR EXISTS (SELECT 1 FROM {schema}.task_message AS m
                       WHERE m.task_id = $9::int8 AND m.topic = $10::text AND m.received_at IS NULL)) AS woken,
           'epoch'::timestamptz + $4::int8 * interval '1 microsecond' AS due
    FROM {schema}.task
    WHERE id = $1 AND parent_id IS NULL AND owner_id = $2::text::uuid AND lease_epoch = $3
      AND status = 'running' AND workflow IS NOT NULL
    FOR UPDATE
), cleared AS (
    UPDATE {schema}.task AS t SET wake_pending = false
    FROM root WHERE t.id = root.id AND root.woken AND t.wake_pending
), released AS (
    UPDATE {schema}.task AS t SET owner_id = NULL, updated_at = now(),
        status = CASE WHEN t.id <> root.id THEN t.status
                      WHEN root.due <= now() THEN 'queued' ELSE 'scheduled' END,
        run_at = CASE WHEN t.id = root.id THEN root.due ELSE t.run_at END,
        waiting = CASE WHEN t.id = root.id THEN $5::jsonb ELSE t.waiting END,
        waiting_on = CASE WHEN t.id = root.id THEN $6::int8 ELSE t.waiting_on END
    FROM root
    WHERE NOT root.woken AND t.root_id = root.id AND t.kind = 'workflow' AND t.status = 'running'
      AND t.owner_id = $2::text::uuid
    RETURNING t.id
)
SELECT root.woken,
       CASE WHEN NOT root.woken AND (root.due <= now() OR root.queue IS NOT NULL)
            THEN left(pg_notify('durable', $8::text || ' queued ' || coalesce(root.queue, ''))::text, 0) END
           AS notify
FROM root",
);

/// Wakes the root of the CTE `root` (its `id`), whatever it is doing, in
/// ONE `UPDATE` of its row: suspended, it becomes due now (`made_due`: the
/// caller notifies the executors); running, its next suspension is refused
/// (`wake_pending`); queued and not claimed yet, nothing changes but the
/// row is locked. One statement because each side of the handshake must
/// decide from the row as it is after the other committed: a waker that
/// judged the status from its snapshot (running) and then set
/// `wake_pending` only `WHERE status = 'running'` found nothing to do when a
/// suspension committed meanwhile (the re-check after the lock saw
/// `scheduled`), and the wake-up was lost for good. Here the row qualifies
/// in every live state, so Postgres re-evaluates the whole `SET` on the row
/// the suspension (or a claim) left.
pub(crate) const WAKE_ROOT: &str = "woken AS (
    UPDATE {schema}.task AS t
    SET wake_pending = t.wake_pending OR t.status = 'running',
        status = CASE WHEN t.status IN ('queued', 'scheduled') AND t.waiting IS NOT NULL
                      THEN 'queued' ELSE t.status END,
        run_at = CASE WHEN t.status IN ('queued', 'scheduled') AND t.waiting IS NOT NULL
                      THEN now() ELSE t.run_at END,
        updated_at = now()
    FROM root
    WHERE t.id = root.id AND t.parent_id IS NULL AND t.status IN ('queued', 'scheduled', 'running')
    RETURNING t.queue, (t.status = 'queued' AND t.waiting IS NOT NULL) AS made_due, t.wake_pending AS pending
)";

/// Wakes the root `$1` (`$2` the schema; see `WAKE_ROOT`). One row when it
/// was made due or its next suspension will be refused.
pub(crate) const WAKE: Sql = Sql::new(
    "WITH root AS (SELECT $1::int8 AS id), {wake}
         SELECT CASE WHEN made_due
                     THEN left(pg_notify('durable', $2::text || ' queued ' || coalesce(queue, ''))::text, 0) END
                    AS notify
         FROM woken WHERE made_due OR pending",
)
.with(&[("wake", WAKE_ROOT)]);
