//! Queued execution: queues and their limits, enqueueing, claiming, and
//! recovering the runs of dead holders.
//!
//! A queued run is a root row in status `queued` (or `scheduled`, until its
//! `run_at`) that names its function (`workflow`). Executors claim runs of
//! the functions they know, within the queue's limits, and run them as their
//! holder, exactly as `Ctx.start` would. Claims of one queue are serialized
//! on the queue's row, in a transaction of two short statements: the first
//! locks the row, the second (whose snapshot is taken after the lock, so it
//! sees every claim committed before) counts what runs, checks the limits,
//! and claims. `FOR UPDATE SKIP LOCKED` alone would let two executors
//! overspend a shared budget under READ COMMITTED. The transaction is sent
//! in one round trip (BEGIN, both statements and COMMIT pipelined).

pub(super) mod enqueuer;
pub(super) mod executors;
pub(super) mod recovery;
pub(super) mod schedule;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio_postgres::Row;

use crate::engine::error::EngineError;
use crate::engine::lease::holds::Reservation;
use crate::engine::limits::MAX_RATE_PERIOD;
use crate::engine::sql::Sql;
use crate::engine::values::jsonb::JsonText;
use crate::engine::workflow::{Started, Status, WorkflowId, col, read_history};
use crate::engine::{Engine, validate_name};

/// The limits `create_queue` sets. `None` keeps what the queue has (a new
/// queue: no limit).
#[derive(Debug, Clone, Default)]
pub struct QueueLimits {
    /// Most runs of the queue running at once, across every executor.
    pub concurrency: Option<i32>,
    /// Most runs of one `key` running at once.
    pub concurrency_per_key: Option<i32>,
    /// `(max_starts, period)` windows: at most `max_starts` runs start in any
    /// window of length `period`. Given, they replace the queue's windows.
    pub rates: Option<Vec<(i32, Duration)>>,
}

/// Runs of one function to enqueue at once, with the same options.
#[derive(Debug, Clone)]
pub struct EnqueueMany<'a> {
    /// Each run's name and input; names must differ.
    pub runs: &'a [(&'a str, &'a JsonText)],
    pub workflow: &'a str,
    pub queue: &'a str,
    pub delay: Duration,
    pub run_at: Option<&'a str>,
    pub priority: i32,
    pub key: Option<&'a str>,
    /// The id of the workflow that enqueues them, if a workflow does
    /// (recorded in `task.enqueued_by`, for a cancel to reach them).
    pub enqueued_by: Option<i64>,
}

/// One run to enqueue, sent with the other single enqueues of the moment
/// (see `enqueuer`); the options as `EnqueueMany`'s.
#[derive(Debug, Clone)]
pub struct Enqueue<'a> {
    pub name: &'a str,
    pub input: &'a JsonText,
    pub workflow: &'a str,
    pub queue: &'a str,
    pub delay: Duration,
    pub run_at: Option<&'a str>,
    pub priority: i32,
    pub key: Option<&'a str>,
    pub enqueued_by: Option<i64>,
}

/// What `enqueue` found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    pub status: Status,
    /// False when the name existed already (enqueueing is idempotent).
    pub created: bool,
    /// True when this call created the queue (it did not exist).
    pub queue_created: bool,
}

/// A run claimed by this engine: started, held, ready to run its function.
#[derive(Debug)]
pub struct Claimed {
    pub name: String,
    /// The registered identity of its function.
    pub workflow: String,
    pub input: JsonText,
    pub started: Started,
}

/// Why a claimed row could not be held.
enum HeldError {
    /// The row cannot be read or started: the run fails alone.
    Unreadable(WorkflowId, String),
    Engine(EngineError),
}

impl From<EngineError> for HeldError {
    fn from(err: EngineError) -> Self {
        HeldError::Engine(err)
    }
}

/// How a claim is bounded.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits<'a> {
    /// Most runs to claim (the executor's free slots).
    pub max: usize,
    /// The functions the executor knows.
    pub workflows: &'a [String],
    /// The executor's version: it claims runs of no version (never started)
    /// or of its own, and stamps its version on them.
    pub version: Option<&'a str>,
    /// Claim only an isolated run (see `task.isolated`), to run it alone:
    /// at most one, and only while this engine holds nothing else; from
    /// then on until it ends, other claims of this engine take nothing.
    /// False: claim only runs that are not isolated.
    pub isolated: bool,
}

