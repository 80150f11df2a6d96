//! Read-only views of runs: listing them, reading one by its path, and why
//! a waiting run does not run yet. Nothing here takes a run over.

use tokio_postgres::Row;

use super::Engine;
use super::config::path_names;
use super::error::EngineError;
use super::jsonb::JsonText;
use super::tree::PATH;
use super::workflow::col;

/// A workflow as it is now. Times are microseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub id: i64,
    /// Its path: the root's name, then each child's (`parent/child`).
    pub path: String,
    pub status: String,
    /// Its registered function, if one runs it.
    pub workflow: Option<String>,
    pub queue: Option<String>,
    pub input: Option<JsonText>,
    pub output: Option<JsonText>,
    pub error: Option<JsonText>,
    pub attempt: i32,
    pub recoveries: i32,
    pub priority: i32,
    pub key: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub run_at: Option<i64>,
    /// For a waiting run: why it does not run yet.
    pub waiting_for: Option<String>,
}

/// Which roots `list` returns; `None` filters nothing.
#[derive(Debug, Clone, Default)]
pub struct RunFilter<'a> {
    pub status: Option<&'a str>,
    pub queue: Option<&'a str>,
    pub name_prefix: Option<&'a str>,
    /// Created at or after (microseconds since the epoch).
    pub since: Option<i64>,
    pub limit: i64,
}

impl Engine {
    /// The roots that match `filter`, newest first.
    pub async fn list_runs(&self, filter: &RunFilter<'_>) -> Result<Vec<RunInfo>, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let rows = retrying!(self, "listing workflows", |client| async {
            let statement = client.prepare_cached(&sql.info.list).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
                &filter.status,
                &filter.queue,
                &filter.name_prefix,
                &filter.since,
                &filter.limit,
            ];
            client.query(&statement, &params).await
        })?;
        rows.iter().map(|row| read_info(row, None)).collect()
    }

    /// The workflow at `path` (`root`, `root/child`, ...); `None` if there is none.
    pub async fn run_info(&self, path: &str) -> Result<Option<RunInfo>, EngineError> {
        let names = path_names(path)?;
        self.check_open()?;
        let sql = &self.inner.sql;
        let row = retrying!(self, &format!("reading workflow {path:?}"), |client| async {
            let statement = client.prepare_cached(&sql.info.get).await?;
            client.query_opt(&statement, &[&names]).await
        })?;
        row.map(|row| read_info(&row, Some(path))).transpose()
    }

    /// Records which functions this engine's executor runs (`None`: it
    /// stopped), so that waiting runs can tell whether any live executor
    /// knows their function.
    pub async fn register_executor(
        &self,
        workflows: Option<&[String]>,
        version: Option<&str>,
    ) -> Result<(), EngineError> {
        self.check_open()?;
        let owner = self.owner_id();
        let sql = &self.inner.sql;
        retrying!(self, "registering this executor", |client| async {
            let statement = client.prepare_cached(&sql.info.register_executor).await?;
            client.execute(&statement, &[&owner, &workflows, &version]).await
        })?;
        Ok(())
    }
}

pub(crate) fn read_info(row: &Row, path: Option<&str>) -> Result<RunInfo, EngineError> {
    let name: String = col(row, "name")?;
    Ok(RunInfo {
        id: col(row, "id")?,
        path: path.map_or(name, str::to_owned),
        status: col(row, "status")?,
        workflow: col(row, "workflow")?,
        queue: col(row, "queue")?,
        input: col(row, "input")?,
        output: col(row, "output")?,
        error: col(row, "error")?,
        attempt: col(row, "attempt")?,
        recoveries: col(row, "recoveries")?,
        priority: col(row, "priority")?,
        key: col(row, "concurrency_key")?,
        created_at: col(row, "created_us")?,
        started_at: col(row, "started_us")?,
        completed_at: col(row, "completed_us")?,
        run_at: col(row, "run_at_us")?,
        waiting_for: col(row, "waiting_for")?,
    })
}

/// Statement texts of the read-only views (see `sql::Statements`).
#[derive(Debug)]
pub(crate) struct InfoStatements {
    pub list: String,
    pub get: String,
    pub register_executor: String,
}

