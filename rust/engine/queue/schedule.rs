//! Recurring runs: the next tick of each scheduled function and spec, kept
//! in `task_schedule_spec` and advanced by executors with a compare-and-set,
//! on the database's clock. Computing ticks (cron, intervals) is the
//! caller's job; the engine stores them and queues each tick's run, whose
//! name is made of the function and the tick, so a tick runs once whatever
//! the number of executors, with no leader.
//!
//! Each spec of a function has its own row, advanced by the executors that
//! serve that spec: during a rolling deploy that changes a schedule, old and
//! new executors queue the ticks of both specs (a tick time both produce is
//! one run, by its name), and the old spec's row goes once no executor has
//! seen it for a while (`Engine::schedule` removes it).
//!
//! Times cross this boundary as microseconds since the Unix epoch: exact,
//! whatever the session's time zone or date style.

use std::time::Duration;

use crate::engine::error::EngineError;
use crate::engine::sql::Sql;
use crate::engine::values::jsonb::JsonText;
use crate::engine::workflow::col;
use crate::engine::{Engine, validate_name};

/// A schedule as stored: its next tick, and the database's clock when it
/// was read (both in microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub next_tick: i64,
    pub now: i64,
}

/// A schedule registered (or confirmed): its state, and the other specs of
/// the function that were removed because no executor had seen them for
/// `forget_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub state: ScheduleState,
    pub forgotten: Vec<String>,
}

/// The runs of the ticks that came due, to queue while advancing.
#[derive(Debug, Clone)]
pub struct Ticks<'a> {
    /// The registered function, the spec whose row advances, and the queue.
    pub workflow: &'a str,
    pub spec: &'a str,
    pub queue: &'a str,
    /// The next tick as read (the compare of the compare-and-set).
    pub seen: i64,
    /// The tick after those queued now.
    pub next: i64,
    /// The runs to queue: names and inputs.
    pub names: Vec<String>,
    pub inputs: Vec<JsonText>,
}

impl Engine {
    /// Registers the schedule `spec` of `workflow`, or confirms that an
    /// executor still serves it: a new spec starts at `first_tick`, a known
    /// one keeps its next tick. The function's other specs that no executor
    /// has seen (registered, confirmed or advanced) for `forget_after` are
    /// removed: no executor serves them any more. An executor calls this
    /// when it starts and then at a fraction of `forget_after`.
    pub async fn schedule(
        &self,
        workflow: &str,
        spec: &str,
        first_tick: i64,
        forget_after: Duration,
    ) -> Result<Registered, EngineError> {
        validate_name("registered workflow", workflow)?;
        validate_spec(spec)?;
        self.check_open()?;
        let sql = &self.inner.sql;
        let forget_after = forget_after.as_secs_f64();
        let row = retrying!(
            self,
            &format!("registering the schedule {spec:?} of {workflow:?}"),
            |client| async {
                let statement = client.prepare_cached(&sql.schedule_register).await?;
                client
                    .query_one(&statement, &[&workflow, &spec, &first_tick, &forget_after])
                    .await
            }
        )?;
        Ok(Registered {
            state: read_state(&row)?,
            forgotten: col(&row, "forgotten")?,
        })
    }

    /// The schedule `spec` of `workflow` as it is now, with the database's
    /// clock; None if it is not stored (never registered, or removed).
    pub async fn schedule_state(&self, workflow: &str, spec: &str) -> Result<Option<ScheduleState>, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let row = retrying!(
            self,
            &format!("reading the schedule {spec:?} of {workflow:?}"),
            |client| async {
                let statement = client.prepare_cached(&sql.schedule_read).await?;
                client.query_opt(&statement, &[&workflow, &spec]).await
            }
        )?;
        row.as_ref().map(read_state).transpose()
    }

    /// Advances the schedule `ticks.spec` of `ticks.workflow` from
    /// `ticks.seen` to `ticks.next` and queues the runs of the ticks that
    /// came due, if no other executor did so first and `seen` is due on the
    /// database's clock. True if this call did. A run that exists (a tick
    /// another spec of the function queued too) is left as it is.
    pub async fn advance_schedule(&self, ticks: &Ticks<'_>) -> Result<bool, EngineError> {
        self.check_open()?;
        let schema = self.schema();
        let sql = &self.inner.sql;
        let row = retrying!(
            self,
            &format!("queueing the ticks of {:?}", ticks.workflow),
            |client| async {
                let statement = client.prepare_cached(&sql.schedule_advance).await?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
                    &ticks.workflow,
                    &ticks.seen,
                    &ticks.next,
                    &ticks.names,
                    &ticks.inputs,
                    &ticks.queue,
                    &schema,
                    &ticks.spec,
                ];
                client.query_one(&statement, &params).await
            }
        )?;
        let advanced = col::<i64>(&row, "advanced")? > 0;
        if advanced {
            self.inner.events.more_work();
        }
        Ok(advanced)
    }
}