impl Engine {
    /// Creates the queue `name` with `limits`, or updates the limits given
    /// and keeps the others.
    pub async fn create_queue(&self, name: &str, limits: &QueueLimits) -> Result<(), EngineError> {
        validate_name("queue", name)?;
        validate_limits(name, limits)?;
        self.check_open()?;
        let replace_rates = limits.rates.is_some();
        let rates = limits.rates.clone().unwrap_or_default();
        let max_starts: Vec<i32> = rates.iter().map(|(n, _)| *n).collect();
        let periods: Vec<f64> = rates.iter().map(|(_, period)| period.as_secs_f64()).collect();
        let sql = &self.inner.sql;
        let schema = self.schema();
        retrying!(self, &format!("creating queue {name:?}"), |client| async {
            let statement = client.prepare_cached(&sql.create_queue).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &name,
                &limits.concurrency,
                &limits.concurrency_per_key,
                &replace_rates,
                &max_starts,
                &periods,
                &schema,
            ];
            client.execute(&statement, &params).await
        })?;
        self.inner.events.more_work();
        Ok(())
    }

    /// Pauses the queue `name` (executors claim nothing from it) or resumes
    /// it. A queue that does not exist yet is created so.
    pub async fn set_queue_paused(&self, name: &str, paused: bool) -> Result<(), EngineError> {
        validate_name("queue", name)?;
        self.check_open()?;
        let schema = self.schema();
        let sql = &self.inner.sql;
        retrying!(self, &format!("pausing or resuming queue {name:?}"), |client| async {
            let statement = client.prepare_cached(&sql.pause_queue).await?;
            client.execute(&statement, &[&name, &paused, &schema]).await
        })?;
        Ok(())
    }

    /// Queues the run `request.name` of `request.workflow`, or finds the run
    /// of that name: enqueueing is idempotent. Sent with the other enqueues
    /// of the moment, in one statement and one commit (see `enqueuer`), but
    /// answered as if alone: a run that exists with another input fails
    /// with `InputMismatch`, one owned by another function with
    /// `OtherWorkflow`, and neither fails the others. Executors are told at
    /// the commit.
    pub async fn enqueue(&self, request: &Enqueue<'_>) -> Result<Enqueued, EngineError> {
        validate_name("workflow", request.name)?;
        validate_name("queue", request.queue)?;
        if let Some(key) = request.key {
            validate_name("key", key)?;
        }
        self.check_open()?;
        let queued = enqueuer::Queued {
            input: request.input.clone(),
            workflow: request.workflow.to_owned(),
            queue: request.queue.to_owned(),
            delay: request.delay.as_secs_f64(),
            run_at: request.run_at.map(str::to_owned),
            priority: request.priority,
            key: request.key.map(str::to_owned),
            enqueued_by: request.enqueued_by,
        };
        let row = self.inner.enqueuer.send(request.name, queued).await?;
        read_enqueued(&row, request.name, request.workflow)
    }

    /// Queues runs of `request.workflow` with the same options, in one
    /// statement (one commit), or finds the runs of those names: enqueueing
    /// is idempotent. What it found or made for each, in the order given. A
    /// run that exists with another input fails the call with
    /// `InputMismatch`, one owned by another function with `OtherWorkflow`
    /// (the others are queued). Executors are told at the commit.
    pub async fn enqueue_many(&self, request: &EnqueueMany<'_>) -> Result<Vec<Enqueued>, EngineError> {
        let mut names = HashSet::with_capacity(request.runs.len());
        for (name, _) in request.runs {
            validate_name("workflow", name)?;
            if !names.insert(*name) {
                return Err(EngineError::InvalidOption(format!(
                    "the run name {name:?} is given twice: each run of one enqueue needs a name of its own"
                )));
            }
        }
        validate_name("queue", request.queue)?;
        if let Some(key) = request.key {
            validate_name("key", key)?;
        }
        self.check_open()?;
        if request.runs.is_empty() {
            return Ok(Vec::new());
        }
        let schema = self.schema();
        let delay = request.delay.as_secs_f64();
        let sql = &self.inner.sql;
        let run_names: Vec<&str> = request.runs.iter().map(|(name, _)| *name).collect();
        let inputs: Vec<&JsonText> = request.runs.iter().map(|(_, input)| *input).collect();
        let what = match request.runs {
            [(name, _)] => format!("enqueueing workflow {name:?}"),
            runs => format!("enqueueing {} runs of {:?}", runs.len(), request.workflow),
        };
        let rows = retrying!(self, &what, |client| async {
            let statement = client.prepare_cached(&sql.enqueue).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
                &run_names,
                &inputs,
                &request.workflow,
                &request.queue,
                &delay,
                &request.priority,
                &request.key,
                &schema,
                &request.run_at,
                &request.enqueued_by,
            ];
            client.query(&statement, &params).await
        })?;
        let mut found: HashMap<String, &Row> = HashMap::with_capacity(rows.len());
        for row in &rows {
            found.insert(col(row, "name")?, row);
        }
        let mut enqueued = Vec::with_capacity(request.runs.len());
        for (name, _) in request.runs {
            let row = found
                .get(*name)
                .ok_or_else(|| EngineError::Unexpected(format!("enqueueing workflow {name:?} returned no row")))?;
            enqueued.push(read_enqueued(row, name, request.workflow)?);
        }
        Ok(enqueued)
    }

    /// Claims up to `limits.max` runs from `queue` (`None`: runs of no queue,
    /// recovered direct runs) that this executor knows, within the queue's
    /// concurrency, per-key concurrency and rate limits, in claim order
    /// (see `CLAIM`). Each claimed run is held by this engine, as `start`
    /// holds. A run whose row cannot be read or started fails alone, with
    /// an error that says why; the others are claimed.
    pub async fn claim(&self, queue: Option<&str>, limits: ClaimLimits<'_>) -> Result<Vec<Claimed>, EngineError> {
        self.check_open()?;
        if limits.max == 0 || limits.workflows.is_empty() {
            return Ok(Vec::new());
        }
        // Claims share the lock; the recovery pass's reconciliation takes it
        // alone, so it never sees a claim committed but not yet held here.
        let _claiming = self.inner.claiming.read().await;
        let holds = &self.inner.holds;
        if holds.solo() || (limits.isolated && !holds.is_empty()) {
            return Ok(Vec::new());
        }
        let owner = self.owner_id();
        let max = if limits.isolated {
            1
        } else {
            i64::try_from(limits.max).unwrap_or(i64::MAX)
        };
        let sql = &self.inner.sql;
        let rows = retrying!(self, &format!("claiming runs of queue {queue:?}"), |client| async {
            let lock = client.prepare_cached(&sql.lock_queue).await?;
            let text = if queue.is_some() {
                &sql.claim
            } else {
                &sql.claim_unqueued
            };
            let claim = client.prepare_cached(text).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                &queue,
                &max,
                &limits.workflows,
                &owner,
                &limits.version,
                &limits.isolated,
            ];
            // One round trip: the four requests are pipelined. The server
            // still runs them in order, so the claim's snapshot is taken
            // after the lock is granted; a paused queue's claim takes nothing.
            let locked = async {
                match queue {
                    Some(queue) => client.query_opt(&lock, &[&queue]).await.map(drop),
                    None => Ok(()),
                }
            };
            let ((), (), rows, ()) = tokio::try_join!(
                client.batch_execute("BEGIN"),
                locked,
                client.query(&claim, &params),
                client.batch_execute("COMMIT"),
            )?;
            Ok(rows)
        })?;
        // Held first, all of them: if anything fails below, dropping them
        // gives every claimed run back at once.
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.held(row).await {
                Ok(Some(run)) => claimed.push(run),
                Ok(None) => {}
                Err(HeldError::Unreadable(workflow, reason)) => self.fail_unstartable(workflow, &reason).await,
                Err(HeldError::Engine(err)) => return Err(err),
            }
        }
        if limits.isolated {
            if let Some(run) = claimed.first() {
                if let Some(hold) = &run.started.hold {
                    holds.set_solo(hold);
                }
            }
        }
        for run in &mut claimed {
            if !run.started.created {
                let id = run.started.workflow.id;
                let rows = retrying!(self, "reading a workflow's history", |client| async {
                    let statement = client.prepare_cached(&self.inner.sql.history).await?;
                    client.query(&statement, &[&id]).await
                })?;
                run.started.history = read_history(&rows)?;
            }
        }
        Ok(claimed)
    }

    /// A claimed row as a started workflow held by this engine (its history
    /// still to read). `None` when a handle of this engine holds it already
    /// (its hold outlived a recovery): the claim is given back.
    /// `Unreadable` when a column cannot be read (a row written by hand).
    async fn held(&self, row: &Row) -> Result<Option<Claimed>, HeldError> {
        let name: String = col(row, "name")?;
        let id: i64 = col(row, "id")?;
        let workflow = WorkflowId {
            id,
            root_id: id,
            epoch: col(row, "lease_epoch")?,
        };
        let unreadable = |err: EngineError| HeldError::Unreadable(workflow, err.to_string());
        let function: String = col(row, "workflow").map_err(unreadable)?;
        let input: Option<JsonText> = col(row, "input").map_err(unreadable)?;
        let Some(input) = input else {
            return Err(HeldError::Unreadable(
                workflow,
                "its input is SQL NULL, which no run can be started with (a row written by hand?): \
                 set it to JSON (for example 'null'::jsonb) and resume it"
                    .to_owned(),
            ));
        };
        let attempt: i32 = col(row, "attempt").map_err(unreadable)?;
        let created: bool = col(row, "first").map_err(unreadable)?;
        let deadline = col::<Option<f64>>(row, "deadline_in")
            .map_err(unreadable)?
            .map(|seconds| std::time::Instant::now() + Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO));
        let Ok(reservation) = self.inner.holds.reserve_now(&name) else {
            self.release(workflow).await;
            return Ok(None);
        };
        let hold = Reservation::hold(reservation, self.clone(), workflow);
        Ok(Some(Claimed {
            name,
            workflow: function,
            input,
            started: Started {
                workflow,
                status: Status::Running,
                attempt,
                created,
                output: None,
                error: None,
                deadline,
                history: std::collections::HashMap::new(),
                hold: Some(hold),
            },
        }))
    }

    /// Fails the claimed run `workflow`, which cannot be started, with an
    /// error record that says why. Best effort: if even that fails, the
    /// run is left to the recovery pass (it is not held here).
    async fn fail_unstartable(&self, workflow: WorkflowId, reason: &str) {
        log::error!("run #{} cannot be started and is failed: {reason}", workflow.id);
        let owner = self.owner_id();
        let schema = self.schema();
        let sql = &self.inner.sql;
        let failed = retrying!(self, "failing a run that cannot be started", |client| async {
            let statement = client.prepare_cached(&sql.fail_unstartable).await?;
            client
                .execute(&statement, &[&workflow.id, &owner, &workflow.epoch, &reason, &schema])
                .await
        });
        if let Err(err) = failed {
            log::warn!("could not fail run #{}: {err}", workflow.id);
        }
    }

    /// A counter that changes whenever work may have become claimable here:
    /// a run queued or finished (by any process), a queue resumed.
    pub fn work_version(&self) -> u64 {
        self.inner.events.work_version()
    }

    /// Waits until the work counter differs from `seen` (see
    /// `work_version`), or `timeout` ran out. True if it changed.
    pub async fn work_changed(&self, seen: u64, timeout: Duration) -> bool {
        self.inner.events.work_changed(seen, timeout).await
    }

    /// Puts the failed or cancelled root `name` back to run, keeping what it
    /// completed: a root with a registered function is queued again (its
    /// recoveries forgotten), one started by hand may be started again; its
    /// cancelled children resume with it. False when there is no such run
    /// or it is not failed or cancelled.
    pub async fn resume(&self, name: &str) -> Result<bool, EngineError> {
        validate_name("workflow", name)?;
        self.check_open()?;
        let schema = self.schema();
        let sql = &self.inner.sql;
        let rows = retrying!(self, &format!("resuming workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&sql.resume).await?;
            client.query(&statement, &[&name, &schema]).await
        })?;
        if rows.is_empty() {
            return Ok(false);
        }
        self.inner.events.more_work();
        Ok(true)
    }

    /// How long until a waiting run of the functions `workflows` (of no
    /// version or of `version`) may become claimable by time alone: the
    /// earliest delayed run still ahead, or the end of a full rate window
    /// of a queue where one is due. Runs held back by a paused or full
    /// queue, a key at its limit, another version or isolation are not
    /// counted: what frees them (a resume, a run ending, an executor
    /// starting) notifies the executors. `None`: nothing comes due.
    ///
    /// `since`: how long ago the claims this follows began; a delayed run
    /// that came due since then counts as due now (it may have come due
    /// after their clock).
    pub async fn next_due(
        &self,
        workflows: &[String],
        version: Option<&str>,
        since: Duration,
    ) -> Result<Option<Duration>, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let since = since.as_secs_f64();
        let row = retrying!(self, "looking for delayed runs", |client| async {
            let statement = client.prepare_cached(&sql.next_due).await?;
            client.query_one(&statement, &[&workflows, &version, &since]).await
        })?;
        Ok(col::<Option<f64>>(&row, "due_in")?.map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default()))
    }
}

