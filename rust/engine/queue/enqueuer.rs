//! Group commit for single enqueues (`connect::group`): the enqueues made
//! at the same time go as one statement (`ENQUEUE_ROWS`, every option a
//! column, so that runs of other functions, queues, keys, priorities and
//! start times share it; an enqueue alone goes as `ENQUEUE`), hence one
//! commit and one notification per queue.
//!
//! Why: each enqueue was its own transaction with a `NOTIFY`, and Postgres
//! serializes the commits of notifying transactions (a global lock held
//! through the WAL flush), so concurrent enqueues shared no flush.
//!
//! Each row is made or found exactly as by an enqueue of its own (see
//! `ENQUEUE`); the caller reads its row (`Engine::enqueue`), so an enqueue
//! refused for its input or its function fails alone. A name enqueued
//! twice at once goes in two batches: the second finds the first's run.

use std::sync::Arc;

use crate::engine::connect::group::{Group, Kind, Params, Request};
use crate::engine::sql::{Sql, Statements};
use crate::engine::values::jsonb::JsonText;

/// Single enqueues.
pub(crate) struct Enqueues {
    pub sql: Arc<Statements>,
    pub schema: String,
}

/// An enqueue besides its run's name (see `queue::Enqueue`).
pub(crate) struct Queued {
    pub input: JsonText,
    pub workflow: String,
    pub queue: String,
    /// Seconds.
    pub delay: f64,
    pub run_at: Option<String>,
    pub priority: i32,
    pub key: Option<String>,
    pub enqueued_by: Option<i64>,
}

/// The sending side, owned by the engine.
pub(crate) type Enqueuer = Group<Enqueues>;

impl Kind for Enqueues {
    type Item = Queued;

    fn size(run: &Queued) -> usize {
        run.input.as_str().len()
            + run.workflow.len()
            + run.queue.len()
            + run.run_at.as_ref().map_or(0, String::len)
            + run.key.as_ref().map_or(0, String::len)
    }

    fn what(name: &str) -> String {
        format!("enqueueing workflow {name:?}")
    }

    fn what_many(count: usize) -> String {
        format!("enqueueing {count} runs")
    }

    fn statement<'a>(&'a self, batch: &'a [Request<Queued>]) -> (&'a str, Params<'a>) {
        // An enqueue alone goes as `enqueue_many` of one run sends it.
        if let [one] = batch {
            let run = &one.item;
            let params: Params<'a> = vec![
                Box::new([one.name.as_str()].to_vec()),
                Box::new([&run.input].to_vec()),
                Box::new(&run.workflow),
                Box::new(&run.queue),
                Box::new(run.delay),
                Box::new(run.priority),
                Box::new(&run.key),
                Box::new(&self.schema),
                Box::new(&run.run_at),
                Box::new(run.enqueued_by),
            ];
            return (&self.sql.enqueue, params);
        }
        let runs = || batch.iter().map(|r| &r.item);
        let params: Params<'a> = vec![
            Box::new(batch.iter().map(|r| r.name.as_str()).collect::<Vec<_>>()),
            Box::new(runs().map(|r| &r.input).collect::<Vec<_>>()),
            Box::new(runs().map(|r| r.workflow.as_str()).collect::<Vec<_>>()),
            Box::new(runs().map(|r| r.queue.as_str()).collect::<Vec<_>>()),
            Box::new(runs().map(|r| r.delay).collect::<Vec<_>>()),
            Box::new(runs().map(|r| r.run_at.as_deref()).collect::<Vec<_>>()),
            Box::new(runs().map(|r| r.priority).collect::<Vec<_>>()),
            Box::new(runs().map(|r| r.key.as_deref()).collect::<Vec<_>>()),
            Box::new(runs().map(|r| r.enqueued_by).collect::<Vec<_>>()),
            Box::new(&self.schema),
        ];
        (&self.sql.enqueue_rows, params)
    }
}

/// `ENQUEUE` with every option a column: `$1` names (distinct), `$2`
/// inputs, `$3` functions, `$4` queues (each created if missing, without
/// limits), `$5` delays in seconds or `$6` the times to start at, `$7`
/// priorities, `$8` keys, `$9` the workflows that enqueue them (NULL:
/// none), one each; `$10` the schema, to wake the executors once per queue
/// that got a new run. Each row as `ENQUEUE` returns it; `queue_created` is
/// 1 for the first run (by name) of each queue the statement created, as if
/// the runs were enqueued one after another in name order. Queues and runs
/// are inserted in name order, so that two statements lock what they share
/// in one order.
pub(crate) const ENQUEUE_ROWS: Sql = Sql::new(
    "
WITH asked AS (
    SELECT r.*, row_number() OVER (PARTITION BY r.queue ORDER BY r.name) AS nth_of_queue
    FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::int4[],
                $8::text[], $9::int8[])
         AS r(name, input, workflow, queue, delay, run_at, priority, key, enqueued_by)
), queue AS (
    INSERT INTO {schema}.task_queue (name)
    SELECT DISTINCT a.queue FROM asked AS a ORDER BY a.queue
    ON CONFLICT (name) DO NOTHING RETURNING name
), made AS (
    INSERT INTO {schema}.task AS t (id, parent_id, root_id, kind, name, status, input, workflow, queue,
                               run_at, priority, concurrency_key, lease_epoch, enqueued_by)
    SELECT n.id, NULL, n.id, 'workflow', n.name,
           CASE WHEN n.at > now() THEN 'scheduled' ELSE 'queued' END,
           n.input, n.workflow, n.queue, n.at, n.priority, n.key, 0, n.enqueued_by
    FROM (SELECT nextval('{schema}.task_id_seq') AS id, a.*,
                 coalesce(a.run_at::timestamptz, now() + make_interval(secs => a.delay)) AS at
          FROM asked AS a ORDER BY a.name) AS n
    ORDER BY n.name
    ON CONFLICT (name) WHERE parent_id IS NULL DO UPDATE SET updated_at = t.updated_at
    RETURNING t.id, t.name, t.status, t.workflow, (t.xmax = 0) AS created, t.input
), woken AS (
    SELECT left(pg_notify('durable', $10::text || ' queued ' || q.queue)::text, 0) AS notified
    FROM (SELECT DISTINCT a.queue FROM made JOIN asked AS a ON a.name = made.name WHERE made.created) AS q
)
SELECT made.id, made.name, made.status, made.workflow, made.created,
       (made.input::text IS NOT DISTINCT FROM a.input::text) AS input_matches,
       (SELECT count(*) FROM queue WHERE queue.name = a.queue AND a.nth_of_queue = 1) AS queue_created,
       (SELECT count(*) FROM woken) AS woken
FROM made JOIN asked AS a ON a.name = made.name",
);
