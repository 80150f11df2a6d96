//! A workflow handle: one started workflow, its saved history, and the
//! names used in this run. Its rules are kept here, synchronously: how a
//! name is looked up in the history (replay, run, or refuse), that each
//! name is used once per run, when a workflow may still be finished, and
//! how a refused write stops the handle (`Run::watch`), and when each step
//! attempt began, by this process's clock, so that its outcome is saved
//! with how long its body ran (`AttemptTimes`). The writes resolve after
//! their commit.
//!
//! A handle of a finished workflow, or of a child read under a finished
//! parent, only replays: what it recorded comes back, nothing new runs.
//!
//! The hold of the handle's tree is kept in a `HoldSlot`, so that an
//! embedder can keep it away from a process that must not use it (the
//! Python bindings: a child of `os.fork()`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::{
    AttemptTimes, Engine, EngineError, HistoryEntry, Hold, JsonText, Kind, Outcome, Parent, Started, Status, Suspended,
    Suspension, Transaction, WorkflowId, now_us, validate_name,
};

/// `type` of the error record of an at-most-once step found interrupted.
const STEP_INTERRUPTED: &str = "StepInterrupted";

/// Where a handle keeps the hold of its tree (see the module's doc).
pub trait HoldSlot: Send + Sync + Sized + 'static {
    /// Keeps `hold` (`None`: a handle that only replays).
    fn keep(hold: Option<Hold>) -> Self;
    /// The hold, if there is one this process may use.
    fn hold(&self) -> Option<&Hold>;
}

impl HoldSlot for Option<Hold> {
    fn keep(hold: Option<Hold>) -> Self {
        hold
    }

    fn hold(&self) -> Option<&Hold> {
        self.as_ref()
    }
}

/// One started workflow as this process runs (or replays) it.
pub struct WorkflowHandle<H: HoldSlot = Option<Hold>> {
    /// The input as saved: what the workflow function is given.
    input: JsonText,
    attempt: i32,
    created: bool,
    deadline: Option<Instant>,
    /// Set for a child read to replay under a finished parent: the parent's
    /// name and status. Such a child replays what it recorded, nothing new.
    within_finished: Option<(String, Status)>,
    run: Arc<Run<H>>,
}

/// What the writes of a handle (and its transaction steps) share with it.
pub struct Run<H: HoldSlot = Option<Hold>> {
    name: String,
    /// The workflow; a cancel of it alone (see `Hold::check`) stops this handle.
    workflow: WorkflowId,
    /// The hold of the tree in this engine (roots taken to run, and their
    /// children); `None` for what only replays.
    hold: H,
    /// True for a root: its end ends the hold.
    is_root: bool,
    state: Mutex<State>,
}

/// What changes while the workflow runs.
struct State {
    status: Status,
    output: Option<JsonText>,
    error: Option<JsonText>,
    history: HashMap<String, HistoryEntry>,
    /// Step and child names used by this run: each may be used once.
    used: HashSet<String>,
    /// The step attempts this run began and has not saved an outcome of:
    /// by name, the attempt and when it began (`now_us`).
    begun: HashMap<String, (i32, i64)>,
    /// Set once a write learns that this process may no longer work on the
    /// workflow (lease lost, cancelled), or the handle was released: every
    /// later call fails with it, so no further step body runs.
    doomed: Option<EngineError>,
    /// True once this run completed or failed the workflow itself.
    finished_here: bool,
}

/// What the history says of a step about to run (`WorkflowHandle::begin_step`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepVerdict {
    /// A previous run completed it: its saved result, and that run's attempt.
    Replay { output: JsonText, attempt: i32 },
    /// Write its marker and run its body as `attempt`.
    Run { attempt: i32 },
    /// An at-most-once step was found interrupted (its marker written, no
    /// outcome saved): the caller records it failed with `message`.
    Interrupted { message: String, attempt: i32 },
}