/// What an enqueue of the run `name` of `workflow` found or made, from its
/// row of `ENQUEUE` (or `ENQUEUE_ROWS`); `OtherWorkflow` or `InputMismatch`
/// when the run that exists is not the one asked for.
fn read_enqueued(row: &Row, name: &str, workflow: &str) -> Result<Enqueued, EngineError> {
    let owner: Option<String> = col(row, "workflow")?;
    if owner.as_deref() != Some(workflow) {
        return Err(EngineError::OtherWorkflow {
            name: name.to_owned(),
            workflow: owner,
        });
    }
    if !col::<bool>(row, "input_matches")? {
        return Err(EngineError::InputMismatch { name: name.to_owned() });
    }
    Ok(Enqueued {
        id: col(row, "id")?,
        status: Status::parse(col(row, "status")?)?,
        created: col(row, "created")?,
        queue_created: col::<i64>(row, "queue_created")? > 0,
    })
}

fn validate_limits(name: &str, limits: &QueueLimits) -> Result<(), EngineError> {
    let positive = |what: &str, value: Option<i32>| match value {
        Some(n) if n < 1 => Err(EngineError::InvalidOption(format!(
            "{what} of queue {name:?} must be at least 1, not {n}"
        ))),
        _ => Ok(()),
    };
    positive("concurrency", limits.concurrency)?;
    positive("concurrency_per_key", limits.concurrency_per_key)?;
    for &(max_starts, period) in limits.rates.iter().flatten() {
        positive("the rate limit", Some(max_starts))?;
        if period.is_zero() || period > MAX_RATE_PERIOD {
            return Err(EngineError::InvalidOption(format!(
                "the rate limit period of queue {name:?} must be positive and at most a year, not {} s",
                period.as_secs_f64()
            )));
        }
    }
    Ok(())
}

