//! What `durable ui` reads beyond `list_runs`: a page of roots below a
//! keyset cursor (an id), and the status tabs' counts, each capped so that
//! no refresh counts a whole table; and `tree` with the history of its
//! attempts and the messages of its workflows (the run page's timeline).
//! Each runs in a read-only transaction under a statement timeout.
//!
//! The live pages poll a version of what they show (`runs_version`,
//! `tree_version`): a digest of the rows' ids and row versions (`xmin`,
//! which every UPDATE renews, whatever columns it sets). Not the greatest
//! `updated_at`: that is the writing transaction's start (`now()`), so a
//! transaction that commits after a poll could bring an older one, and the
//! change would be missed. (A new attempt's history row comes with an
//! update of its task's row, so the tree's version changes with it.)

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Row;

use super::config::{show_path, validate_path};
use super::error::EngineError;
use super::info::{COLUMNS, RunFilter, RunInfo, read_info};
use super::jsonb::JsonText;
use super::moment::Moment;
use super::queue_info::{QueueInfo, read_queue};
use super::tree::{PATH, WorkflowTree, build};
use super::workflow::{Kind, col};
use super::{Engine, validate_name};

/// The runs that `list_runs`'s filter (but its status, `$1`) matches, with
/// ids below `$8`, whose function is `$6`, whose input satisfies the JSON
/// path predicate `$7` (`$.day == 1`; unknown counts as false), created
/// before `$10`: the roots, or with `$9` the child workflows of the
/// workflow whose id it is. (Plans are made for the values at hand, so the
/// CASE folds to one of its branches: `parent_id IS NULL` lets the partial
/// indexes of roots be used.)
const MATCHES: &str = "(CASE WHEN $9::int8 IS NULL THEN t.parent_id IS NULL
         ELSE t.parent_id = $9 AND t.kind = 'workflow' END)
   AND ($8::int8 IS NULL OR t.id < $8)
   AND ($10::int8 IS NULL OR t.created_at < 'epoch'::timestamptz + $10 * interval '1 microsecond')
   AND ($2::text IS NULL OR t.queue = $2)
   AND ($6::text IS NULL OR t.workflow = $6)
   AND ($7::text IS NULL OR coalesce(t.input @@ $7::text::jsonpath, false))
   AND ($3::text IS NULL OR starts_with(t.name, $3))
   AND ($4::int8 IS NULL OR t.created_at >= 'epoch'::timestamptz + $4 * interval '1 microsecond')";

#[derive(Debug)]
pub(crate) struct BrowseStatements {
    /// `list`'s rows, newest first.
    pub page: String,
    /// How many runs of the `{i}`th status of `$1` (NULL: any status)
    /// match, counting at most `$5` (see `counts`).
    count: String,
    /// The id of the workflow at the path `$1` (its names).
    pub resolve: String,
    /// The roots named in `$1`, newest first.
    pub named: String,
    /// Every schedule, by function and spec.
    pub schedules: String,
    /// How many roots there are, as the planner estimates it (the size of
    /// the partial index of roots' names): instant on any table.
    pub estimate: String,
    /// For the waiting root `$1`, how many due roots of its queue come
    /// before it in claim order (priority, due time, id), counting at most
    /// `$2`; no row when it is not waiting in a queue.
    pub ahead: String,
    /// The names of the registered functions known cheaply: the scheduled
    /// ones, those the executors declared, and those of the newest `$1`
    /// roots (`durable ui`'s start page suggests them).
    pub workflows: String,
    /// A digest of the rows `page` would return (their ids and row
    /// versions), same parameters: the same index range, without reading
    /// the inputs and outputs (TOAST).
    pub page_version: String,
    /// A digest of the rows of the tree of the root named `$1`, and their
    /// count (0: no such root). One index range (`task_root`).
    pub tree_version: String,
    /// The past attempts (`task_attempt`) of the tasks `$1`.
    pub attempts: String,
    /// The messages sent to the workflows `$1`, at most `MESSAGES_SHOWN`.
    pub messages: String,
    /// Which of the steps `$1` are sleeps (`Engine::save_sleep`).
    pub sleeps: String,
    /// The JSON text of the column named `$2` of the task `$1`.
    pub value: String,
}

