//! Cancelling: a workflow found by its path, and with it (as the caller
//! chooses) every unfinished workflow under it and the runs its workflows
//! enqueued.
//!
//! Holders are told at the commit, by a notification per tree: `<schema>
//! cancel <root id>` when the whole tree is cancelled (a root with its
//! children: the hold ends, as it always did), `<schema> cancel-part <root
//! id>` when only part of it is (a child, or a root without its children):
//! the holder then reads which workflows of that tree are cancelled, and
//! only their handles stop (see `lease::holds`).

use std::collections::BTreeMap;

use crate::engine::Engine;
use crate::engine::connect::config::{show_path, validate_path};
use crate::engine::error::EngineError;
use crate::engine::read::tree::PATH;
use crate::engine::sql::Sql;
use crate::engine::wait::suspend::WAKE_ROOT;
use crate::engine::workflow::col;

/// What a cancel reaches besides the workflow it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelScope {
    /// Every unfinished workflow under it too (children, theirs...).
    pub children: bool,
    /// The runs enqueued by the workflows it cancels (recorded in
    /// `task.enqueued_by`), and theirs, each cancelled the same way.
    pub enqueued: bool,
}

impl Default for CancelScope {
    /// What `durable.cancel` always did: the workflow and everything under it.
    fn default() -> Self {
        CancelScope {
            children: true,
            enqueued: false,
        }
    }
}

/// Cancels the workflow at the path `$1` and, with `$3`, every workflow
/// under it, with `$4` every root that a workflow of the scope enqueued
/// (the scope grows through both, so a run enqueued by a cancelled child
/// is reached, and what that run enqueued): those not finished (and failed
/// ones, so that they are not run again). Tells the holders of each tree
/// (`$2` the schema; see the module's doc). Identical notifications of one
/// transaction are delivered once. A root that goes on while part of its
/// tree was cancelled is woken (`waits::WAKE_ROOT`): suspended, it is due
/// now, to replay up to the cancelled child, which may have been what it
/// waited for (a child's `recv`). One row per workflow cancelled.
///
/// Indexes: `task_child_name` for the children, `task_enqueued_by` for the
/// enqueued runs.
pub(crate) const CANCEL: Sql = Sql::new(
    "{path}, scope(id) AS (
    SELECT id FROM path WHERE depth = cardinality($1::text[])
    UNION
    SELECT reached.id FROM scope, LATERAL (
        SELECT c.id FROM {schema}.task AS c
        WHERE $3::bool AND c.parent_id = scope.id AND c.kind = 'workflow'
        UNION ALL
        SELECT e.id FROM {schema}.task AS e
        WHERE $4::bool AND e.enqueued_by = scope.id AND e.parent_id IS NULL
    ) AS reached
), cancelled AS (
    UPDATE {schema}.task AS t
    SET status = 'cancelled', completed_at = now(), updated_at = now()
    FROM scope
    WHERE t.id = scope.id AND t.kind = 'workflow'
      AND t.status IN ('pending', 'queued', 'scheduled', 'running', 'failed')
    RETURNING t.id, t.root_id, (t.parent_id IS NULL) AS is_root
), trees AS (
    SELECT root_id, bool_or(is_root) AND $3::bool AS whole FROM cancelled GROUP BY root_id
), root AS (
    -- The roots that go on while part of their tree was cancelled (not
    -- one updated above: a row is updated once per statement).
    SELECT DISTINCT c.root_id AS id FROM cancelled AS c
    WHERE NOT EXISTS (SELECT 1 FROM cancelled AS r WHERE r.id = c.root_id)
), {wake}
SELECT c.id, c.root_id, trees.whole,
       pg_notify('durable', $2::text || CASE WHEN trees.whole THEN ' cancel ' ELSE ' cancel-part ' END
                            || c.root_id) IS NULL AS notify,  -- evaluated for its effect
       (SELECT count(pg_notify('durable', $2::text || ' queued ' || coalesce(queue, '')))
        FROM woken WHERE made_due) AS woken
FROM cancelled AS c JOIN trees ON trees.root_id = c.root_id",
)
.with(&[("path", PATH), ("wake", WAKE_ROOT)]);

/// The workflows of the tree of root `$1` that are cancelled.
pub(crate) const CANCELLED_IN_TREE: Sql = Sql::new(
    "
SELECT id FROM {schema}.task WHERE root_id = $1 AND kind = 'workflow' AND status = 'cancelled'",
);

impl Engine {
    /// Cancels the workflow at `path` (the root's name, then each child's)
    /// and what `scope` adds to it. Their holders are told at once (a
    /// notification on their liveness session) and start no further step in
    /// the workflows cancelled; a body already running finishes, its result
    /// refused. Returns false when nothing was cancelled: there is no such
    /// workflow, or it and everything in the scope had finished.
    pub async fn cancel(&self, path: &[String], scope: CancelScope) -> Result<bool, EngineError> {
        validate_path(path)?;
        self.check_open()?;
        let schema = self.schema();
        let context = format!("cancelling workflow {}", show_path(path));
        let rows = retrying!(self, &context, |client| async {
            let statement = client.prepare_cached(&self.inner.sql.cancel).await?;
            client
                .query(&statement, &[&path, &schema, &scope.children, &scope.enqueued])
                .await
        })?;
        // This engine's own holds learn at once, without waiting for the notification.
        let mut trees: BTreeMap<i64, (bool, Vec<i64>)> = BTreeMap::new();
        for row in &rows {
            let tree = trees.entry(col(row, "root_id")?).or_default();
            tree.0 = col(row, "whole")?;
            tree.1.push(col(row, "id")?);
        }
        for (root, (whole, ids)) in &trees {
            if *whole {
                self.inner.holds.cancelled(*root);
            } else {
                self.inner.holds.cancelled_part(*root, ids);
            }
        }
        Ok(!rows.is_empty())
    }

    /// The ids of the cancelled workflows of the tree of root `root_id`.
    pub(crate) async fn cancelled_workflows(&self, root_id: i64) -> Result<Vec<i64>, EngineError> {
        self.check_open()?;
        let rows = retrying!(self, "reading the cancelled workflows of a tree", |client| async {
            let statement = client.prepare_cached(&self.inner.sql.cancelled_in_tree).await?;
            client.query(&statement, &[&root_id]).await
        })?;
        rows.iter().map(|row| col(row, "id")).collect()
    }
}