/// Creates a queue or updates the limits given. `$1` name, `$2` concurrency
/// and `$3` per-key concurrency (NULL: keep), `$4` whether to replace the
/// rate windows with `$5` (max starts) and `$6` (periods, seconds). Wakes
/// the executors (`$7` the schema): raised limits may free runs.
pub(crate) const CREATE_QUEUE: Sql = Sql::new(
    "
WITH queue AS (
    INSERT INTO {schema}.task_queue AS q (name, max_concurrency, concurrency_per_key)
    VALUES ($1, $2, $3)
    ON CONFLICT (name) DO UPDATE SET
        max_concurrency = coalesce($2, q.max_concurrency),
        concurrency_per_key = coalesce($3, q.concurrency_per_key)
    RETURNING name
), rates AS (
    SELECT r.max_starts, make_interval(secs => r.secs) AS period
    FROM unnest($5::int4[], $6::float8[]) AS r(max_starts, secs)
), dropped AS (
    DELETE FROM {schema}.task_queue_rate AS x
    WHERE $4 AND x.queue = $1 AND x.period NOT IN (SELECT period FROM rates)
), kept AS (
    INSERT INTO {schema}.task_queue_rate (queue, max_starts, period)
    SELECT $1, max_starts, period FROM rates WHERE $4
    ON CONFLICT (queue, period) DO UPDATE SET max_starts = EXCLUDED.max_starts
)
SELECT name, left(pg_notify('durable', $7::text || ' queued ' || name)::text, 0) AS notify FROM queue",
);

