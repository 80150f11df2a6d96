//! Starting (or resuming) a workflow: a root, through the starter's group
//! commit, or a child, under its parent's lease; taking over a root whose
//! holder is gone; reading the history a resumed workflow replays.

use std::time::Duration;

use crate::engine::workflow::{self, Access};
use crate::engine::{Engine, EngineError, JsonText, Parent, Started, Status, WorkflowId, validate_name};

/// How often a start that found its root busy looks again (after waiting
/// out the grace of an owner whose session is gone) before it reports it
/// busy: the owner kept coming back, or kept changing.
const MAX_BUSY_TRIES: u32 = 5;

/// The owner of a busy root, as a start saw it.
enum Holder {
    /// Connected, or within its lease with a session still there: busy.
    Alive,
    /// Its session is gone; it has this long left to come back.
    Gone(Duration),
    /// Nobody live holds it any more: try again at once.
    Free,
}

impl Engine {
    /// Creates a workflow, or takes the existing one of that name (under
    /// `parent`, or among roots) and reads its saved history.
    ///
    /// A root taken to run (not a completed one, which only replays) comes
    /// with its `Hold`: keep it (and clones, for the handles of its children)
    /// while working on the workflow. Dropping the last clone releases the
    /// workflow; until then a second start of it in this engine is
    /// `WorkflowBusy`, as from another process.
    ///
    /// Errors: `InputMismatch` for a different input than the saved one,
    /// `WorkflowBusy` when another live holder has it, `Cancelled`,
    /// `LeaseLost` when `parent` is no longer held by this process.
    /// A root whose owner's session is gone is waited for, for the rest of
    /// that owner's grace, then taken over unless the owner came back.
    /// `deadline` applies to a new root only (children share their root's).
    pub async fn start(
        &self,
        parent: Option<Parent<'_>>,
        name: &str,
        input: &JsonText,
        deadline: Option<Duration>,
    ) -> Result<Started, EngineError> {
        validate_name("workflow", name)?;
        self.check_open()?;
        match parent {
            None => self.start_root(name, input, deadline, None).await,
            Some(parent) => self.start_child(parent, name, input).await,
        }
    }

    /// `start` of a root run by the registered function `workflow` (its
    /// `module.qualname`, or the name it was registered under): recorded on
    /// the row, so that executors knowing the function can recover the run
    /// if its holder dies. `OtherWorkflow` if another function owns the name.
    pub async fn start_registered(
        &self,
        name: &str,
        input: &JsonText,
        deadline: Option<Duration>,
        workflow: &str,
    ) -> Result<Started, EngineError> {
        validate_name("workflow", name)?;
        validate_name("registered workflow", workflow)?;
        self.check_open()?;
        self.start_root(name, input, deadline, Some(workflow)).await
    }

    async fn start_root(
        &self,
        name: &str,
        input: &JsonText,
        deadline: Option<Duration>,
        workflow: Option<&str>,
    ) -> Result<Started, EngineError> {
        let reservation = match self.inner.holds.reserve(name).await {
            Ok(reservation) => reservation,
            Err(busy) => return Err(self.input_mismatch(name, input).await?.unwrap_or(busy)),
        };
        let deadline_secs = deadline.map(|d| d.as_secs_f64());
        let mut tries = 0;
        loop {
            // Sent with the other root starts of the moment, in one commit.
            let row = self.inner.starter.start(name, input, deadline_secs, workflow).await?;
            let recorded: Option<String> = workflow::col(&row, "workflow")?;
            if workflow.is_some() && recorded.is_some() && recorded.as_deref() != workflow {
                return Err(EngineError::OtherWorkflow {
                    name: name.to_owned(),
                    workflow: recorded,
                });
            }
            match workflow::read_started(&row, name, None, Access::Take) {
                Err(busy @ EngineError::WorkflowBusy { .. }) if tries < MAX_BUSY_TRIES => {
                    tries += 1;
                    match self.holder(name).await? {
                        Holder::Alive => return Err(busy),
                        Holder::Free => {}
                        // A little past the grace, so the claim's own clock agrees it ran out.
                        Holder::Gone(left) => tokio::time::sleep(left + Duration::from_millis(20)).await,
                    }
                }
                Err(err) => return Err(err),
                Ok(mut started) => {
                    if started.status == Status::Running {
                        started.hold = Some(reservation.hold(self.clone(), started.workflow));
                        if started.created {
                            log::debug!("started workflow '{name}'");
                        } else {
                            log::info!("took over workflow '{name}' (attempt {})", started.attempt);
                        }
                    }
                    return self.with_history(started).await;
                }
            }
        }
    }