/// The most messages a run page reads (the oldest first).
const MESSAGES_SHOWN: i64 = 1000;

/// A past attempt of a task (see `task_attempt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptInfo {
    pub task_id: i64,
    pub attempt: i32,
    /// `completed`, `failed`, `cancelled` or `interrupted`.
    pub status: String,
    pub started_at: Option<Moment>,
    /// `None` when interrupted (unknown).
    pub ended_at: Option<Moment>,
    /// When the next attempt began.
    pub replaced_at: Moment,
    pub error: Option<JsonText>,
}

/// A message sent to a workflow: when, and when which step received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    pub task_id: i64,
    pub topic: String,
    pub sent_at: Moment,
    pub received_at: Option<Moment>,
    /// The `recv` step that took it.
    pub received_by: Option<String>,
}

/// A tree as the run page reads it: the tree, the past attempts of its
/// tasks, the messages sent to its workflows, and which of its steps are
/// sleeps, from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsedTree {
    pub tree: WorkflowTree,
    pub attempts: Vec<AttemptInfo>,
    pub messages: Vec<MessageInfo>,
    /// The ids of its steps that are sleeps (`Engine::save_sleep`): their
    /// output is a wake-up time, not a value of the workflow's.
    pub sleeps: Vec<i64>,
}

/// The digest of the rows of `shown` (columns `id` and `xmin`).
const DIGEST: &str = "md5(coalesce(string_agg(shown.id::text || ':' || shown.xmin::text, ',' ORDER BY shown.id), ''))";

impl BrowseStatements {
    /// Per status of `$1` (`n` of them), how many runs match: a row of
    /// one `int8[]`. One subquery per status, rather than one over
    /// `unnest($1)`, so that each is planned for its status (a constant in
    /// a custom plan): a rare status is then an index range, not a scan of
    /// every root (on a million runs: 1.5 s -> 1 ms for the seven tabs).
    pub(crate) fn counts(&self, n: usize) -> String {
        let each: Vec<String> = (1..=n).map(|i| self.count.replace("{i}", &i.to_string())).collect();
        format!("SELECT ARRAY[{}]::int8[] AS n", each.join(", "))
    }

