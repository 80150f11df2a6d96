//! Read-only views of runs: listing them, reading one by its path, and why
//! a waiting run does not run yet. Nothing here takes a run over.

use tokio_postgres::Row;

use super::Engine;
use super::config::{show_path, validate_path};
use super::error::EngineError;
use super::jsonb::JsonText;
use super::moment::Moment;
use super::tree::PATH;
use super::workflow::col;

/// A workflow as it is now (its times as `Moment`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub id: i64,
    /// Its own name.
    pub name: String,
    /// Its path: the root's name, then each child's down to it (a root's
    /// is its name alone). Names are never joined or split.
    pub path: Vec<String>,
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
    /// The version of the executors that may run it (set by its first claim).
    pub version: Option<String>,
    pub created_at: Moment,
    pub started_at: Option<Moment>,
    pub completed_at: Option<Moment>,
    pub run_at: Option<Moment>,
    /// For a waiting run: why it does not run yet.
    pub waiting_for: Option<String>,
}

/// Which roots `list` returns; `None` filters nothing.
#[derive(Debug, Clone, Copy, Default)]
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
        rows.iter().map(|row| read_info(row, &[])).collect()
    }

    /// The workflow at `path` (the root's name, then each child's); `None`
    /// if there is none.
    pub async fn run_info(&self, path: &[String]) -> Result<Option<RunInfo>, EngineError> {
        validate_path(path)?;
        self.check_open()?;
        let sql = &self.inner.sql;
        let row = retrying!(self, &format!("reading workflow {}", show_path(path)), |client| async {
            let statement = client.prepare_cached(&sql.info.get).await?;
            client.query_opt(&statement, &[&path]).await
        })?;
        let parent = &path[..path.len() - 1];
        let Some(mut info) = row.map(|row| read_info(&row, parent)).transpose()? else {
            return Ok(None);
        };
        if info.waiting_for.as_deref() == Some(READY) {
            if let Some(place) = self.waiting_rank(&info).await? {
                info.waiting_for = Some(place);
            }
        }
        Ok(Some(info))
    }

    /// Where the waiting run `info` stands in its queue's claim order, in
    /// words (see `queue::WAITING_RANK`); `None` for a run of no function.
    async fn waiting_rank(&self, info: &RunInfo) -> Result<Option<String>, EngineError> {
        const SHOWN: i64 = 100;
        let Some(workflow) = info.workflow.clone() else {
            return Ok(None);
        };
        let sql = &self.inner.sql;
        let statement = if info.queue.is_some() {
            &sql.queue.waiting_rank
        } else {
            &sql.queue.waiting_rank_unqueued
        };
        let take = SHOWN + 1;
        let functions = [workflow];
        let row = retrying!(
            self,
            &format!("reading the turn of workflow {}", show_path(&info.path)),
            |client| async {
                let statement = client.prepare_cached(statement).await?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                    [&info.queue, &take, &&functions[..], &info.id, &info.version, &false];
                client.query_opt(&statement, &params).await
            }
        )?;
        let place = row.map(|row| col::<i64>(&row, "place")).transpose()?;
        Ok(Some(match place {
            Some(1) => "ready: the next claim starts it".to_owned(),
            Some(place) => format!("ready: {} runs come before it in claim order", place - 1),
            None => format!("ready: more than {SHOWN} runs come before it in claim order"),
        }))
    }

    /// Registers an executor of this process that runs `workflows` at
    /// `version`, so that waiting runs can tell whether a live executor
    /// knows their function; returns its number, for `unregister_executor`.
    /// Each executor of a process has its own registration.
    pub async fn register_executor(&self, workflows: &[String], version: Option<&str>) -> Result<i64, EngineError> {
        self.check_open()?;
        let owner = self.owner_id();
        let id = self.inner.executors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sql = &self.inner.sql;
        retrying!(self, "registering this executor", |client| async {
            let statement = client.prepare_cached(&sql.info.register_executor).await?;
            client.execute(&statement, &[&owner, &id, &workflows, &version]).await
        })?;
        Ok(id)
    }

    /// Removes the registration `id` (the executor stopped). The others of
    /// this process keep theirs.
    pub async fn unregister_executor(&self, id: i64) -> Result<(), EngineError> {
        self.check_open()?;
        let owner = self.owner_id();
        let sql = &self.inner.sql;
        retrying!(self, "unregistering this executor", |client| async {
            let statement = client.prepare_cached(&sql.info.unregister_executor).await?;
            client.execute(&statement, &[&owner, &id]).await
        })?;
        Ok(())
    }
}

/// A run's row as `RunInfo`; `parent` is the path of the workflow it is
/// under (empty for a root, and for a step, whose path is its name).
pub(crate) fn read_info(row: &Row, parent: &[String]) -> Result<RunInfo, EngineError> {
    let name: String = col(row, "name")?;
    let mut path = Vec::with_capacity(parent.len() + 1);
    path.extend_from_slice(parent);
    path.push(name.clone());
    Ok(RunInfo {
        id: col(row, "id")?,
        name,
        path,
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
        version: col(row, "version")?,
        created_at: col(row, "created_at")?,
        started_at: col(row, "started_at")?,
        completed_at: col(row, "completed_at")?,
        run_at: col(row, "run_at")?,
        waiting_for: col(row, "waiting_for")?,
    })
}