fn read_state(row: &tokio_postgres::Row) -> Result<ScheduleState, EngineError> {
    Ok(ScheduleState {
        next_tick: col(row, "next_tick")?,
        now: col(row, "now")?,
    })
}

/// A spec is the caller's text (`cron <expr> <zone>`, `every <seconds>`),
/// kept as given: anything but empty.
fn validate_spec(spec: &str) -> Result<(), EngineError> {
    if spec.is_empty() {
        return Err(EngineError::InvalidOption(
            "a schedule's spec must not be empty".to_owned(),
        ));
    }
    Ok(())
}

// Times cross as microseconds since the epoch: `(extract(epoch FROM x) *
// 1000000)::int8`, and back `('epoch'::timestamptz + x * interval '1
// microsecond')`.

/// Registers a spec of a function: `$1` function, `$2` spec, `$3` first
/// tick, `$4` seconds after which an unseen spec of the function is removed.
/// (A delete that meets a row being advanced waits for it, then finds it
/// seen.) Times are microseconds since the epoch.
pub(crate) const REGISTER: Sql = Sql::new(
    "WITH forgotten AS (
                 DELETE FROM {schema}.task_schedule_spec
                 WHERE workflow = $1 AND spec <> $2 AND seen_at < now() - make_interval(secs => $4::float8)
                 RETURNING spec
             ), registered AS (
                 INSERT INTO {schema}.task_schedule_spec AS x (workflow, spec, next_tick) VALUES ($1, $2, ('epoch'::timestamptz + $3::int8 * interval '1 microsecond'))
                 ON CONFLICT (workflow, spec) DO UPDATE SET seen_at = now()
                 RETURNING x.next_tick
             )
             SELECT (extract(epoch FROM next_tick) * 1000000)::int8 AS next_tick, (extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS now, ARRAY(SELECT spec FROM forgotten ORDER BY spec) AS forgotten
             FROM registered",
);

/// The next tick of the spec `$2` of function `$1`, and the database's clock.
pub(crate) const READ: Sql = Sql::new(
    "SELECT (extract(epoch FROM next_tick) * 1000000)::int8 AS next_tick, (extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS now FROM {schema}.task_schedule_spec WHERE workflow = $1 AND spec = $2",
);

/// Advances the spec from the tick `$2` seen to `$3` and queues the runs of
/// the ticks passed: `$1` function, `$4` run names, `$5` their inputs, `$6`
/// queue, `$7` schema (to wake executors), `$8` spec.
pub(crate) const ADVANCE: Sql = Sql::new(
    "WITH advanced AS (
                 UPDATE {schema}.task_schedule_spec SET next_tick = ('epoch'::timestamptz + $3::int8 * interval '1 microsecond'), seen_at = now()
                 WHERE workflow = $1 AND spec = $8 AND next_tick = ('epoch'::timestamptz + $2::int8 * interval '1 microsecond') AND next_tick <= clock_timestamp()
                 RETURNING workflow
             ), queue AS (
                 INSERT INTO {schema}.task_queue (name) SELECT $6 FROM advanced ON CONFLICT (name) DO NOTHING
             ), runs AS (
                 INSERT INTO {schema}.task AS t (id, parent_id, root_id, kind, name, status, input, workflow, queue,
                                             run_at, lease_epoch)
                 SELECT r.id, NULL, r.id, 'workflow', r.name, 'queued', r.input, $1, $6, now(), 0
                 FROM (SELECT nextval('{schema}.task_id_seq') AS id, u.name, u.input
                       FROM unnest($4::text[], $5::jsonb[]) AS u(name, input)) AS r, advanced
                 ON CONFLICT (name) WHERE parent_id IS NULL DO NOTHING
                 RETURNING t.id
             )
             SELECT (SELECT count(*) FROM advanced) AS advanced,
                    (SELECT left(pg_notify('durable', $7::text || ' queued ' || $6)::text, 0)
                     WHERE EXISTS (SELECT 1 FROM runs)) AS notify",
);