    pub(crate) fn new(fill: impl Fn(&str) -> String) -> Self {
        BrowseStatements {
            page: fill(&format!(
                "{COLUMNS}
                 WHERE {MATCHES} AND ($1::text IS NULL OR t.status = $1)
                 ORDER BY t.id DESC
                 LIMIT $5"
            )),
            count: fill(&format!(
                "(SELECT count(*) FROM (
                     SELECT 1 FROM {{s}}.task AS t
                     WHERE {MATCHES} AND (($1::text[])[{{i}}] IS NULL OR t.status = ($1::text[])[{{i}}])
                     LIMIT $5) AS capped)"
            )),
            resolve: fill(&format!(
                "{PATH} SELECT id FROM path WHERE depth = cardinality($1::text[])"
            )),
            named: fill(&format!(
                "{COLUMNS} WHERE t.parent_id IS NULL AND t.name = ANY($1::text[]) ORDER BY t.id DESC"
            )),
            schedules: fill(
                "SELECT workflow, spec, next_tick, seen_at FROM {s}.task_schedule_spec ORDER BY workflow, spec",
            ),
            ahead: fill(
                "SELECT (SELECT count(*) FROM (
                             SELECT 1 FROM {s}.task AS w
                             WHERE w.queue = me.queue AND w.status IN ('queued', 'scheduled')
                               AND w.parent_id IS NULL AND w.run_at <= now()
                               AND (w.priority > me.priority
                                    OR w.priority = me.priority AND (w.run_at, w.id) < (me.run_at, me.id))
                             LIMIT $2) AS before)::int8 AS n
                 FROM {s}.task AS me
                 WHERE me.id = $1 AND me.parent_id IS NULL AND me.queue IS NOT NULL
                   AND me.status IN ('queued', 'scheduled')",
            ),
            estimate: fill(
                "SELECT greatest(c.reltuples, 0)::int8 AS n FROM pg_class AS c
                 WHERE c.oid = to_regclass('{s}.task_root_name')",
            ),
            workflows: fill(
                "SELECT known.workflow FROM (
                     SELECT workflow FROM {s}.task_schedule_spec
                     UNION SELECT unnest(workflows) FROM {s}.executor
                     UNION SELECT recent.workflow FROM (
                         SELECT t.workflow FROM {s}.task AS t
                         WHERE t.parent_id IS NULL ORDER BY t.id DESC LIMIT $1) AS recent
                 ) AS known
                 WHERE known.workflow IS NOT NULL
                 ORDER BY known.workflow
                 LIMIT 1000",
            ),
            page_version: fill(&format!(
                "SELECT {DIGEST} AS digest FROM (
                    SELECT t.id, t.xmin FROM {{s}}.task AS t
                    WHERE {MATCHES} AND ($1::text IS NULL OR t.status = $1)
                    ORDER BY t.id DESC
                    LIMIT $5) AS shown"
            )),
            tree_version: fill(&format!(
                "SELECT count(*)::int8 AS n, {DIGEST} AS digest FROM (
                    SELECT t.id, t.xmin FROM {{s}}.task AS t
                    WHERE t.root_id = (SELECT r.id FROM {{s}}.task AS r WHERE r.parent_id IS NULL AND r.name = $1)
                 ) AS shown"
            )),
            attempts: fill(
                "SELECT a.task_id, a.attempt, a.status, a.started_at, a.ended_at, a.replaced_at, a.error
                 FROM {s}.task_attempt AS a
                 WHERE a.task_id = ANY($1::int8[])
                 ORDER BY a.task_id, a.attempt",
            ),
            messages: fill(&format!(
                "SELECT m.task_id, m.topic, m.created_at AS sent_at, m.received_at, m.received_by
                 FROM {{s}}.task_message AS m
                 WHERE m.task_id = ANY($1::int8[])
                 ORDER BY m.id
                 LIMIT {MESSAGES_SHOWN}"
            )),
            sleeps: fill(
                "SELECT t.id FROM {s}.task AS t
                 WHERE t.id = ANY($1::int8[]) AND t.kind = 'step' AND t.waiting ->> 'kind' = 'sleep'
                 ORDER BY t.id",
            ),
            value: fill(
                "SELECT CASE $2::text WHEN 'input' THEN t.input::text WHEN 'output' THEN t.output::text
                                      WHEN 'error' THEN t.error::text END AS value
                 FROM {s}.task AS t WHERE t.id = $1",
            ),
        }
    }
}

/// The statements that open a read: nothing written, none longer than
/// `timeout`, and planned for the filters given. durable's own statements
/// run with generic plans and no sequential scans (see `config`), which
/// suits their fixed shapes; these are made of optional filters
/// (`$1 IS NULL OR ...`) that only a plan made for the values at hand turns
/// into index scans (on a million runs the list's first page took 6.4 s
/// with generic plans, 137 ms with these: `bench/ui.py`).
fn read_only(timeout: Duration) -> String {
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128);
    format!(
        "SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {millis}; \
         SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_seqscan = on"
    )
}

/// A schedule as stored (times in microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    pub workflow: String,
    /// `cron <expr> <zone>` or `every <seconds>`.
    pub spec: String,
    pub next_tick: Moment,
    /// When an executor that serves it last registered, confirmed or
    /// advanced it.
    pub seen_at: Moment,
}

/// Which runs a read of the ui selects: `list_runs`'s filter (its `limit`:
/// how many runs are read, or counted at most) and more.
#[derive(Debug, Default, Clone, Copy)]
pub struct BrowseFilter<'a> {
    pub runs: RunFilter<'a>,
    /// The root's registered function.
    pub workflow: Option<&'a str>,
    /// A JSON path predicate on the input (`$.day == 1`).
    pub input: Option<&'a str>,
    /// Created before (microseconds since the epoch).
    pub until: Option<i64>,
    /// The child workflows of the workflow at this path (the root's name,
    /// then each child's), instead of the roots.
    pub parent: Option<&'a [String]>,
    /// Only ids below this one (the keyset cursor).
    pub before: Option<i64>,
}