/// Statement texts of the read-only views (see `sql::Statements`).
#[derive(Debug)]
pub(crate) struct InfoStatements {
    pub list: String,
    pub get: String,
    pub register_executor: String,
    pub unregister_executor: String,
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
            unregister_executor: fill(UNREGISTER_EXECUTOR),
        }
    }
}

/// What `COLUMNS` says of a waiting run that nothing holds back but its
/// turn; `Engine::run_info` replaces it with the run's place in claim order.
pub(crate) const READY: &str = "ready: waiting for its turn";

/// A run's columns, and for a running root waiting in its process what it
/// waits for (`task.waiting`, see `Engine::note_wait`); for a waiting run
/// why it waits, the first of: suspended (what it waits for, from
/// `task.waiting`), delayed, its queue paused, no live executor that knows
/// its function (of its version), isolated (it waits for an executor to
/// run it alone), a rate window full (until its oldest start leaves the
/// window), the queue's concurrency full (running runs, and cancelled ones
/// still stopping), its key's room taken (by running runs of its key, and
/// by the due ones before it, which the claims take first); else it only
/// waits for its turn (`READY`). Each reason is a condition the claims
/// check, in the same terms.
pub(crate) const COLUMNS: &str = "
SELECT t.id, t.parent_id, t.kind, t.name, t.status, t.workflow, t.queue, t.input, t.output, t.error, t.attempt, t.recoveries,
       t.priority, t.concurrency_key, t.version, t.created_at, t.started_at, t.completed_at, t.run_at,
       CASE
       WHEN t.status = 'running' THEN t.waiting ->> 'detail'
       WHEN t.status NOT IN ('queued', 'scheduled') THEN NULL
       WHEN t.waiting IS NOT NULL AND (t.run_at IS NULL OR t.run_at > now()) THEN t.waiting ->> 'detail'
       WHEN t.run_at > now() THEN
           'delayed until ' || CASE WHEN isfinite(t.run_at)
                                    THEN to_char(t.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
                                    ELSE 'infinity' END
       WHEN (SELECT paused FROM {s}.task_queue WHERE name = t.queue) THEN format('queue %s is paused', t.queue)
       WHEN NOT EXISTS (
           SELECT 1 FROM {s}.executor AS e JOIN {s}.owner AS o ON o.id = e.owner_id
           WHERE t.workflow = ANY(e.workflows) AND o.expires_at > now()
             AND (t.version IS NULL OR t.version IS NOT DISTINCT FROM e.version)
             AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace OR {connected})) THEN
           format('no live executor has registered its function %s%s', coalesce(t.workflow, '(none: started by hand)'),
                  CASE WHEN t.version IS NOT NULL THEN ' at version ' || t.version ELSE '' END)
       WHEN t.isolated THEN
           'waiting to run alone on an executor that holds no other run: it was recovered from an executor that '
           'died while running it with others'
       WHEN rate.until IS NOT NULL THEN
           'rate limit until ' || to_char(rate.until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
       WHEN q.max_concurrency IS NOT NULL AND running.n >= q.max_concurrency THEN
           format('concurrency full (%s running)', running.n)
       WHEN t.concurrency_key IS NOT NULL AND q.concurrency_per_key IS NOT NULL
            AND keyed.n + keyed.before >= q.concurrency_per_key THEN
           format('key limit: %s runs of key %s running', keyed.n, t.concurrency_key)
           || CASE WHEN keyed.before > 0 THEN format(' and %s due before it', keyed.before) ELSE '' END
       ELSE '{ready}'
       END AS waiting_for
FROM {s}.task AS t
LEFT JOIN {s}.task_queue AS q ON q.name = t.queue
LEFT JOIN LATERAL (
    SELECT count(*)::int AS n FROM {s}.task AS r
    WHERE r.queue = t.queue AND {busy_r} AND r.queue IS NOT NULL AND r.parent_id IS NULL
) AS running ON t.status IN ('queued', 'scheduled')
LEFT JOIN LATERAL (
    SELECT (SELECT count(*)::int FROM {s}.task AS r
            WHERE r.queue = t.queue AND r.concurrency_key = t.concurrency_key AND {busy_r}
              AND r.queue IS NOT NULL AND r.parent_id IS NULL) AS n,
           (SELECT count(*)::int FROM (
                SELECT 1 FROM {s}.task AS w
                WHERE w.queue = t.queue AND w.concurrency_key = t.concurrency_key
                  AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
                  AND w.run_at <= now() AND NOT w.isolated
                  AND (w.priority > t.priority OR (w.priority = t.priority AND (w.run_at, w.id) < (t.run_at, t.id)))
                LIMIT q.concurrency_per_key) AS earlier) AS before
) AS keyed ON t.status IN ('queued', 'scheduled') AND t.concurrency_key IS NOT NULL
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

/// Registers the executor `$2` of owner `$1`: it runs the functions `$3` at
/// version `$4`.
const REGISTER_EXECUTOR: &str = "
INSERT INTO {s}.executor (owner_id, id, workflows, version) VALUES ($1::text::uuid, $2, $3, $4)
ON CONFLICT (owner_id, id) DO UPDATE SET workflows = EXCLUDED.workflows, version = EXCLUDED.version";

/// Removes the registration of executor `$2` of owner `$1`.
const UNREGISTER_EXECUTOR: &str = "DELETE FROM {s}.executor WHERE owner_id = $1::text::uuid AND id = $2";
