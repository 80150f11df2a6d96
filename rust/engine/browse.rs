//! What `durable ui` reads beyond `list_runs`: a page of roots below a
//! keyset cursor (an id), and the status tabs' counts, each capped so that
//! no refresh counts a whole table; and `tree`. Each runs in a read-only
//! transaction under a statement timeout.
//!
//! The live pages poll a version of what they show (`runs_version`,
//! `tree_version`): a digest of the rows' ids and row versions (`xmin`,
//! which every UPDATE renews, whatever columns it sets). Not the greatest
//! `updated_at`: that is the writing transaction's start (`now()`), so a
//! transaction that commits after a poll could bring an older one, and the
//! change would be missed.

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
    /// A digest of the rows `page` would return (their ids and row
    /// versions), same parameters: the same index range, without reading
    /// the inputs and outputs (TOAST).
    pub page_version: String,
    /// A digest of the rows of the tree of the root named `$1`, and their
    /// count (0: no such root). One index range (`task_root`).
    pub tree_version: String,
}

/// The digest of the rows of `shown` (columns `id` and `xmin`).
const DIGEST: &str = "md5(coalesce(string_agg(shown.id::text || ':' || shown.xmin::text, ',' ORDER BY shown.id), ''))";

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
            page_version: fill(&format!(
                "SELECT {DIGEST} AS digest FROM (
                    SELECT t.id, t.xmin FROM {{s}}.task AS t
                    WHERE {MATCHES} AND ($1::text IS NULL OR t.status = $1) AND ($8::int8 IS NULL OR t.id < $8)
                    ORDER BY t.id DESC
                    LIMIT $5) AS shown"
            )),
            tree_version: fill(&format!(
                "SELECT count(*)::int8 AS n, {DIGEST} AS digest FROM (
                    SELECT t.id, t.xmin FROM {{s}}.task AS t
                    WHERE t.root_id = (SELECT r.id FROM {{s}}.task AS r WHERE r.parent_id IS NULL AND r.name = $1)
                 ) AS shown"
            )),
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

    /// A version of `browse_runs`'s answer for the same arguments: another
    /// value when a run would appear, leave or change in it.
    pub async fn runs_version(
        &self,
        filter: &RunFilter<'_>,
        workflow: Option<&str>,
        input: Option<&str>,
        before: Option<i64>,
        timeout: Duration,
    ) -> Result<String, EngineError> {
        self.check_open()?;
        let sql = &self.inner.sql;
        let opening = read_only(timeout);
        let row = retrying!(self, "reading the version of a list of workflows", |client| async {
            let tx = client.transaction().await?;
            tx.batch_execute(&opening).await?;
            let statement = tx.prepare_cached(&sql.browse.page_version).await?;
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
            let row = tx.query_one(&statement, &params).await?;
            tx.commit().await?;
            Ok(row)
        })?;
        col(&row, "digest")
    }

    /// A version of the tree of the root of `path` (the workflow's and
    /// everything else under that root: another value when any of it
    /// changes); `None` if there is no such root.
    pub async fn tree_version(&self, path: &str, timeout: Duration) -> Result<Option<String>, EngineError> {
        let names = path_names(path)?;
        self.check_open()?;
        let sql = &self.inner.sql;
        let opening = read_only(timeout);
        let root = &names[0];
        let row = retrying!(
            self,
            &format!("reading the version of workflow {path:?}"),
            |client| async {
                let tx = client.transaction().await?;
                tx.batch_execute(&opening).await?;
                let statement = tx.prepare_cached(&sql.browse.tree_version).await?;
                let row = tx.query_one(&statement, &[root]).await?;
                tx.commit().await?;
                Ok(row)
            }
        )?;
        let count: i64 = col(&row, "n")?;
        (count > 0).then(|| col(&row, "digest")).transpose()
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
}
