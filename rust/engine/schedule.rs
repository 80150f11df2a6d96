//! Recurring runs: the next tick of each scheduled function, kept in
//! `task_schedule` and advanced by executors with a compare-and-set, on the
//! database's clock. Computing ticks (cron, intervals) is the caller's job;
//! the engine stores them and queues each tick's run, whose name is made of
//! the function and the tick, so a tick runs once whatever the number of
//! executors, with no leader.
//!
//! Times cross this boundary as microseconds since the Unix epoch: exact,
//! whatever the session's time zone or date style.

use super::error::EngineError;
use super::jsonb::JsonText;
use super::workflow::col;
use super::{Engine, validate_name};

/// A schedule as stored: its spec, its next tick, and the database's clock
/// when it was read (all times in microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub spec: String,
    pub next_tick: i64,
    pub now: i64,
}

/// The runs of the ticks that came due, to queue while advancing.
#[derive(Debug, Clone)]
pub struct Ticks<'a> {
    /// The registered function and its queue.
    pub workflow: &'a str,
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
    /// Registers (or re-reads) the schedule of `workflow`: a new function, or
    /// a changed spec, starts at `first_tick`; an unchanged one keeps its
    /// next tick. Returns the schedule as stored.
    pub async fn schedule(&self, workflow: &str, spec: &str, first_tick: i64) -> Result<ScheduleState, EngineError> {
        validate_name("registered workflow", workflow)?;
        self.check_open()?;
        let sql = &self.inner.sql;
        let row = retrying!(
            self,
            &format!("registering the schedule of {workflow:?}"),
            |client| async {
                let statement = client.prepare_cached(&sql.schedule.register).await?;
                client.query_one(&statement, &[&workflow, &spec, &first_tick]).await
            }
        )?;
        read_state(&row)
    }

    /// The schedule of `workflow` as it is now, with the database's clock.
    pub async fn schedule_state(&self, workflow: &str) -> Result<Option<ScheduleState>, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let row = retrying!(self, &format!("reading the schedule of {workflow:?}"), |client| async {
            let statement = client.prepare_cached(&sql.schedule.read).await?;
            client.query_opt(&statement, &[&workflow]).await
        })?;
        row.as_ref().map(read_state).transpose()
    }

    /// Advances the schedule from `ticks.seen` to `ticks.next` and queues the
    /// runs of the ticks that came due, if no other executor did so first
    /// and `seen` is due on the database's clock. True if this call did.
    pub async fn advance_schedule(&self, ticks: &Ticks<'_>) -> Result<bool, EngineError> {
        self.check_open()?;
        let schema = self.schema();
        let sql = &self.inner.sql;
        let row = retrying!(
            self,
            &format!("queueing the ticks of {:?}", ticks.workflow),
            |client| async {
                let statement = client.prepare_cached(&sql.schedule.advance).await?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                    &ticks.workflow,
                    &ticks.seen,
                    &ticks.next,
                    &ticks.names,
                    &ticks.inputs,
                    &ticks.queue,
                    &schema,
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
        spec: col(row, "spec")?,
        next_tick: col(row, "next_tick")?,
        now: col(row, "now")?,
    })
}

/// Microseconds since the epoch of a `timestamptz` expression, and back.
const MICROS: &str = "(extract(epoch FROM {t}) * 1000000)::int8";
const FROM_MICROS: &str = "('epoch'::timestamptz + {t} * interval '1 microsecond')";

/// Statement texts of schedules (see `sql::Statements`).
#[derive(Debug)]
pub(crate) struct ScheduleStatements {
    pub register: String,
    pub read: String,
    pub advance: String,
}

impl ScheduleStatements {
    pub(crate) fn new(fill: impl Fn(&str) -> String) -> Self {
        let micros = |t: &str| MICROS.replace("{t}", t);
        let from_micros = |t: &str| FROM_MICROS.replace("{t}", t);
        // $1 function, $2 spec, $3 first tick.
        let register = format!(
            "INSERT INTO {{s}}.task_schedule AS x (workflow, spec, next_tick) VALUES ($1, $2, {first})
             ON CONFLICT (workflow) DO UPDATE SET
                 spec = EXCLUDED.spec,
                 next_tick = CASE WHEN x.spec = EXCLUDED.spec THEN x.next_tick ELSE EXCLUDED.next_tick END,
                 updated_at = now()
             RETURNING x.spec, {next} AS next_tick, {now} AS now",
            first = from_micros("$3::int8"),
            next = micros("x.next_tick"),
            now = micros("clock_timestamp()"),
        );
        let read = format!(
            "SELECT spec, {next} AS next_tick, {now} AS now FROM {{s}}.task_schedule WHERE workflow = $1",
            next = micros("next_tick"),
            now = micros("clock_timestamp()"),
        );
        // $1 function, $2 next tick seen, $3 next tick after, $4 run names,
        // $5 their inputs, $6 queue, $7 schema (to wake executors).
        let advance = format!(
            "WITH advanced AS (
                 UPDATE {{s}}.task_schedule SET next_tick = {next}, updated_at = now()
                 WHERE workflow = $1 AND next_tick = {seen} AND next_tick <= clock_timestamp()
                 RETURNING workflow
             ), queue AS (
                 INSERT INTO {{s}}.task_queue (name) SELECT $6 FROM advanced ON CONFLICT (name) DO NOTHING
             ), runs AS (
                 INSERT INTO {{s}}.task AS t (id, parent_id, root_id, kind, name, status, input, workflow, queue,
                                             run_at, lease_epoch)
                 SELECT r.id, NULL, r.id, 'workflow', r.name, 'queued', r.input, $1, $6, now(), 0
                 FROM (SELECT nextval('{{s}}.task_id_seq') AS id, u.name, u.input
                       FROM unnest($4::text[], $5::jsonb[]) AS u(name, input)) AS r, advanced
                 ON CONFLICT (name) WHERE parent_id IS NULL DO NOTHING
                 RETURNING t.id
             )
             SELECT (SELECT count(*) FROM advanced) AS advanced,
                    (SELECT left(pg_notify('durable', $7::text || ' queued ' || $6)::text, 0)
                     WHERE EXISTS (SELECT 1 FROM runs)) AS notify",
            next = from_micros("$3::int8"),
            seen = from_micros("$2::int8"),
        );
        ScheduleStatements {
            register: fill(&register),
            read: fill(&read),
            advance: fill(&advance),
        }
    }
}