/// A child workflow's name, claimed in its parent's run (see
/// `WorkflowHandle::claim_child`), to start with `Run::start_child`.
#[derive(Debug)]
pub struct ChildStart {
    name: String,
    /// For a child of a handle that only replays: the finished workflow
    /// (the parent, or the one it was itself read under) and its status.
    within_finished: Option<(String, Status)>,
    /// The hold of the tree, for a child to run.
    tree: Option<Hold>,
}

impl<H: HoldSlot> WorkflowHandle<H> {
    /// The handle of the workflow `name` as `started` (a root started or
    /// claimed, with its own hold; or a workflow read to replay).
    /// `within_finished`: see `WorkflowHandle::claim_child`.
    pub fn new(name: String, input: JsonText, started: Started, within_finished: Option<(String, Status)>) -> Self {
        Self::with_hold(name, input, started, within_finished, None)
    }

    /// A handle of a workflow of a tree whose hold is `tree` (children), or
    /// of a root with its own hold (from `started`).
    fn with_hold(
        name: String,
        input: JsonText,
        mut started: Started,
        within_finished: Option<(String, Status)>,
        tree: Option<Hold>,
    ) -> Self {
        let is_root = started.workflow.id == started.workflow.root_id;
        let hold = started.hold.take().or(tree);
        WorkflowHandle {
            input,
            attempt: started.attempt,
            created: started.created,
            deadline: started.deadline,
            within_finished,
            run: Arc::new(Run {
                name,
                workflow: started.workflow,
                hold: H::keep(hold),
                is_root,
                state: Mutex::new(State {
                    status: started.status,
                    output: started.output,
                    error: started.error,
                    history: started.history,
                    used: HashSet::new(),
                    begun: HashMap::new(),
                    doomed: None,
                    finished_here: false,
                }),
            }),
        }
    }

    /// What the writes of this handle share with it.
    pub fn run(&self) -> Arc<Run<H>> {
        Arc::clone(&self.run)
    }

    /// Looks step `name` up before it runs, claiming the name for this run.
    /// A completed step replays; a step a previous run left failed or
    /// `running` runs again as the next attempt, except an at-most-once
    /// one: left `running`, it is `Interrupted`; recorded interrupted, it
    /// is refused with `StepInterrupted` again.
    pub fn begin_step(&self, name: &str, at_most_once: bool) -> Result<StepVerdict, EngineError> {
        let Some(entry) = self.claim("step", name)? else {
            return Ok(StepVerdict::Run { attempt: 1 });
        };
        let attempt = entry.attempt;
        match entry.status {
            Status::Completed => Ok(StepVerdict::Replay {
                output: entry.output.unwrap_or_else(|| JsonText("null".to_owned())),
                attempt,
            }),
            Status::Running | Status::Failed if at_most_once => {
                let interrupted = EngineError::StepInterrupted {
                    workflow: self.run.name.clone(),
                    name: name.to_owned(),
                };
                if entry.status == Status::Running {
                    Ok(StepVerdict::Interrupted {
                        message: interrupted.to_string(),
                        attempt,
                    })
                } else if entry.error_type.as_deref() == Some(STEP_INTERRUPTED) {
                    Err(interrupted)
                } else {
                    Ok(StepVerdict::Run { attempt: attempt + 1 })
                }
            }
            _ => Ok(StepVerdict::Run { attempt: attempt + 1 }),
        }
    }

    /// Claims `name` for a child workflow of this run, to be started (or,
    /// under a finished workflow, read to replay) with `Run::start_child`.
    pub fn claim_child(&self, name: String) -> Result<ChildStart, EngineError> {
        self.claim("child workflow", &name)?;
        let within_finished = if self.replays_only() {
            Some(
                self.within_finished
                    .clone()
                    .unwrap_or_else(|| (self.run.name.clone(), self.run.lock().status)),
            )
        } else {
            None
        };
        let tree = if within_finished.is_some() {
            None
        } else {
            self.run.hold().cloned()
        };
        Ok(ChildStart {
            name,
            within_finished,
            tree,
        })
    }