/// Pauses (`$2` true) or resumes the queue `$1`, creating it if need be; a
/// resumed queue wakes the executors (`$3` the schema).
pub(crate) const PAUSE_QUEUE: Sql = Sql::new(
    "
INSERT INTO {schema}.task_queue AS q (name, paused) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused
RETURNING name, CASE WHEN NOT paused THEN left(pg_notify('durable', $3::text || ' queued ' || name)::text, 0) END",
);

/// Queues runs: `$1` names, `$2` inputs (one each), `$3` function, `$4`
/// queue (created if missing, without limits), `$5` delay in seconds or `$9`
/// the time to start at, `$6` priority, `$7` key, `$8` the schema (to wake
/// executors, once per statement), `$10` the workflow that enqueues them
/// (NULL: none). An existing root of a name is returned as it is
/// (enqueueing is idempotent: its `enqueued_by` too), with its function and
/// whether its input matches. Rows are inserted in name order, so that two statements with
/// names in common lock them in one order.
pub(crate) const ENQUEUE: Sql = Sql::new(
    "
WITH queue AS (
    INSERT INTO {schema}.task_queue (name) VALUES ($4) ON CONFLICT (name) DO NOTHING RETURNING name
), due AS (
    SELECT coalesce($9::text::timestamptz, now() + make_interval(secs => $5::float8)) AS at
), asked AS (
    SELECT r.name, r.input FROM unnest($1::text[], $2::jsonb[]) AS r(name, input)
), made AS (
    INSERT INTO {schema}.task AS t (id, parent_id, root_id, kind, name, status, input, workflow, queue,
                               run_at, priority, concurrency_key, lease_epoch, enqueued_by)
    SELECT n.id, NULL, n.id, 'workflow', n.name,
           CASE WHEN due.at > now() THEN 'scheduled' ELSE 'queued' END,
           n.input, $3, $4, due.at, $6, $7, 0, $10::int8
    FROM (SELECT nextval('{schema}.task_id_seq') AS id, a.name, a.input FROM asked AS a ORDER BY a.name) AS n, due
    ORDER BY n.name
    ON CONFLICT (name) WHERE parent_id IS NULL DO UPDATE SET updated_at = t.updated_at
    RETURNING t.id, t.name, t.status, t.workflow, (t.xmax = 0) AS created, t.input
)
SELECT made.id, made.name, made.status, made.workflow, made.created,
       (made.input::text IS NOT DISTINCT FROM a.input::text) AS input_matches,
       (SELECT count(*) FROM queue) AS queue_created,
       (SELECT left(pg_notify('durable', $8::text || ' queued ' || $4)::text, 0)
        FROM made WHERE made.created LIMIT 1) AS woken
FROM made JOIN asked AS a ON a.name = made.name",
);

/// The first statement of a claim: locks the queue `$1`. Claims of one
/// queue wait for each other here, and a pause waits for the claim.
pub(crate) const LOCK_QUEUE: Sql = Sql::new("SELECT name FROM {schema}.task_queue WHERE name = $1 FOR UPDATE");

