//! Saving what a workflow did: its steps' `running` markers and outcomes,
//! and its own result, through the checkpoint writer.

use crate::engine::{AttemptTimes, Engine, EngineError, Outcome, WorkflowId};

impl Engine {
    /// Queues the `running` marker of a step's attempt, begun at
    /// `started_us` (`now_us`), to be written without anyone waiting: a
    /// step's body starts at once.
    pub fn step_started(
        &self,
        workflow: WorkflowId,
        name: &str,
        attempt: i32,
        started_us: i64,
    ) -> Result<(), EngineError> {
        self.check_open()?;
        self.inner.writer.step_started(workflow, name, attempt, started_us)
    }

    /// Writes the `running` marker of a step's attempt, begun at
    /// `started_us`, and waits for its commit: for steps that must not run
    /// twice, the marker must be durable first.
    pub async fn step_started_durably(
        &self,
        workflow: WorkflowId,
        name: String,
        attempt: i32,
        started_us: i64,
    ) -> Result<(), EngineError> {
        self.check_open()?;
        self.inner
            .writer
            .step_started_durably(workflow, name, attempt, started_us)
            .await
    }

    /// Saves a step's result or error, and when its attempt ran; resolves
    /// after the commit.
    pub async fn step_finished(
        &self,
        workflow: WorkflowId,
        name: String,
        attempt: i32,
        outcome: Outcome,
        times: AttemptTimes,
    ) -> Result<(), EngineError> {
        self.check_open()?;
        let status = outcome.status();
        let debug = log::log_enabled!(log::Level::Debug).then(|| name.clone());
        self.inner
            .writer
            .step_finished(workflow, name, attempt, outcome, times)
            .await?;
        if let Some(name) = debug {
            log::debug!(
                "step '{name}' of workflow #{} {} (attempt {attempt})",
                workflow.id,
                status.as_str()
            );
        }
        Ok(())
    }

    /// Saves a workflow's result or error; resolves after the commit. A root
    /// that finished is no longer held: its name is free (a failed root may
    /// be started again at once) and the handles of its tree stop.
    pub async fn workflow_finished(&self, workflow: WorkflowId, outcome: Outcome) -> Result<(), EngineError> {
        self.check_open()?;
        let status = outcome.status();
        self.inner.writer.workflow_finished(workflow, outcome).await?;
        log::debug!("workflow #{} {}", workflow.id, status.as_str());
        if workflow.id == workflow.root_id {
            self.inner.holds.finished(workflow, status);
        }
        Ok(())
    }
}