    /// Claims `name` for this run and returns what the history holds for it.
    ///
    /// A workflow that finished (or a child replayed under a finished parent)
    /// replays what it recorded and nothing else: a step it never completed
    /// (absent, or left `running` by an abandoned body) is refused without
    /// running; a child it started is read as it is.
    fn claim(&self, what: &'static str, name: &str) -> Result<Option<HistoryEntry>, EngineError> {
        validate_name(what, name)?;
        self.run.check()?;
        let mut state = self.run.lock();
        if !state.used.insert(name.to_owned()) {
            return Err(self.duplicate(name));
        }
        let entry = state.history.get(name).cloned();
        let wanted = if what == "step" { Kind::Step } else { Kind::Workflow };
        if entry.as_ref().is_some_and(|entry| entry.kind != wanted) {
            return Err(self.duplicate(name));
        }
        let replayable = entry
            .as_ref()
            .is_some_and(|entry| entry.kind == Kind::Workflow || entry.status == Status::Completed);
        if !replayable {
            if state.status != Status::Running {
                return Err(EngineError::WorkflowFinished {
                    workflow: self.run.name.clone(),
                    status: state.status.as_str(),
                    what,
                    name: name.to_owned(),
                });
            }
            if let Some(err) = self.within_finished(format!("its {what} {name:?}, which it never completed,")) {
                return Err(err);
            }
        }
        // Past the deadline saved results still replay; new work is refused.
        let past_deadline = self.deadline.is_some_and(|deadline| Instant::now() >= deadline);
        if past_deadline && !replayable {
            return Err(EngineError::DeadlineExceeded {
                workflow: self.run.name.clone(),
            });
        }
        Ok(entry)
    }

    /// For a child replayed under a finished parent: why `what` cannot run.
    fn within_finished(&self, what: String) -> Option<EngineError> {
        self.within_finished
            .as_ref()
            .map(|(parent, status)| EngineError::WithinFinished {
                parent: parent.clone(),
                status: status.as_str(),
                child: self.run.name.clone(),
                what,
            })
    }

    fn duplicate(&self, name: &str) -> EngineError {
        EngineError::DuplicateName {
            workflow: self.run.name.clone(),
            name: name.to_owned(),
        }
    }

    /// Ok while this handle may record `outcome` as the workflow's end
    /// (with `Run::finish`): not when the workflow (or the parent it was
    /// replayed under) finished, nor when the handle may do no more.
    pub fn check_finish(&self, outcome: &Outcome) -> Result<(), EngineError> {
        let what = match outcome {
            Outcome::Completed(_) => "result",
            Outcome::Failed(_) => "failure",
        };
        if let Some(err) = self.within_finished(format!("its {what}")) {
            return Err(err);
        }
        let refused = {
            let state = self.run.lock();
            if state.status == Status::Running {
                None
            } else if state.finished_here {
                Some(EngineError::FinishedHere {
                    workflow: self.run.name.clone(),
                    status: state.status.as_str(),
                    what: format!("its {what}"),
                })
            } else {
                Some(EngineError::NotRunning {
                    workflow_id: self.run.workflow.id,
                    what: what.to_owned(),
                })
            }
        };
        if let Some(err) = refused {
            return Err(err);
        }
        self.run.check_ending()
    }

    /// Ok while this handle may start new work (see `Run::check`).
    pub fn check(&self) -> Result<(), EngineError> {
        self.run.check()
    }

    /// Queues the `running` marker of a step's attempt, beginning now (see `Run::mark_step`).
    pub fn mark_step(&self, engine: &Engine, name: &str, attempt: i32) -> Result<(), EngineError> {
        self.run.mark_step(engine, name, attempt)
    }

