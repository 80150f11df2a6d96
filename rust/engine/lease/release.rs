//! Giving a held root back in the database, so that anyone may take its
//! tree over at once.

use crate::engine::sql::Sql;
use crate::engine::{Engine, WorkflowId};

impl Engine {
    /// Gives up the root `root` and its tree in the database, so that anyone
    /// may take it over at once. Best effort: an unreachable database leaves
    /// the lease to run out as a dead process's would.
    pub(crate) async fn release(&self, root: WorkflowId) {
        if self.check_open().is_err() {
            return;
        }
        let owner = self.owner_id();
        let schema = self.schema();
        let _ = retrying!(self, "releasing a workflow", |client| async {
            let statement = client.prepare_cached(&self.inner.sql.release).await?;
            client
                .execute(&statement, &[&root.id, &owner, &root.epoch, &schema])
                .await
        });
    }

    /// `release`, spawned: for drops, which cannot wait.
    pub(super) fn release_soon(&self, root: WorkflowId) {
        let engine = self.clone();
        self.inner.runtime.spawn(async move { engine.release(root).await });
    }
}

/// Gives up the root `$1` that this owner `$2` holds under epoch `$3`, and
/// every workflow of its tree this owner holds, so that anyone may take the
/// tree over at once. A running root with a registered function goes back
/// to waiting (`queued`), for an executor that knows it. A cancelled root
/// (its holder stopped its body) stops counting in its queue. A no-op once
/// the root was taken again (a later epoch), so a late release never undoes
/// a newer claim. Wakes the executors (`$4` the schema).
pub(crate) const RELEASE: Sql = Sql::new(
    "
WITH root AS (
    SELECT id, workflow, queue, status FROM {schema}.task
    WHERE id = $1 AND owner_id = $2::text::uuid AND lease_epoch = $3 AND status IN ('running', 'cancelled')
    FOR UPDATE
), released AS (
    UPDATE {schema}.task AS t SET owner_id = NULL, updated_at = now(),
        status = CASE WHEN t.id = root.id AND root.status = 'running' AND root.workflow IS NOT NULL
                      THEN 'queued' ELSE t.status END,
        run_at = CASE WHEN t.id = root.id AND root.status = 'running' AND root.workflow IS NOT NULL
                      THEN now() ELSE t.run_at END,
        waiting = NULL, waiting_on = NULL
    FROM root
    WHERE t.root_id = root.id AND t.kind = 'workflow' AND t.status IN ('running', 'cancelled')
      AND t.owner_id = $2::text::uuid
    RETURNING t.id
)
SELECT count(*) AS released,
       (SELECT left(pg_notify('durable', $4::text || ' queued ' || coalesce(queue, ''))::text, 0)
        FROM root WHERE workflow IS NOT NULL) AS notify
FROM released",
);
