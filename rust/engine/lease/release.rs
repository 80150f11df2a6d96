//! Giving a held root back in the database, so that anyone may take its
//! tree over at once.

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