    /// Ok while this handle may end its workflow or suspend it (see `Run::check_ending`).
    pub fn check_ending(&self) -> Result<(), EngineError> {
        self.run.check_ending()
    }

    /// The hold to suspend the tree with (`Run::suspend`): only a tree
    /// taken to run has one, and only while its handles may end their run.
    pub fn suspension_hold(&self) -> Result<Hold, EngineError> {
        self.run.check_ending()?;
        self.run.hold().cloned().ok_or_else(|| {
            EngineError::Unexpected(format!(
                "workflow {:?} only replays, so it cannot be suspended",
                self.run.name
            ))
        })
    }

    /// Stops this handle; returns the hold to release when it is a root's.
    /// A handle that only replays is left as it is.
    fn stop_for_release(&self) -> Option<Hold> {
        let mut state = self.run.lock();
        if state.status != Status::Running || self.within_finished.is_some() {
            return None;
        }
        state.doomed.get_or_insert_with(|| EngineError::Released {
            name: self.run.name.clone(),
        });
        drop(state);
        if self.run.is_root {
            self.run.hold().cloned()
        } else {
            None
        }
    }

    /// Gives the workflow up without finishing it: this handle stops at
    /// once; the future resolves once the database lets anyone resume it.
    /// On a root every handle of its tree stops; on a child only this one
    /// (its parent's holder may start it again).
    pub fn release(&self) -> impl Future<Output = ()> + Send + 'static + use<H> {
        let hold = self.stop_for_release();
        async move {
            if let Some(hold) = hold {
                hold.release().await;
            }
        }
    }

    /// `release`, without waiting for the database.
    pub fn release_soon(&self) {
        if let Some(hold) = self.stop_for_release() {
            hold.release_soon();
        }
    }

    /// True when this handle only replays: its workflow, or the parent it
    /// was read under, has finished.
    pub fn replays_only(&self) -> bool {
        self.within_finished.is_some() || self.run.lock().status != Status::Running
    }

    /// Starts a graceful stop of the tree (see `Hold::drain`).
    pub fn drain(&self) {
        if let Some(hold) = self.run.hold() {
            hold.drain();
        }
    }

    /// True once a graceful stop began for this tree.
    pub fn draining(&self) -> bool {
        self.run.hold().is_some_and(Hold::draining)
    }

    /// The root of the tree this handle holds; `None` when it only replays.
    pub fn tree_root(&self) -> Option<WorkflowId> {
        self.run.hold().map(Hold::root)
    }

    pub fn name(&self) -> &str {
        &self.run.name
    }

    pub fn id(&self) -> WorkflowId {
        self.run.workflow
    }

    /// The input as saved (its JSON form).
    pub fn input(&self) -> &JsonText {
        &self.input
    }

    /// Runs of this workflow so far, this one included.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }

    /// True when this start created the workflow (its first run).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The status as this handle knows it: `Cancelled` as soon as it was
    /// told (by this process, or by the cancel notification).
    pub fn status(&self) -> Status {
        let status = self.run.lock().status;
        if status == Status::Running && matches!(self.run.check(), Err(EngineError::Cancelled { .. })) {
            Status::Cancelled
        } else {
            status
        }
    }

    /// Seconds left before the deadline (negative once passed), or `None`.
    pub fn deadline_in(&self) -> Option<f64> {
        self.deadline.map(|deadline| {
            let now = Instant::now();
            if deadline >= now {
                (deadline - now).as_secs_f64()
            } else {
                -(now - deadline).as_secs_f64()
            }
        })
    }

    /// The saved result, once completed.
    pub fn output(&self) -> Option<JsonText> {
        self.run.lock().output.clone()
    }

    /// The saved error record, once failed.
    pub fn error(&self) -> Option<JsonText> {
        self.run.lock().error.clone()
    }
}