impl InfoStatements {
    pub(crate) fn new(fill: impl Fn(&str) -> String) -> Self {
        InfoStatements {
            list: fill(&format!(
                "{COLUMNS}
                 WHERE t.parent_id IS NULL
                   AND ($1::text IS NULL OR t.status = $1) AND ($2::text IS NULL OR t.queue = $2)
                   AND ($3::text IS NULL OR starts_with(t.name, $3))
                   AND ($4::int8 IS NULL OR t.created_at >= 'epoch'::timestamptz + $4 * interval '1 microsecond')
                 ORDER BY t.id DESC
                 LIMIT $5"
            )),
            get: fill(&format!(
                "{PATH}
                 {COLUMNS}
                 WHERE t.id = (SELECT id FROM path WHERE depth = cardinality($1::text[]))"
            )),
            register_executor: fill(REGISTER_EXECUTOR),
        }
    }
}

/// A run's columns, and for a running root waiting in its process what it
/// waits for (`task.waiting`, see `Engine::note_wait`); for a waiting run
/// why it waits, the first of:
/// suspended (what it waits for, from `task.waiting`), delayed, its queue paused, no live executor that knows its function (of
/// its version), a rate window full (until its oldest start leaves the
/// window), the queue's concurrency full, its key's concurrency full; else
/// it is ready for the next claim.
pub(crate) const COLUMNS: &str = "
SELECT t.id, t.parent_id, t.kind, t.name, t.status, t.workflow, t.queue, t.input, t.output, t.error, t.attempt, t.recoveries,
       t.priority, t.concurrency_key,
       (extract(epoch FROM t.created_at) * 1000000)::int8 AS created_us,
       (extract(epoch FROM t.started_at) * 1000000)::int8 AS started_us,
       (extract(epoch FROM t.completed_at) * 1000000)::int8 AS completed_us,
       (extract(epoch FROM t.run_at) * 1000000)::int8 AS run_at_us,
       CASE
       WHEN t.status = 'running' THEN t.waiting ->> 'detail'
       WHEN t.status NOT IN ('queued', 'scheduled') THEN NULL
       WHEN t.waiting IS NOT NULL AND (t.run_at IS NULL OR t.run_at > now()) THEN t.waiting ->> 'detail'
       WHEN t.run_at > now() THEN
           'delayed until ' || to_char(t.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
       WHEN (SELECT paused FROM {s}.task_queue WHERE name = t.queue) THEN format('queue %s is paused', t.queue)
       WHEN NOT EXISTS (
           SELECT 1 FROM {s}.owner AS o
           WHERE t.workflow = ANY(o.workflows) AND o.expires_at > now()
             AND (t.version IS NULL OR t.version IS NOT DISTINCT FROM o.version)
             AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace OR {connected})) THEN
           format('no live executor has registered its function %s%s', coalesce(t.workflow, '(none: started by hand)'),
                  CASE WHEN t.version IS NOT NULL THEN ' at version ' || t.version ELSE '' END)
       WHEN rate.until IS NOT NULL THEN
           'rate limit until ' || to_char(rate.until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
       WHEN q.max_concurrency IS NOT NULL AND running.n >= q.max_concurrency THEN
           format('concurrency full (%s running)', running.n)
       WHEN t.concurrency_key IS NOT NULL AND q.concurrency_per_key IS NOT NULL
            AND keyed.n >= q.concurrency_per_key THEN
           format('key limit: %s runs of key %s running', keyed.n, t.concurrency_key)
       ELSE 'ready: the next claim starts it'
       END AS waiting_for
FROM {s}.task AS t
LEFT JOIN {s}.task_queue AS q ON q.name = t.queue
LEFT JOIN LATERAL (
    SELECT count(*)::int AS n FROM {s}.task AS r
    WHERE r.queue = t.queue AND r.status = 'running' AND r.parent_id IS NULL
) AS running ON t.status IN ('queued', 'scheduled')
LEFT JOIN LATERAL (
    SELECT count(*)::int AS n FROM {s}.task AS r
    WHERE r.queue = t.queue AND r.concurrency_key = t.concurrency_key AND r.status = 'running' AND r.parent_id IS NULL
) AS keyed ON t.status IN ('queued', 'scheduled')
LEFT JOIN LATERAL (
    SELECT max(w.oldest + w.period) AS until FROM (
        SELECT r.period, min(s.started_at) AS oldest, count(s.*) AS starts, r.max_starts
        FROM {s}.task_queue_rate AS r
        LEFT JOIN {s}.task_queue_start AS s ON s.queue = r.queue AND s.started_at > now() - r.period
        WHERE r.queue = t.queue
        GROUP BY r.period, r.max_starts
    ) AS w
    WHERE w.starts >= w.max_starts
) AS rate ON t.status IN ('queued', 'scheduled')";

/// Records (or clears, `$2` NULL) the functions the executor of owner `$1`
/// runs, and its version `$3`.
const REGISTER_EXECUTOR: &str = "UPDATE {s}.owner SET workflows = $2, version = $3 WHERE id = $1::text::uuid";