/// Running roots, and cancelled ones whose holder has not stopped their
/// body yet: what a queue's concurrency counts (index `task_busy_queue`).
pub(super) const BUSY: &str = "(t.status = 'running' OR (t.status = 'cancelled' AND t.owner_id IS NOT NULL))";

/// The second statement of a claim, run after `LOCK_QUEUE` in the same
/// transaction (so its snapshot sees every earlier claim); a paused or
/// missing queue gets a budget of 0. `$1` queue (NULL: runs of no queue,
/// which have no limits; `{queue}` matches it), `$2` most to claim, `$3`
/// the functions known, `$4` the owner, `$5` the executor's version, `$6`
/// whether to claim isolated runs (only those) or the others.
///
/// The budget is the least of `$2`, the queue's free concurrency, and what
/// each rate window has left (counted over the small table of recent starts,
/// on one clock reading taken under the lock). The candidates: for every
/// key with waiting runs (found by a skip scan of `task_waiting_key`, one
/// index probe per key), its first due runs, as many as the key has room
/// for; and the first due runs without a key. A key with a long backlog
/// thus never hides the others, whatever the backlog. They are locked with
/// SKIP LOCKED and ranked: by priority, then by their place (the runs of
/// a key take places after the key's running runs, in their own order: so
/// among equal priorities keys take turns), then by when each became due
/// or its key was last served (`task_queue_key`), whichever is later, so
/// that a key just served waits behind what queued meanwhile. `WAITING_RANK`
/// ranks the same way, for `durable.get`.
const CLAIM: &str = "
WITH RECURSIVE {candidates}, chosen AS (
    SELECT r.id FROM ranked AS r
    ORDER BY r.priority DESC, r.place, greatest(r.run_at, r.last_started), r.id
    LIMIT (SELECT n FROM budget)
), claimed AS (
    UPDATE {schema}.task AS t
    SET status = 'running', owner_id = $4::text::uuid, lease_epoch = t.lease_epoch + 1,
        -- A run woken from a suspension goes on with the same attempt.
        attempt = CASE WHEN t.lease_epoch = 0 THEN 1 WHEN t.waiting IS NOT NULL THEN t.attempt ELSE t.attempt + 1 END,
        waiting = NULL, waiting_on = NULL, wake_pending = false,
        version = coalesce(t.version, $5), error = NULL,
        started_at = coalesce(t.started_at, (SELECT now FROM clock)), updated_at = now()
    FROM chosen AS c
    WHERE t.id = c.id
    RETURNING t.id, t.name, t.workflow, t.input, t.attempt, t.lease_epoch, (t.lease_epoch = 1) AS first,
              t.concurrency_key,
              extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in
), served AS (
    INSERT INTO {schema}.task_queue_key AS turn (queue, key, last_started)
    SELECT DISTINCT $1, c.concurrency_key, clock.now FROM claimed AS c, clock
    WHERE $1::text IS NOT NULL AND c.concurrency_key IS NOT NULL
    ON CONFLICT (queue, key) DO UPDATE SET last_started = EXCLUDED.last_started
), started AS (
    INSERT INTO {schema}.task_queue_start (queue, started_at)
    SELECT $1, clock.now FROM claimed, clock, rate WHERE rate.longest IS NOT NULL
), pruned AS (
    DELETE FROM {schema}.task_queue_start AS s
    USING clock, rate
    WHERE s.queue = $1 AND s.started_at <= clock.now - coalesce(rate.longest, interval '0')
)
SELECT * FROM claimed";

