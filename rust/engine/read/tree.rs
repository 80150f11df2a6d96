//! A workflow with everything under it: its steps and its child workflows,
//! recursively. Read-only, like the views of `runs`.

use std::collections::HashMap;

use tokio_postgres::Row;

use crate::engine::Engine;
use crate::engine::connect::config::{show_path, validate_path};
use crate::engine::error::EngineError;
use crate::engine::lease::owner::CONNECTED;
use crate::engine::read::runs::{BUSY_R, COLUMNS, READY, RunInfo, read_info};
use crate::engine::sql::Sql;
use crate::engine::workflow::{Kind, col};

/// A workflow and what ran under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowTree {
    /// The workflow itself.
    pub info: RunInfo,
    /// Its steps, in the order they were first recorded (a step's `path`
    /// is its name alone).
    pub steps: Vec<RunInfo>,
    /// Its child workflows, in the order they were created.
    pub children: Vec<WorkflowTree>,
}

impl Engine {
    /// The workflow at `path` (the root's name, then each child's) with
    /// its steps and children, recursively; `None` if there is none. One
    /// statement, so the tree is one consistent snapshot.
    pub async fn tree(&self, path: &[String]) -> Result<Option<WorkflowTree>, EngineError> {
        validate_path(path)?;
        self.check_open()?;
        let sql = &self.inner.sql;
        let rows = retrying!(
            self,
            &format!("reading the tree of workflow {}", show_path(path)),
            |client| async {
                let statement = client.prepare_cached(&sql.tree).await?;
                client.query(&statement, &[&path]).await
            }
        )?;
        let mut rows = rows.iter();
        let Some(top) = rows.next() else {
            return Ok(None);
        };
        // Rows come in id order: a parent before anything under it.
        let mut under: HashMap<i64, Vec<&Row>> = HashMap::new();
        for row in rows {
            under.entry(col(row, "parent_id")?).or_default().push(row);
        }
        build(top, &path[..path.len() - 1], &mut under).map(Some)
    }
}

/// The tree of the workflow `row`, under the workflow at `parent` (empty:
/// a root), taking what is under it from `under`.
pub(super) fn build(
    row: &Row,
    parent: &[String],
    under: &mut HashMap<i64, Vec<&Row>>,
) -> Result<WorkflowTree, EngineError> {
    let info = read_info(row, parent)?;
    let mut tree = WorkflowTree {
        steps: Vec::new(),
        children: Vec::new(),
        info,
    };
    for row in under.remove(&tree.info.id).unwrap_or_default() {
        let kind: &str = col(row, "kind")?;
        if kind == Kind::Step.as_str() {
            tree.steps.push(read_info(row, &[])?);
        } else {
            let child = build(row, &tree.info.path, under)?;
            tree.children.push(child);
        }
    }
    Ok(tree)
}

/// The workflows along the path `$1` (`text[]` of names), each with its
/// depth: the one at the path is `depth = cardinality($1)`.
pub(crate) const PATH: &str = "WITH RECURSIVE path(id, depth) AS (
    SELECT id, 1 FROM {schema}.task WHERE parent_id IS NULL AND name = ($1::text[])[1]
    UNION ALL
    SELECT c.id, path.depth + 1 FROM path
    JOIN {schema}.task AS c ON c.parent_id = path.id AND c.name = ($1::text[])[path.depth + 1]
    WHERE c.kind = 'workflow'
)";

/// The workflow at the path `$1` (an array of names) and every row under it,
/// in id order (the workflow first).
pub(crate) const TREE: Sql = Sql::new(
    "{path}, sub(id) AS (
             SELECT id FROM path WHERE depth = cardinality($1::text[])
             UNION ALL
             SELECT c.id FROM sub JOIN {schema}.task AS c ON c.parent_id = sub.id
         )
         {columns}
         JOIN sub ON sub.id = t.id
         ORDER BY t.id",
)
.with(&[
    ("path", PATH),
    ("columns", COLUMNS),
    ("ready", READY),
    ("connected", CONNECTED),
    ("busy_r", BUSY_R),
]);