    async fn start_child(&self, parent: Parent<'_>, name: &str, input: &JsonText) -> Result<Started, EngineError> {
        let owner = self.owner_id();
        let p = parent.workflow;
        let row = retrying!(self, &format!("starting workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.start_child).await?;
            client
                .query_opt(&statement, &[&name, input, &owner, &p.id, &p.epoch])
                .await
        })?;
        // No row: the parent's lease was refused.
        let Some(row) = row else {
            return Err(self.refusal(parent.workflow).await);
        };
        let started = workflow::read_started(&row, name, Some(parent.name), Access::Take)?;
        self.with_history(started).await
    }

    /// `InputMismatch` if the root `name` exists with another input.
    async fn input_mismatch(&self, name: &str, input: &JsonText) -> Result<Option<EngineError>, EngineError> {
        let row = retrying!(
            self,
            &format!("reading the input of workflow {name:?}"),
            |client| async {
                let statement = client.prepare_cached(&self.inner.sql.root_input).await?;
                client.query_opt(&statement, &[&name, input]).await
            }
        )?;
        let matches = row
            .map(|row| workflow::col::<bool>(&row, "input_matches"))
            .transpose()?;
        Ok((matches == Some(false)).then(|| EngineError::InputMismatch { name: name.to_owned() }))
    }

    /// Who holds the busy root `name`, marking its session gone if it is.
    async fn holder(&self, name: &str) -> Result<Holder, EngineError> {
        let owner = self.owner_id();
        let row = retrying!(self, &format!("checking who holds workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.holder).await?;
            client.query_opt(&statement, &[&name, &owner]).await
        })?;
        let Some(row) = row else {
            return Ok(Holder::Free);
        };
        if workflow::col::<bool>(&row, "connected")? {
            return Ok(Holder::Alive);
        }
        if workflow::col::<bool>(&row, "expired")? {
            return Ok(Holder::Free);
        }
        let left = workflow::col::<Option<f64>>(&row, "grace_left")?.unwrap_or(0.0);
        Ok(Holder::Gone(
            Duration::try_from_secs_f64(left).unwrap_or(Duration::ZERO),
        ))
    }

    /// Reads the child `name` of a finished parent as it is, to replay it:
    /// nothing is taken or written. `InputMismatch` for another input.
    pub async fn replay_child(&self, parent: Parent<'_>, name: &str, input: &JsonText) -> Result<Started, EngineError> {
        validate_name("workflow", name)?;
        self.check_open()?;
        let id = parent.workflow.id;
        let row = retrying!(self, &format!("reading child workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.replay_child).await?;
            client.query_opt(&statement, &[&name, input, &id]).await
        })?;
        let Some(row) = row else {
            return Err(EngineError::WorkflowFinished {
                workflow: parent.name.to_owned(),
                status: "finished",
                what: "child workflow",
                name: name.to_owned(),
            });
        };
        let started = workflow::read_started(&row, name, Some(parent.name), Access::Replay)?;
        self.with_history(started).await
    }

    /// Fills in the history of a workflow that existed before. Runs as a
    /// separate statement after the takeover committed, so it sees every
    /// write the previous holder got in before it.
    async fn with_history(&self, mut started: Started) -> Result<Started, EngineError> {
        if started.created {
            return Ok(started);
        }
        let id = started.workflow.id;
        let rows = retrying!(self, "reading a workflow's history", |client| async {
            let statement = client.prepare_cached(&self.inner.sql.history).await?;
            client.query(&statement, &[&id]).await
        })?;
        started.history = workflow::read_history(&rows)?;
        Ok(started)
    }

    /// Why `workflow` refuses the writes of this process.
    async fn refusal(&self, workflow: WorkflowId) -> EngineError {
        let owner = self.owner_id();
        let id = workflow.id;
        let found = retrying!(self, "checking a workflow's lease", |client| async {
            client.query_opt(&self.inner.sql.diagnose, &[&vec![id], &owner]).await
        });
        match found.map(|row| row.map(|row| workflow::refusal(&row, workflow.epoch, "child workflow"))) {
            Ok(Some(Ok((_, Some(reason))))) => reason,
            // Its fence would pass: the refusal came from somewhere else.
            Ok(Some(Ok((_, None)))) => EngineError::Unexpected(format!("workflow id {id} refused a child start")),
            Ok(Some(Err(err))) | Err(err) => err,
            Ok(None) => workflow::vanished(id),
        }
    }
}
