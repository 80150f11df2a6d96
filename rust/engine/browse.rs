//! What `durable ui` reads beyond `list_runs`: a page of roots below a
//! keyset cursor (an id), and the status tabs' counts, each capped so that
//! no refresh counts a whole table; and `tree`. Each runs in a read-only
//! transaction under a statement timeout.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Row;

use super::Engine;
use super::config::path_names;
use super::error::EngineError;
use super::info::{COLUMNS, RunFilter, RunInfo, read_info};
use super::tree::{WorkflowTree, build};
use super::workflow::col;

/// The roots that `list_runs`'s filter (but its status, `$1`) matches, whose
/// function is `$6` and whose input satisfies the JSON path predicate `$7`
/// (`$.day == 1`; unknown counts as false).
const MATCHES: &str = "t.parent_id IS NULL
   AND ($2::text IS NULL OR t.queue = $2)
   AND ($6::text IS NULL OR t.workflow = $6)
   AND ($7::text IS NULL OR coalesce(t.input @@ $7::text::jsonpath, false))
   AND ($3::text IS NULL OR starts_with(t.name, $3))
   AND ($4::int8 IS NULL OR t.created_at >= 'epoch'::timestamptz + $4 * interval '1 microsecond')";

#[derive(Debug)]
pub(crate) struct BrowseStatements {
    /// `list`'s rows, with ids below `$8` (NULL: from the newest).
    pub page: String,
    /// Per status of `$1` (a NULL element: any status), how many roots
    /// match, counting at most `$5`.
    pub counts: String,
    /// The names of the registered functions known cheaply: the scheduled
    /// ones, those the executors declared, and those of the newest `$1`
    /// roots (`durable ui`'s start page suggests them).
    pub workflows: String,
}

impl BrowseStatements {
    pub(crate) fn new(fill: impl Fn(&str) -> String) -> Self {
        BrowseStatements {
            page: fill(&format!(
                "{COLUMNS}
                 WHERE {MATCHES} AND ($1::text IS NULL OR t.status = $1) AND ($8::int8 IS NULL OR t.id < $8)
                 ORDER BY t.id DESC
                 LIMIT $5"
            )),
            counts: fill(&format!(
                "SELECT (SELECT count(*) FROM (
                            SELECT 1 FROM {{s}}.task AS t
                            WHERE {MATCHES} AND (s.status IS NULL OR t.status = s.status)
                            LIMIT $5) AS capped)::int8 AS n
                 FROM unnest($1::text[]) WITH ORDINALITY AS s(status, i)
                 ORDER BY s.i"
            )),
            workflows: fill(
                "SELECT known.workflow FROM (
                     SELECT workflow FROM {s}.task_schedule
                     UNION SELECT unnest(workflows) FROM {s}.owner WHERE workflows IS NOT NULL
                     UNION SELECT recent.workflow FROM (
                         SELECT t.workflow FROM {s}.task AS t
                         WHERE t.parent_id IS NULL ORDER BY t.id DESC LIMIT $1) AS recent
                 ) AS known
                 WHERE known.workflow IS NOT NULL
                 ORDER BY known.workflow
                 LIMIT 1000",
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

impl Engine {
    /// The roots that match `filter` with ids below `before`, newest first.
    pub async fn browse_runs(
        &self,
        filter: &RunFilter<'_>,
        workflow: Option<&str>,
        input: Option<&str>,
        before: Option<i64>,
        timeout: Duration,
    ) -> Result<Vec<RunInfo>, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let opening = read_only(timeout);
        let rows = retrying!(self, "listing workflows", |client| async {
            let tx = client.transaction().await?;
            tx.batch_execute(&opening).await?;
            let statement = tx.prepare_cached(&sql.browse.page).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
                &filter.status,
                &filter.queue,
                &filter.name_prefix,
                &filter.since,
                &filter.limit,
                &workflow,
                &input,
                &before,
            ];
            let rows = tx.query(&statement, &params).await?;
            tx.commit().await?;
            Ok(rows)
        })?;
        rows.iter().map(|row| read_info(row, None)).collect()
    }

    /// `tree` (the workflow at `path` with everything under it), under `timeout`.
    pub async fn browse_tree(&self, path: &str, timeout: Duration) -> Result<Option<WorkflowTree>, EngineError> {
        let names = path_names(path)?;
        self.check_open()?;
        let sql = &self.inner.sql;
        let opening = read_only(timeout);
        let rows = retrying!(
            self,
            &format!("reading the tree of workflow {path:?}"),
            |client| async {
                let tx = client.transaction().await?;
                tx.batch_execute(&opening).await?;
                let statement = tx.prepare_cached(&sql.tree).await?;
                let rows = tx.query(&statement, &[&names]).await?;
                tx.commit().await?;
                Ok(rows)
            }
        )?;
        let mut rows = rows.iter();
        let Some(top) = rows.next() else {
            return Ok(None);
        };
        let mut under: HashMap<i64, Vec<&Row>> = HashMap::new();
        for row in rows {
            under.entry(col(row, "parent_id")?).or_default().push(row);
        }
        build(top, path, &mut under).map(Some)
    }

    /// For each of `statuses` (`None`: any), how many roots match `filter`
    /// (its status and limit unused), `workflow` and `input` (a JSON path
    /// predicate), counting at most `cap`.
    pub async fn count_runs(
        &self,
        statuses: &[Option<String>],
        filter: &RunFilter<'_>,
        workflow: Option<&str>,
        input: Option<&str>,
        cap: i64,
        timeout: Duration,
    ) -> Result<Vec<i64>, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let opening = read_only(timeout);
        let rows = retrying!(self, "counting workflows", |client| async {
            let tx = client.transaction().await?;
            tx.batch_execute(&opening).await?;
            let statement = tx.prepare_cached(&sql.browse.counts).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &statuses,
                &filter.queue,
                &filter.name_prefix,
                &filter.since,
                &cap,
                &workflow,
                &input,
            ];
            let rows = tx.query(&statement, &params).await?;
            tx.commit().await?;
            Ok(rows)
        })?;
        Ok(rows.iter().map(|row| row.get::<_, i64>("n")).collect())
    }

    /// The registered functions' names that are cheap to know (scheduled,
    /// declared by executors, or the function of one of the newest `recent`
    /// roots), sorted; at most 1000. Never a scan of the whole table.
    pub async fn known_workflows(&self, recent: i64, timeout: Duration) -> Result<Vec<String>, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let opening = read_only(timeout);
        let rows = retrying!(self, "listing the known workflows", |client| async {
            let tx = client.transaction().await?;
            tx.batch_execute(&opening).await?;
            let statement = tx.prepare_cached(&sql.browse.workflows).await?;
            let rows = tx.query(&statement, &[&recent]).await?;
            tx.commit().await?;
            Ok(rows)
        })?;
        Ok(rows.iter().map(|row| row.get::<_, String>("workflow")).collect())
    }
}