impl<H: HoldSlot> Run<H> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain data; the data is still consistent enough to report from.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hold(&self) -> Option<&Hold> {
        self.hold.hold()
    }

    /// Ok while this handle may end its workflow or suspend it: as `check`,
    /// but a graceful stop (draining) lets a run finish what it does.
    pub fn check_ending(&self) -> Result<(), EngineError> {
        match self.check() {
            Err(EngineError::Draining { .. }) => Ok(()),
            other => other,
        }
    }

    /// Ok while this handle may start new work.
    pub fn check(&self) -> Result<(), EngineError> {
        if let Some(err) = &self.lock().doomed {
            return Err(err.clone());
        }
        match self.hold().map(|hold| hold.check(self.workflow.id)) {
            // A root's own end is told by its status, more precisely.
            Some(Err(EngineError::RootFinished { .. })) if self.is_root => Ok(()),
            Some(Err(err)) => Err(err),
            _ => Ok(()),
        }
    }

    /// Passes `result` through, remembering an error that ends this run (and
    /// the hold of its tree, for a lost lease). A workflow found cancelled
    /// stops its own handle; the hold learns which others of the tree are
    /// cancelled too (a cancel may have been of part of the tree only: a
    /// child started here and found cancelled does not stop its parent). A
    /// write refused because this very run had finished the workflow, or
    /// released it, says so.
    fn watch<T>(&self, what: impl FnOnce() -> String, result: Result<T, EngineError>) -> Result<T, EngineError> {
        match result {
            Err(err @ EngineError::Cancelled { workflow_id }) => {
                if let Some(hold) = self.hold() {
                    hold.cancelled(workflow_id);
                }
                if workflow_id == self.workflow.id {
                    return Err(self.lock().doomed.get_or_insert(err).clone());
                }
                Err(err)
            }
            Err(err @ EngineError::LeaseLost { .. }) => {
                let err = if self.hold().is_some_and(Hold::is_released) {
                    EngineError::Released {
                        name: self.name.clone(),
                    }
                } else {
                    err
                };
                if let Some(hold) = self.hold() {
                    hold.lost(&err);
                }
                Err(self.lock().doomed.get_or_insert(err).clone())
            }
            Err(EngineError::NotRunning { .. }) if self.lock().finished_here => {
                let state = self.lock();
                Err(EngineError::FinishedHere {
                    workflow: self.name.clone(),
                    status: state.status.as_str(),
                    what: what(),
                })
            }
            result => result,
        }
    }

    /// `watch` for an error (of a transaction step's commit): the error, as
    /// this run reports it.
    pub fn watch_error(&self, what: impl FnOnce() -> String, err: EngineError) -> EngineError {
        self.watch(what, Err::<(), _>(err)).err().unwrap_or(EngineError::Closed)
    }

    /// Stops this handle with `err`: no further work starts on it. Its
    /// hold is left alone, so that ending the run releases the workflow
    /// for a new run to take over.
    pub fn doom(&self, err: &EngineError) {
        self.lock().doomed.get_or_insert_with(|| err.clone());
    }

    /// Waits until the hold of this tree ends (see `Hold::stopped`); never,
    /// for a handle that only replays.
    pub async fn stopped(&self, drain: bool) -> Result<(), EngineError> {
        match self.hold() {
            Some(hold) => hold.stopped(self.workflow.id, drain).await,
            None => std::future::pending().await,
        }
    }

    /// Records that this run ended the workflow with `outcome` (committed).
    fn finished(&self, outcome: Outcome) {
        let status = outcome.status();
        let mut state = self.lock();
        state.finished_here = true;
        state.status = status;
        match outcome {
            Outcome::Completed(output) => state.output = Some(output),
            Outcome::Failed(error) => state.error = Some(error),
        }
    }

    /// Notes that `attempt` of step `name` begins now; when, by this
    /// process's clock.
    fn begin_attempt(&self, name: &str, attempt: i32) -> i64 {
        let started_us = now_us();
        self.lock().begun.insert(name.to_owned(), (attempt, started_us));
        started_us
    }

    /// When `attempt` of step `name` ran, ending at `ended_us`: its start
    /// if this run began it (else unknown), forgotten from now on.
    fn attempt_times(&self, name: &str, attempt: i32, ended_us: i64) -> AttemptTimes {
        let begun = self.lock().begun.remove(name);
        AttemptTimes {
            started_us: begun.filter(|&(begun, _)| begun == attempt).map(|(_, at)| at),
            ended_us,
        }
    }

    /// Queues the `running` marker of a step's attempt, beginning now,
    /// without waiting; refused (before the body runs) when the handle may
    /// do no more work.
    pub fn mark_step(&self, engine: &Engine, name: &str, attempt: i32) -> Result<(), EngineError> {
        self.check()?;
        let started_us = self.begin_attempt(name, attempt);
        engine.step_started(self.workflow, name, attempt, started_us)
    }

    /// Writes the `running` marker of a step's attempt, beginning now, and
    /// waits for its commit (for at-most-once steps: the attempt's time
    /// includes it); then Ok only if the body may still run (nothing ended
    /// the hold while the marker was written).
    pub async fn mark_step_durably(&self, engine: &Engine, name: String, attempt: i32) -> Result<(), EngineError> {
        let started_us = self.begin_attempt(&name, attempt);
        let what = || format!("the start of step {name:?}");
        let result = engine
            .step_started_durably(self.workflow, name.clone(), attempt, started_us)
            .await;
        self.watch(what, result)?;
        self.check()
    }

    /// Saves a step's outcome, its attempt ended at `ended_us` (`now_us`,
    /// taken when the body ended); resolves once committed.
    pub async fn save_step(
        &self,
        engine: &Engine,
        name: String,
        attempt: i32,
        outcome: Outcome,
        ended_us: i64,
    ) -> Result<(), EngineError> {
        let what = || format!("the outcome of step {name:?}");
        let times = self.attempt_times(&name, attempt, ended_us);
        let result = engine
            .step_finished(self.workflow, name.clone(), attempt, outcome, times)
            .await;
        self.watch(what, result)
    }

    /// Saves the workflow's outcome (after `WorkflowHandle::check_finish`)
    /// and records it in the handle once committed.
    pub async fn finish(&self, engine: &Engine, outcome: Outcome) -> Result<(), EngineError> {
        let result = engine.workflow_finished(self.workflow, outcome.clone()).await;
        self.watch(|| "its outcome".to_owned(), result)?;
        self.finished(outcome);
        Ok(())
    }

    /// Receives the oldest message on `topic` as step `name`, waiting until
    /// `until` for one: `None` when the time ran out or a graceful stop
    /// began (nothing saved then). Fails at once at a cancel or a lost lease.
    pub async fn receive(
        &self,
        engine: &Engine,
        name: &str,
        attempt: i32,
        topic: &str,
        until: Instant,
    ) -> Result<Option<JsonText>, EngineError> {
        // Subscribed before the first look: a message sent between a look
        // and the wait still wakes it.
        let mut posted = engine.messages_posted();
        loop {
            let what = || format!("receiving on {topic:?}");
            let taken = engine.take_message(self.workflow, name, attempt, topic).await;
            if let Some(message) = self.watch(what, taken)? {
                return Ok(Some(message));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::select! {
                () = engine.message_posted(&mut posted, self.workflow.id, left) => {}
                // A graceful stop ends the wait (the caller suspends); the
                // end of the hold fails it with its error (a cancel...).
                stopped = self.stopped(true) => {
                    stopped?;
                    return Ok(None);
                }
            }
        }
    }

    /// Publishes `value` as the event `key`, saved as step `name` in the
    /// same statement; resolves once committed.
    pub async fn set_event(
        &self,
        engine: &Engine,
        name: &str,
        attempt: i32,
        key: &str,
        value: &JsonText,
    ) -> Result<(), EngineError> {
        let result = engine.set_event(self.workflow, name, attempt, key, value).await;
        self.watch(|| format!("event {key:?}"), result)
    }

    /// Saves sleep `name` as its step, its result the wake-up time `wake`;
    /// resolves once committed.
    pub async fn save_sleep(
        &self,
        engine: &Engine,
        name: &str,
        attempt: i32,
        wake: &JsonText,
    ) -> Result<(), EngineError> {
        let result = engine.save_sleep(self.workflow, name, attempt, wake).await;
        self.watch(|| format!("sleep {name:?}"), result)
    }

    /// Starts transaction step `name` as `attempt`, beginning now: its
    /// `running` marker, and an open Postgres transaction, returned only if
    /// the body may still run (nothing ended the hold meanwhile).
    pub async fn begin_transaction(
        &self,
        engine: &Engine,
        name: String,
        attempt: i32,
    ) -> Result<Transaction, EngineError> {
        // Not noted in `begun`: the marker commits before the body runs, so
        // a failure saved later finds the attempt's start in the row.
        let result = engine
            .begin_transaction(self.workflow, name.clone(), attempt, now_us())
            .await;
        let tx = self.watch(|| format!("the start of transaction step {name:?}"), result)?;
        self.check()?;
        Ok(tx)
    }

    /// Creates or takes the child claimed as `child`, with `input`; under a
    /// finished workflow the child is only read, to replay.
    pub async fn start_child(
        &self,
        engine: &Engine,
        child: ChildStart,
        input: JsonText,
    ) -> Result<WorkflowHandle<H>, EngineError> {
        let ChildStart {
            name,
            within_finished,
            tree,
        } = child;
        let parent = Parent {
            workflow: self.workflow,
            name: &self.name,
        };
        let result = if within_finished.is_some() {
            engine.replay_child(parent, &name, &input).await
        } else {
            engine.start(Some(parent), &name, &input, None).await
        };
        let started = self.watch(|| format!("the start of child workflow {name:?}"), result)?;
        Ok(WorkflowHandle::with_hold(name, input, started, within_finished, tree))
    }

    /// Records on the root why this workflow waits in its process, or that
    /// it no longer does (`None`); nothing for a handle that only replays.
    pub async fn note_wait(&self, engine: &Engine, waiting: Option<&JsonText>) -> Result<(), EngineError> {
        match self.hold().map(Hold::root) {
            Some(root) => engine.note_wait(root, waiting).await,
            None => Ok(()),
        }
    }

    /// Suspends the root of this tree with `hold` (from
    /// `WorkflowHandle::suspension_hold`; see `Engine::suspend`): true once
    /// suspended (every handle of the tree then refuses more work), false
    /// when what it waits for happened meanwhile (nothing changed). A wait
    /// for a message on `topic` is a wait of this workflow.
    pub async fn suspend(
        &self,
        engine: &Engine,
        hold: Hold,
        until_us: Option<i64>,
        waiting: &JsonText,
        waiting_on: Option<&str>,
        topic: Option<&str>,
    ) -> Result<bool, EngineError> {
        let wait = Suspension {
            until_us,
            waiting,
            waiting_on,
            message: topic.map(|topic| (self.workflow.id, topic)),
        };
        let result = engine.suspend(hold.root(), wait).await;
        match self.watch(|| "its suspension".to_owned(), result)? {
            Suspended::Yes => {
                hold.suspended();
                Ok(true)
            }
            Suspended::Woken => Ok(false),
        }
    }

    /// Records that the root `root` of this tree waits for the root run
    /// `target` (`None`: no longer), refusing a wait that would close a
    /// cycle (see `Engine::wait_on`).
    pub async fn wait_on(&self, engine: &Engine, root: WorkflowId, target: Option<&str>) -> Result<(), EngineError> {
        let result = engine.wait_on(root, target).await;
        self.watch(|| "its wait".to_owned(), result)
    }
}

#[cfg(test)]
mod tests;