/// The claim's budget and ranked candidates (see `CLAIM`), as CTEs ending
/// in `budget` and `ranked`. `{lock}` locks the candidates (SKIP LOCKED)
/// for a claim and is empty for a read; `{filter}` selects the runs the
/// claimant may take; `{take}` is how many candidates are wanted (each key
/// gives at most that many, and fewer if it has less room: the first `n`
/// of the ranking are the same whatever is cut past them).
const CANDIDATES: &str = "clock AS (
    SELECT clock_timestamp() AS now
), queue AS (
    SELECT q.max_concurrency, q.concurrency_per_key, q.paused FROM {schema}.task_queue AS q WHERE q.name = $1
), busy AS (
    SELECT t.concurrency_key AS key, count(*)::int AS n FROM {schema}.task AS t
    WHERE t.queue = $1 AND {busy} AND t.queue IS NOT NULL AND t.parent_id IS NULL
    GROUP BY t.concurrency_key
), rate AS (
    SELECT min(r.max_starts - (SELECT count(*) FROM {schema}.task_queue_start AS s, clock
                               WHERE s.queue = $1 AND s.started_at > clock.now - r.period))::int AS left,
           max(r.period) AS longest
    FROM {schema}.task_queue_rate AS r WHERE r.queue = $1
), budget AS (
    SELECT CASE WHEN $1::text IS NOT NULL AND NOT EXISTS (SELECT FROM queue WHERE NOT queue.paused) THEN 0
                ELSE greatest(0, least($2::int8,
                                       coalesce((SELECT max_concurrency FROM queue)
                                                - (SELECT coalesce(sum(n), 0) FROM busy), $2::int8),
                                       coalesce(rate.left, $2::int8))) END AS n
    FROM rate
), keys(key) AS (
    (SELECT t.concurrency_key FROM {schema}.task AS t
     WHERE t.queue = $1 AND t.concurrency_key IS NOT NULL
       AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
     ORDER BY t.concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT t.concurrency_key FROM {schema}.task AS t
            WHERE t.queue = $1 AND t.concurrency_key > keys.key
              AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
            ORDER BY t.concurrency_key LIMIT 1)
    FROM keys WHERE keys.key IS NOT NULL
), heads AS (
    SELECT h.* FROM keys AS k
    CROSS JOIN LATERAL (
        SELECT t.id, t.concurrency_key, t.priority, t.run_at FROM {schema}.task AS t
        WHERE t.queue = $1 AND t.concurrency_key = k.key
          AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
          AND t.run_at <= (SELECT now FROM clock) AND {filter}
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT greatest(0, least({take},
                                coalesce((SELECT concurrency_per_key FROM queue)
                                         - coalesce((SELECT b.n FROM busy AS b WHERE b.key = k.key), 0),
                                         {take})))
        {lock}
    ) AS h
    WHERE k.key IS NOT NULL
), unkeyed AS (
    SELECT t.id, t.priority, t.run_at FROM {schema}.task AS t
    WHERE {queue} AND t.concurrency_key IS NULL
      AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
      AND t.run_at <= (SELECT now FROM clock) AND {filter}
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT {take}
    {lock}
), ranked AS (
    SELECT h.id, h.priority, h.run_at, turn.last_started,
           row_number() OVER (PARTITION BY h.concurrency_key ORDER BY h.priority DESC, h.run_at, h.id)
               + coalesce((SELECT b.n FROM busy AS b WHERE b.key = h.concurrency_key), 0) AS place
    FROM heads AS h
    LEFT JOIN {schema}.task_queue_key AS turn ON turn.queue = $1 AND turn.key = h.concurrency_key
    UNION ALL
    SELECT u.id, u.priority, u.run_at, NULL, 1 FROM unkeyed AS u
)";

/// The place of the waiting run `$4` in its queue's claim order (see
/// `CLAIM`), as the executors that know its function (`$3`, one element)
/// at its version `$5` would claim now, if it is among the first `$2`; no
/// row otherwise. `$1` its queue, `$6` false.
const WAITING_RANK: &str = "
WITH RECURSIVE served(fns) AS (
    SELECT coalesce(array_agg(DISTINCT f.name), $3::text[]) FROM {schema}.executor AS e
    JOIN {schema}.owner AS o ON o.id = e.owner_id
    CROSS JOIN LATERAL unnest(e.workflows) AS f(name)
    WHERE ($3::text[])[1] = ANY(e.workflows) AND o.expires_at > now()
      AND ($5::text IS NULL OR e.version IS NOT DISTINCT FROM $5)
), {candidates}
SELECT ordered.place FROM (
    SELECT r.id, row_number() OVER (ORDER BY r.priority DESC, r.place, greatest(r.run_at, r.last_started), r.id)
               AS place
    FROM ranked AS r
) AS ordered
WHERE ordered.id = $4";

/// Who competes with a waiting run for its turn (see `WAITING_RANK`).
const RANK_FILTER: &str = "t.workflow = ANY((SELECT fns FROM served)::text[]) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool";

/// What a claimant may take: runs of the functions `$3`, of no version or
/// of `$5`, isolated or not as `$6` says.
const CLAIM_FILTER: &str = "t.workflow = ANY($3) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool";

/// Fails the run `$1` claimed by owner `$2` at epoch `$3`, which cannot be
/// started, with the reason `$4`; wakes the executors (`$5` the schema):
/// its slot is free.
pub(crate) const FAIL_UNSTARTABLE: Sql = Sql::new(
    "
UPDATE {schema}.task AS t
SET status = 'failed', owner_id = NULL, completed_at = now(), updated_at = now(),
    error = jsonb_build_object('type', 'Unstartable', 'module', 'durable.errors',
                               'message', format('run %s cannot be started: %s', t.name, $4::text),
                               'traceback', '')
WHERE t.id = $1 AND t.owner_id = $2::text::uuid AND t.lease_epoch = $3 AND t.status = 'running'
RETURNING left(pg_notify('durable', $5::text || ' queued ' || coalesce(t.queue, ''))::text, 0) AS notify",
);