impl Engine {
    /// The runs that match `filter`, newest first.
    pub async fn browse_runs(&self, filter: &BrowseFilter<'_>, timeout: Duration) -> Result<Vec<RunInfo>, EngineError> {
        let page = &self.inner.sql.browse.page;
        let rows = self
            .read_filtered("listing workflows", page, &filter.runs.status, filter, timeout)
            .await?;
        let parent = filter.parent.unwrap_or_default();
        rows.iter().map(|row| read_info(row, parent)).collect()
    }

    /// A version of `browse_runs`'s answer for the same filter: another
    /// value when a run would appear, leave or change in it.
    pub async fn runs_version(&self, filter: &BrowseFilter<'_>, timeout: Duration) -> Result<String, EngineError> {
        let statement = &self.inner.sql.browse.page_version;
        let what = "reading the version of a list of workflows";
        let rows = self
            .read_filtered(what, statement, &filter.runs.status, filter, timeout)
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| EngineError::Unexpected("a digest read returned no row".to_owned()))?;
        col(row, "digest")
    }

    /// A version of the tree of the root named `root` (everything under
    /// it: another value when any of it changes); `None` if there is no
    /// such root.
    pub async fn tree_version(&self, root: &str, timeout: Duration) -> Result<Option<String>, EngineError> {
        validate_name("workflow", root)?;
        self.check_open()?;
        let sql = &self.inner.sql;
        let opening = read_only(timeout);
        let row = retrying!(
            self,
            &format!("reading the version of workflow {root:?}"),
            |client| async {
                let tx = client.transaction().await?;
                tx.batch_execute(&opening).await?;
                let statement = tx.prepare_cached(&sql.browse.tree_version).await?;
                let row = tx.query_one(&statement, &[&root]).await?;
                tx.commit().await?;
                Ok(row)
            }
        )?;
        let count: i64 = col(&row, "n")?;
        (count > 0).then(|| col(&row, "digest")).transpose()
    }

    /// `tree` of the workflow at `path` (the root's name, then each
    /// child's), with the past attempts of its tasks, the messages sent to
    /// its workflows and which of its steps are sleeps, under `timeout`:
    /// four statements of one read-only transaction (a repeatable read, so
    /// they see one snapshot).
    pub async fn browse_tree(&self, path: &[String], timeout: Duration) -> Result<Option<BrowsedTree>, EngineError> {
        validate_path(path)?;
        self.check_open()?;
        let sql = &self.inner.sql;
        let opening = format!(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; {}",
            read_only(timeout)
        );
        let read = retrying!(
            self,
            &format!("reading the tree of workflow {}", show_path(path)),
            |client| async {
                let tx = client.transaction().await?;
                tx.batch_execute(&opening).await?;
                let statement = tx.prepare_cached(&sql.tree).await?;
                let rows = tx.query(&statement, &[&path]).await?;
                let ids: Vec<i64> = rows.iter().map(|row| row.get::<_, i64>("id")).collect();
                let statement = tx.prepare_cached(&sql.browse.attempts).await?;
                let attempts = tx.query(&statement, &[&ids]).await?;
                let workflows: Vec<i64> = rows
                    .iter()
                    .filter(|row| row.get::<_, &str>("kind") == Kind::Workflow.as_str())
                    .map(|row| row.get::<_, i64>("id"))
                    .collect();
                let statement = tx.prepare_cached(&sql.browse.messages).await?;
                let messages = tx.query(&statement, &[&workflows]).await?;
                let steps: Vec<i64> = rows
                    .iter()
                    .filter(|row| row.get::<_, &str>("kind") == Kind::Step.as_str())
                    .map(|row| row.get::<_, i64>("id"))
                    .collect();
                let statement = tx.prepare_cached(&sql.browse.sleeps).await?;
                let sleeps = tx.query(&statement, &[&steps]).await?;
                tx.commit().await?;
                Ok((rows, attempts, messages, sleeps))
            }
        )?;
        let (rows, attempts, messages, sleeps) = read;
        let mut rows = rows.iter();
        let Some(top) = rows.next() else {
            return Ok(None);
        };
        let mut under: HashMap<i64, Vec<&Row>> = HashMap::new();
        for row in rows {
            under.entry(col(row, "parent_id")?).or_default().push(row);
        }
        Ok(Some(BrowsedTree {
            tree: build(top, &path[..path.len() - 1], &mut under)?,
            attempts: attempts.iter().map(read_attempt).collect::<Result<_, _>>()?,
            messages: messages.iter().map(read_message).collect::<Result<_, _>>()?,
            sleeps: sleeps.iter().map(|row| col(row, "id")).collect::<Result<_, _>>()?,
        }))
    }

    /// For each of `statuses` (`None`: any), how many runs match `filter`
    /// but its status, counting at most its limit.
    pub async fn count_runs(
        &self,
        statuses: &[Option<String>],
        filter: &BrowseFilter<'_>,
        timeout: Duration,
    ) -> Result<Vec<i64>, EngineError> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let statement = self.inner.sql.browse.counts(statuses.len());
        let rows = self
            .read_filtered("counting workflows", &statement, &statuses, filter, timeout)
            .await?;
        rows.first().map_or(Ok(vec![0; statuses.len()]), |row| col(row, "n"))
    }

    /// How many due runs of its queue come before the waiting root `id` in
    /// claim order, counting at most `cap`; `None` when it is not waiting
    /// in a queue. (Keys' turns and rates may reorder them: a guide.)
    pub async fn runs_ahead(&self, id: i64, cap: i64, timeout: Duration) -> Result<Option<i64>, EngineError> {
        let sql = &self.inner.sql;
        let rows = self
            .read_rows(
                "reading a run's place in its queue",
                &sql.browse.ahead,
                &[&id, &cap],
                timeout,
            )
            .await?;
        rows.first().map(|row| col(row, "n")).transpose()
    }

    /// How many roots there are, as the planner estimates it (from the
    /// last VACUUM or ANALYZE): instant on any table, 0 before the first.
    pub async fn estimate_roots(&self) -> Result<i64, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let row = retrying!(self, "estimating the number of workflows", |client| async {
            let statement = client.prepare_cached(&sql.browse.estimate).await?;
            client.query_opt(&statement, &[]).await
        })?;
        Ok(row.map_or(0, |row| row.get("n")))
    }

    /// The JSON text of the `column` (`input`, `output` or `error`) of the
    /// task `id`, as the database holds it; `None` when there is no such
    /// task or it holds no value there (the run page links to it in place
    /// of a value too large to show).
    pub async fn browse_value(&self, id: i64, column: &str, timeout: Duration) -> Result<Option<String>, EngineError> {
        let sql = &self.inner.sql;
        let rows = self
            .read_rows("reading a value", &sql.browse.value, &[&id, &column], timeout)
            .await?;
        rows.first().map_or(Ok(None), |row| col(row, "value"))
    }

    /// The roots named `names` (any that exist), newest first.
    pub async fn browse_named(&self, names: &[String], timeout: Duration) -> Result<Vec<RunInfo>, EngineError> {
        let sql = &self.inner.sql;
        let rows = self
            .read_rows("reading workflows", &sql.browse.named, &[&names], timeout)
            .await?;
        rows.iter().map(|row| read_info(row, &[])).collect()
    }

    /// `list_queues`, under `timeout`.
    pub async fn browse_queues(&self, timeout: Duration) -> Result<Vec<QueueInfo>, EngineError> {
        let sql = &self.inner.sql;
        let rows = self.read_rows("listing queues", &sql.list_queues, &[], timeout).await?;
        rows.iter().map(read_queue).collect()
    }

    /// Every schedule, by function and spec.
    pub async fn browse_schedules(&self, timeout: Duration) -> Result<Vec<ScheduleRow>, EngineError> {
        let sql = &self.inner.sql;
        let rows = self
            .read_rows("listing schedules", &sql.browse.schedules, &[], timeout)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ScheduleRow {
                    workflow: col(row, "workflow")?,
                    spec: col(row, "spec")?,
                    next_tick: col(row, "next_tick")?,
                    seen_at: col(row, "seen_at")?,
                })
            })
            .collect()
    }

    /// The rows of one of the filtered statements (`page`, `page_version`,
    /// `counts`), read as the others (`read_only`): `$1` is `first` (a
    /// status, or the statuses counted), the rest are the filter's. A
    /// `parent` path is resolved to its id in the same read; one that does
    /// not exist matches nothing.
    async fn read_filtered(
        &self,
        what: &str,
        statement: &str,
        first: &(dyn tokio_postgres::types::ToSql + Sync),
        filter: &BrowseFilter<'_>,
        timeout: Duration,
    ) -> Result<Vec<Row>, EngineError> {
        if let Some(parent) = filter.parent {
            validate_path(parent)?;
        }
        self.check_open()?;
        let resolve = &self.inner.sql.browse.resolve;
        let opening = read_only(timeout);
        retrying!(self, what, |client| async {
            let tx = client.transaction().await?;
            tx.batch_execute(&opening).await?;
            let parent_id: Option<i64> = match filter.parent {
                None => None,
                Some(names) => {
                    let resolve = tx.prepare_cached(resolve).await?;
                    // No such workflow: an id no row has for a parent.
                    Some(tx.query_opt(&resolve, &[&names]).await?.map_or(-1, |row| row.get(0)))
                }
            };
            let statement = tx.prepare_cached(statement).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
                first,
                &filter.runs.queue,
                &filter.runs.name_prefix,
                &filter.runs.since,
                &filter.runs.limit,
                &filter.workflow,
                &filter.input,
                &filter.before,
                &parent_id,
                &filter.until,
            ];
            let rows = tx.query(&statement, &params).await?;
            tx.commit().await?;
            Ok(rows)
        })
    }

    /// The rows of one statement, read as the others (`read_only`).
    async fn read_rows(
        &self,
        what: &str,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        timeout: Duration,
    ) -> Result<Vec<Row>, EngineError> {
        self.check_open()?;
        let opening = read_only(timeout);
        retrying!(self, what, |client| async {
            let tx = client.transaction().await?;
            tx.batch_execute(&opening).await?;
            let statement = tx.prepare_cached(statement).await?;
            let rows = tx.query(&statement, params).await?;
            tx.commit().await?;
            Ok(rows)
        })
    }

    /// The registered functions' names that are cheap to know (scheduled,
    /// declared by executors, or the function of one of the newest `recent`
    /// roots), sorted; at most 1000. Never a scan of the whole table.
    pub async fn known_workflows(&self, recent: i64, timeout: Duration) -> Result<Vec<String>, EngineError> {
        let sql = &self.inner.sql;
        let rows = self
            .read_rows(
                "listing the known workflows",
                &sql.browse.workflows,
                &[&recent],
                timeout,
            )
            .await?;
        rows.iter().map(|row| col(row, "workflow")).collect()
    }
}

fn read_attempt(row: &Row) -> Result<AttemptInfo, EngineError> {
    Ok(AttemptInfo {
        task_id: col(row, "task_id")?,
        attempt: col(row, "attempt")?,
        status: col(row, "status")?,
        started_at: col(row, "started_at")?,
        ended_at: col(row, "ended_at")?,
        replaced_at: col(row, "replaced_at")?,
        error: col(row, "error")?,
    })
}

fn read_message(row: &Row) -> Result<MessageInfo, EngineError> {
    Ok(MessageInfo {
        task_id: col(row, "task_id")?,
        topic: col(row, "topic")?,
        sent_at: col(row, "sent_at")?,
        received_at: col(row, "received_at")?,
        received_by: col(row, "received_by")?,
    })
}