/// Seconds until a waiting run of the functions `$1` (of no version or
/// of `$2`) may become claimable by time alone (see `Engine::next_due`):
/// the earliest delayed run still ahead (`task_scheduled`), and for each
/// queue with a full rate window and a due run of those functions, the
/// moment its oldest start leaves the window. "Ahead" reaches `$3`
/// seconds back: this runs after the claims, and a run that came due
/// between their clock and this one's must not be missed (one held back for
/// another reason then costs one more look, not a spin). A run due at
/// `infinity` (written by hand: `enqueue` refuses it) never comes due, and
/// is left out: Postgres cannot subtract it.
pub(crate) const NEXT_DUE: Sql = Sql::new(
    "
SELECT extract(epoch FROM least(
    (SELECT min(t.run_at) FROM {schema}.task AS t
     WHERE t.status = 'scheduled' AND t.parent_id IS NULL AND t.run_at > now() - make_interval(secs => $3)
       AND t.run_at < 'infinity'
       AND t.workflow = ANY($1) AND (t.version IS NULL OR t.version = $2)),
    (SELECT min(full_until.at) FROM (
        SELECT max(w.oldest + r.period) AS at
        FROM {schema}.task_queue_rate AS r
        CROSS JOIN LATERAL (
            SELECT min(s.started_at) AS oldest, count(*) AS n FROM {schema}.task_queue_start AS s
            WHERE s.queue = r.queue AND s.started_at > now() - r.period
        ) AS w
        WHERE w.n >= r.max_starts
          AND EXISTS (SELECT 1 FROM {schema}.task AS t
                      WHERE t.queue = r.queue AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
                        AND t.run_at <= now() AND t.workflow = ANY($1)
                        AND (t.version IS NULL OR t.version = $2))
        GROUP BY r.queue) AS full_until)
) - now())::float8 AS due_in",
);

/// Puts the failed or cancelled root `$1` back: queued if it has a
/// registered function (else `failed`, which `Ctx.start` takes again), its
/// recoveries and error forgotten, its cancelled children interrupted
/// (`running`, no holder) so that the resumed run takes them up. Wakes the
/// executors (`$2` the schema).
pub(crate) const RESUME: Sql = Sql::new(
    "
WITH root AS (
    UPDATE {schema}.task AS t
    SET status = CASE WHEN t.workflow IS NOT NULL THEN 'queued' ELSE 'failed' END,
        owner_id = NULL, error = NULL, completed_at = NULL, recoveries = 0, isolated = false, run_at = now(),
        updated_at = now(), waiting = NULL, waiting_on = NULL
    WHERE t.parent_id IS NULL AND t.name = $1 AND t.status IN ('failed', 'cancelled')
    RETURNING t.id, t.queue, t.workflow
), children AS (
    UPDATE {schema}.task AS t SET status = 'running', owner_id = NULL, completed_at = NULL, updated_at = now()
    FROM root
    WHERE t.root_id = root.id AND t.id <> root.id AND t.kind = 'workflow' AND t.status = 'cancelled'
)
SELECT id, CASE WHEN workflow IS NOT NULL
                THEN left(pg_notify('durable', $2::text || ' queued ' || coalesce(queue, ''))::text, 0) END
FROM root",
);

// Claims and ranks come in two texts, of a queue and of no queue, not one
// with `IS NOT DISTINCT FROM`: that one cannot use the index.

/// `CLAIM` in the queue `$1`.
pub(crate) const CLAIM_QUEUED: Sql = Sql::new(CLAIM).with(&[
    ("candidates", CANDIDATES),
    ("filter", CLAIM_FILTER),
    ("lock", "FOR UPDATE OF t SKIP LOCKED"),
    ("take", "(SELECT n FROM budget)"),
    ("busy", BUSY),
    ("queue", "t.queue = $1"),
]);

/// `CLAIM` among the runs of no queue (`$1` NULL).
pub(crate) const CLAIM_UNQUEUED: Sql = Sql::new(CLAIM).with(&[
    ("candidates", CANDIDATES),
    ("filter", CLAIM_FILTER),
    ("lock", "FOR UPDATE OF t SKIP LOCKED"),
    ("take", "(SELECT n FROM budget)"),
    ("busy", BUSY),
    ("queue", "t.queue IS NULL AND $1::text IS NULL"),
]);

/// `WAITING_RANK` in the queue `$1`.
pub(crate) const WAITING_RANK_QUEUED: Sql = Sql::new(WAITING_RANK).with(&[
    ("candidates", CANDIDATES),
    ("filter", RANK_FILTER),
    ("lock", ""),
    ("take", "$2::int8"),
    ("busy", BUSY),
    ("queue", "t.queue = $1"),
]);

/// `WAITING_RANK` among the runs of no queue (`$1` NULL).
pub(crate) const WAITING_RANK_UNQUEUED: Sql = Sql::new(WAITING_RANK).with(&[
    ("candidates", CANDIDATES),
    ("filter", RANK_FILTER),
    ("lock", ""),
    ("take", "$2::int8"),
    ("busy", BUSY),
    ("queue", "t.queue IS NULL AND $1::text IS NULL"),
]);
