//! `durable._core.Workflow`: one started workflow, its saved history, and
//! the names used in this run. Replay lookups and duplicate checks happen
//! here, synchronously; writes return awaitables that resolve after commit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::errors::to_py;
use super::json;
use super::os_fork::ForkSafe;
use super::runtime::{abortable, awaitable};
use super::transaction::PyTransaction;
use crate::engine::{
    Engine, EngineError, HistoryEntry, Hold, JsonText, Kind, Outcome, Parent, Started, Status, Suspended, Suspension,
    WorkflowId, validate_name,
};

/// `type` of the error record of an at-most-once step found interrupted.
const STEP_INTERRUPTED: &str = "StepInterrupted";

#[pyclass(frozen, module = "durable._core", name = "Workflow")]
pub(crate) struct PyWorkflow {
    engine: ForkSafe<Engine>,
    id: WorkflowId,
    /// The input as saved: what the workflow function is given.
    input: JsonText,
    attempt: i32,
    created: bool,
    deadline: Option<Instant>,
    /// Set for a child read to replay under a finished parent: the parent's
    /// name and status. Such a child replays what it recorded, nothing new.
    within_finished: Option<(String, Status)>,
    /// Largest JSON value (bytes) accepted for saving.
    limit: usize,
    run: Arc<Run>,
}

/// What the awaitables of a handle share with it.
pub(crate) struct Run {
    name: String,
    /// The workflow's id: a cancel of it alone (see `Hold::check`) stops this handle.
    id: i64,
    /// The hold of the tree in this engine (roots taken to run, and their
    /// children); `None` for what only replays.
    hold: ForkSafe<Option<Hold>>,
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
    /// Set once a write learns that this process may no longer work on the
    /// workflow (lease lost, cancelled), or the handle was released: every
    /// later call fails with it, so no further step body runs.
    doomed: Option<EngineError>,
    /// True once this run completed or failed the workflow itself.
    finished_here: bool,
}

impl Run {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain data; the data is still consistent enough to report from.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hold(&self) -> Option<&Hold> {
        self.hold.get().ok().and_then(Option::as_ref)
    }

    /// Ok while this handle may end its workflow or suspend it: as `check`,
    /// but a graceful stop (draining) lets a run finish what it does.
    fn check_ending(&self) -> Result<(), EngineError> {
        match self.check() {
            Err(EngineError::Draining { .. }) => Ok(()),
            other => other,
        }
    }

    /// Ok while this handle may start new work.
    fn check(&self) -> Result<(), EngineError> {
        if let Some(err) = &self.lock().doomed {
            return Err(err.clone());
        }
        match self.hold().map(|hold| hold.check(self.id)) {
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
                if workflow_id == self.id {
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
}

impl Run {
    /// Waits until the hold of this tree ends (see `Hold::stopped`); never,
    /// for a handle that only replays.
    pub(crate) async fn stopped(&self, drain: bool) -> Result<(), EngineError> {
        match self.hold() {
            Some(hold) => hold.stopped(self.id, drain).await,
            None => std::future::pending().await,
        }
    }

    /// Stops this handle with `err`: no further work starts on it. Its
    /// hold is left alone, so that ending the run releases the workflow
    /// for a new run to take over.
    pub(crate) fn doom(&self, err: &EngineError) {
        self.lock().doomed.get_or_insert_with(|| err.clone());
    }

    /// `watch` for an error (of a transaction step's commit): the error, as
    /// this run reports it.
    pub(crate) fn watch_error(&self, what: impl FnOnce() -> String, err: EngineError) -> EngineError {
        self.watch(what, Err::<(), _>(err)).err().unwrap_or(EngineError::Closed)
    }
}

impl PyWorkflow {
    pub(crate) fn new(
        engine: Engine,
        name: String,
        input: JsonText,
        started: Started,
        within_finished: Option<(String, Status)>,
        limit: usize,
    ) -> Self {
        Self::with_hold(engine, name, input, started, within_finished, limit, None)
    }

    /// A handle of a workflow of a tree whose hold is `tree` (children), or
    /// of a root with its own hold (from `started`).
    fn with_hold(
        engine: Engine,
        name: String,
        input: JsonText,
        mut started: Started,
        within_finished: Option<(String, Status)>,
        limit: usize,
        tree: Option<Hold>,
    ) -> Self {
        let is_root = started.workflow.id == started.workflow.root_id;
        let hold = started.hold.take().or(tree);
        PyWorkflow {
            engine: ForkSafe::new(engine),
            id: started.workflow,
            input,
            attempt: started.attempt,
            created: started.created,
            deadline: started.deadline,
            within_finished,
            limit,
            run: Arc::new(Run {
                name,
                id: started.workflow.id,
                hold: ForkSafe::new(hold),
                is_root,
                state: Mutex::new(State {
                    status: started.status,
                    output: started.output,
                    error: started.error,
                    history: started.history,
                    used: HashSet::new(),
                    doomed: None,
                    finished_here: false,
                }),
            }),
        }
    }

    fn engine(&self) -> PyResult<Engine> {
        self.engine.get().cloned()
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

    /// Why this handle may not record `outcome` as the workflow's end, if it
    /// may not: the workflow (or the parent it was replayed under) finished.
    fn finish_refused(&self, outcome: &Outcome) -> Option<EngineError> {
        let what = match outcome {
            Outcome::Completed(_) => "result",
            Outcome::Failed(_) => "failure",
        };
        if let Some(err) = self.within_finished(format!("its {what}")) {
            return Some(err);
        }
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
                workflow_id: self.id.id,
                what: what.to_owned(),
            })
        }
    }

    /// Stops this handle; returns the hold to release when it is a root's.
    fn release_here(&self) -> Option<Hold> {
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

    /// True when this handle only replays: its workflow, or the parent it
    /// was read under, has finished.
    fn replays_only(&self) -> bool {
        self.within_finished.is_some() || self.run.lock().status != Status::Running
    }

    fn duplicate(&self, name: &str) -> EngineError {
        EngineError::DuplicateName {
            workflow: self.run.name.clone(),
            name: name.to_owned(),
        }
    }

    fn encode(&self, value: &Bound<'_, PyAny>, what: &str) -> PyResult<JsonText> {
        json::encode(value, what, self.limit)
    }

    /// Saves a step's outcome; the awaitable resolves to `value` once committed.
    fn save_step<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        outcome: Outcome,
        value: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?;
        let run = Arc::clone(&self.run);
        let id = self.id;
        awaitable(py, async move {
            let what = || format!("the outcome of step {name:?}");
            let result = engine.step_finished(id, name.clone(), attempt, outcome).await;
            run.watch(what, result).map_err(to_py)?;
            Ok(value)
        })
    }

    /// Saves the workflow's outcome and records it locally once committed;
    /// the awaitable resolves to `value`.
    fn finish<'py>(&self, py: Python<'py>, outcome: Outcome, value: Py<PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(refused) = self.finish_refused(&outcome) {
            return Err(to_py(refused));
        }
        self.run.check_ending().map_err(to_py)?;
        let engine = self.engine()?;
        let run = Arc::clone(&self.run);
        let id = self.id;
        awaitable(py, async move {
            let result = engine.workflow_finished(id, outcome.clone()).await;
            run.watch(|| "its outcome".to_owned(), result).map_err(to_py)?;
            let status = outcome.status();
            {
                let mut state = run.lock();
                state.finished_here = true;
                state.status = status;
                match outcome {
                    Outcome::Completed(output) => state.output = Some(output),
                    Outcome::Failed(error) => state.error = Some(error),
                }
            }
            Ok(value)
        })
    }
}

#[pymethods]
impl PyWorkflow {
    /// Looks step `name` up before running it. Returns `(verdict, value,
    /// attempt)`: `("replay", saved_result, attempt)` when a previous run
    /// completed it; `("run", None, attempt)` when the caller should write
    /// its marker and run the body as `attempt`; `("interrupted", None,
    /// attempt)` when an at-most-once step was found interrupted, for the
    /// caller to record as failed. An at-most-once step recorded interrupted
    /// before raises `StepInterrupted` again.
    #[pyo3(signature = (name, at_most_once = false))]
    fn begin_step<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        at_most_once: bool,
    ) -> PyResult<(&'static str, Bound<'py, PyAny>, i32)> {
        let none = py.None().into_bound(py);
        let entry = self.claim("step", name).map_err(to_py)?;
        let Some(entry) = entry else {
            return Ok(("run", none, 1));
        };
        match entry.status {
            Status::Completed => {
                let saved = entry.output.as_ref().map_or("null", JsonText::as_str);
                Ok(("replay", json::decode(py, saved)?, entry.attempt))
            }
            Status::Running | Status::Failed if at_most_once => {
                let interrupted = EngineError::StepInterrupted {
                    workflow: self.run.name.clone(),
                    name: name.to_owned(),
                };
                if entry.status == Status::Running {
                    let message = PyString::new(py, &interrupted.to_string()).into_any();
                    Ok(("interrupted", message, entry.attempt))
                } else if entry.error_type.as_deref() == Some(STEP_INTERRUPTED) {
                    Err(to_py(interrupted))
                } else {
                    Ok(("run", none, entry.attempt + 1))
                }
            }
            _ => Ok(("run", none, entry.attempt + 1)),
        }
    }

    /// Queues the `running` marker of a step's attempt, without waiting.
    /// Refuses (before the body runs) when the handle may do no more work:
    /// cancelled, lease lost, released.
    fn mark_step(&self, name: &str, attempt: i32) -> PyResult<()> {
        self.run.check().map_err(to_py)?;
        self.engine.get()?.step_started(self.id, name, attempt).map_err(to_py)
    }

    /// Writes the `running` marker of a step's attempt; an awaitable that
    /// resolves once it is committed (for at-most-once steps).
    fn mark_step_durably<'py>(&self, py: Python<'py>, name: String, attempt: i32) -> PyResult<Bound<'py, PyAny>> {
        self.run.check().map_err(to_py)?;
        let engine = self.engine()?;
        let run = Arc::clone(&self.run);
        let id = self.id;
        awaitable(py, async move {
            let what = || format!("the start of step {name:?}");
            let result = engine.step_started_durably(id, name.clone(), attempt).await;
            run.watch(what, result).map_err(to_py)?;
            // The body runs only if nothing ended the hold while the marker was written.
            run.check().map_err(to_py)
        })
    }

    /// Saves a step's result; the awaitable resolves, once committed, to the
    /// result as a replay will return it (its JSON form). Raises `NotJson` or
    /// `ValueTooLarge` at once if it cannot be saved.
    fn finish_step<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        result: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let output = self.encode(result, &format!("result of step {name:?}"))?;
        let value = json::decode(py, output.as_str())?.unbind();
        self.save_step(py, name, attempt, Outcome::Completed(output), value)
    }

    /// Receives the oldest message on `topic` as step `name` (attempt
    /// `attempt`), waiting up to `timeout` seconds for one; an awaitable of
    /// the message, or None when the timeout ran out or a graceful stop
    /// began (nothing saved then: the caller saves the step's None, or
    /// suspends). Raises at once at a cancel or a lost lease.
    fn recv<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        topic: String,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run.check_ending().map_err(to_py)?;
        let engine = self.engine()?;
        let run = Arc::clone(&self.run);
        let id = self.id;
        let until = Instant::now() + Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX / 4);
        awaitable(py, async move {
            // Subscribed before the first look: a message sent between a
            // look and the wait still wakes it.
            let mut posted = engine.messages_posted();
            loop {
                let what = || format!("receiving on {topic:?}");
                let taken = engine.take_message(id, &name, attempt, &topic).await;
                if let Some(message) = run.watch(what, taken).map_err(to_py)? {
                    return Ok(Some(json::Decoded(message)));
                }
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                tokio::select! {
                    () = engine.message_posted(&mut posted, id.id, left) => {}
                    // A graceful stop ends the wait (the caller suspends);
                    // the end of the hold raises its error (a cancel...).
                    stopped = run.stopped(true) => {
                        stopped.map_err(to_py)?;
                        return Ok(None);
                    }
                }
            }
        })
    }

    /// Publishes `value` as the event `key`, saved as step `name` in the
    /// same statement; an awaitable of None once committed.
    fn set_event<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        key: String,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run.check().map_err(to_py)?;
        let value = self.encode(value, &format!("event {key:?}"))?;
        let engine = self.engine()?;
        let run = Arc::clone(&self.run);
        let id = self.id;
        awaitable(py, async move {
            let what = || format!("event {key:?}");
            let result = engine.set_event(id, &name, attempt, &key, &value).await;
            run.watch(what, result).map_err(to_py)
        })
    }

    /// Saves sleep `name` as its step (attempt `attempt`, after `begin_step`
    /// said "run"): its result the wake-up time `wake` (ISO 8601), marked a
    /// sleep; an awaitable of None once committed.
    fn save_sleep<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        wake: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run.check().map_err(to_py)?;
        let wake = self.encode(wake, &format!("wake-up time of sleep {name:?}"))?;
        let engine = self.engine()?;
        let run = Arc::clone(&self.run);
        let id = self.id;
        awaitable(py, async move {
            let what = || format!("sleep {name:?}");
            let result = engine.save_sleep(id, &name, attempt, &wake).await;
            run.watch(what, result).map_err(to_py)
        })
    }

    /// Saves a step's error record (a dict of type, module, message, traceback).
    fn fail_step<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        error: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let error = self.encode(error, &format!("error of step {name:?}"))?;
        self.save_step(py, name, attempt, Outcome::Failed(error), py.None())
    }

    /// Starts transaction step `name` as `attempt` (after `begin_step` said
    /// "run"): writes its `running` marker and opens a Postgres transaction;
    /// an awaitable of the `Transaction`, whose `commit` saves the result.
    fn begin_transaction<'py>(&self, py: Python<'py>, name: String, attempt: i32) -> PyResult<Bound<'py, PyAny>> {
        self.run.check().map_err(to_py)?;
        let engine = self.engine()?;
        let run = Arc::clone(&self.run);
        let id = self.id;
        let limit = self.limit;
        awaitable(py, async move {
            let result = engine.begin_transaction(id, name.clone(), attempt).await;
            let tx = run
                .watch(|| format!("the start of transaction step {name:?}"), result)
                .map_err(to_py)?;
            // The body runs only if nothing ended the hold meanwhile.
            run.check().map_err(to_py)?;
            Ok(PyTransaction::new(tx, run, limit))
        })
    }

    /// Creates or takes the child workflow `name`; an awaitable of its
    /// `Workflow`. Under a finished parent the child is only read, to replay.
    fn start_child<'py>(
        &self,
        py: Python<'py>,
        name: String,
        input: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let input = self.encode(input, &format!("input of child workflow {name:?}"))?;
        self.claim("child workflow", &name).map_err(to_py)?;
        let engine = self.engine()?;
        let run = Arc::clone(&self.run);
        let parent_id = self.id;
        let limit = self.limit;
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
            run.hold().cloned()
        };
        awaitable(py, async move {
            let parent = Parent {
                workflow: parent_id,
                name: &run.name,
            };
            let result = if within_finished.is_some() {
                engine.replay_child(parent, &name, &input).await
            } else {
                engine.start(Some(parent), &name, &input, None).await
            };
            let what = || format!("the start of child workflow {name:?}");
            let started = run.watch(what, result).map_err(to_py)?;
            Ok(PyWorkflow::with_hold(
                engine,
                name,
                input,
                started,
                within_finished,
                limit,
                tree,
            ))
        })
    }

    /// Marks the workflow completed with `result`; the awaitable resolves to
    /// the result as a replay will return it (its JSON form).
    fn complete<'py>(&self, py: Python<'py>, result: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let output = self.encode(result, &format!("result of workflow {:?}", self.run.name))?;
        let value = json::decode(py, output.as_str())?.unbind();
        self.finish(py, Outcome::Completed(output), value)
    }

    /// Marks the workflow failed with an error record.
    fn fail<'py>(&self, py: Python<'py>, error: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let error = self.encode(error, &format!("error of workflow {:?}", self.run.name))?;
        self.finish(py, Outcome::Failed(error), py.None())
    }

    /// Gives the workflow up without finishing it; an awaitable that
    /// resolves once the database lets anyone resume it. On a root: every
    /// handle of its tree stops. On a child: this handle stops (its parent's
    /// holder may start it again).
    fn release<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let hold = self.release_here();
        awaitable(py, async move {
            if let Some(hold) = hold {
                hold.release().await;
            }
            Ok(())
        })
    }

    /// Records on the root why this workflow waits in its process (a dict:
    /// kind, step, detail), or that it no longer does (None); an awaitable.
    /// A no-op for a handle that only replays.
    fn note_wait<'py>(&self, py: Python<'py>, waiting: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let waiting = if waiting.is_none() {
            None
        } else {
            Some(self.encode(waiting, "reason of a wait")?)
        };
        let root = self.run.hold().map(Hold::root);
        let engine = self.engine()?;
        awaitable(py, async move {
            match root {
                Some(root) => engine.note_wait(root, waiting.as_ref()).await.map_err(to_py),
                None => Ok(()),
            }
        })
    }

    /// Suspends the root of this tree (see `Engine::suspend`): it leaves
    /// this process, due again at `until_us` (microseconds since the epoch
    /// on the database's clock; None: only a wake makes it due), recorded as
    /// waiting for `waiting` (a dict: kind, step, detail), and, with
    /// `waiting_on` (a root's name), woken when that root finishes. An awaitable of True
    /// once suspended (every handle of the tree then refuses more work), or
    /// False when what it waits for happened meanwhile (nothing changed:
    /// look again). Only for a tree taken to run by an executor.
    #[pyo3(signature = (until_us, waiting, waiting_on = None, topic = None))]
    fn suspend<'py>(
        &self,
        py: Python<'py>,
        until_us: Option<i64>,
        waiting: &Bound<'py, PyAny>,
        waiting_on: Option<String>,
        topic: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let waiting = self.encode(waiting, "reason of a wait")?;
        self.run.check_ending().map_err(to_py)?;
        let Some(hold) = self.run.hold().cloned() else {
            return Err(to_py(EngineError::Unexpected(format!(
                "workflow {:?} only replays, so it cannot be suspended",
                self.run.name
            ))));
        };
        let engine = self.engine()?;
        let run = Arc::clone(&self.run);
        let id = self.id.id;
        awaitable(py, async move {
            let wait = Suspension {
                until_us,
                waiting: &waiting,
                waiting_on: waiting_on.as_deref(),
                message: topic.as_deref().map(|topic| (id, topic)),
            };
            let result = engine.suspend(hold.root(), wait).await;
            match run.watch(|| "its suspension".to_owned(), result).map_err(to_py)? {
                Suspended::Yes => {
                    hold.suspended();
                    Ok(true)
                }
                Suspended::Woken => Ok(false),
            }
        })
    }

    /// An awaitable that ends when the work of this tree stops: it raises
    /// why (`Cancelled`, `LeaseLost`...) once the hold ends; with `drain`,
    /// it returns True when a graceful stop begins. Never resolves for a
    /// handle that only replays. Cancelling the await stops it.
    #[pyo3(signature = (drain = false))]
    fn stopped<'py>(&self, py: Python<'py>, drain: bool) -> PyResult<Bound<'py, PyAny>> {
        let run = Arc::clone(&self.run);
        abortable(py, async move {
            run.stopped(drain).await.map_err(to_py)?;
            Ok(true)
        })
    }

    /// True once a graceful stop (`drain`) began for this tree.
    #[getter]
    fn draining(&self) -> bool {
        self.run.hold().is_some_and(Hold::draining)
    }

    /// Records that this tree's root waits for the root run `run` (None: it
    /// no longer waits), refusing with `WaitCycle` a wait that would close
    /// a cycle (see `Engine::wait_on`); an awaitable.
    fn wait_on<'py>(&self, py: Python<'py>, run: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let Some(root) = self.run.hold().map(Hold::root) else {
            return awaitable(py, async { Ok(()) });
        };
        let engine = self.engine()?;
        let held = Arc::clone(&self.run);
        awaitable(py, async move {
            let result = engine.wait_on(root, run.as_deref()).await;
            held.watch(|| "its wait".to_owned(), result).map_err(to_py)
        })
    }

    /// `release`, without waiting for the database (for a run that was
    /// cancelled, which should not wait).
    fn release_soon(&self) {
        if let Some(hold) = self.release_here() {
            hold.release_soon();
        }
    }

    /// Starts a graceful stop of the tree: from now on its handles start no
    /// new step, child or retry (they raise `asyncio.CancelledError`), while
    /// what runs finishes and saves its result.
    fn drain(&self) {
        if let Some(hold) = self.run.hold() {
            hold.drain();
        }
    }

    /// True when `value`'s JSON form is the workflow's input.
    fn same_input(&self, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.encode(value, "input")?.as_str() == self.input.as_str())
    }

    /// The workflow's input, as saved (its JSON form).
    #[getter]
    fn input<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json::decode(py, self.input.as_str())
    }

    #[getter]
    fn name(&self) -> &str {
        &self.run.name
    }

    #[getter]
    fn id(&self) -> i64 {
        self.id.id
    }

    #[getter]
    fn root_id(&self) -> i64 {
        self.id.root_id
    }

    /// The lease epoch this process holds the workflow under.
    #[getter]
    fn epoch(&self) -> i64 {
        self.id.epoch
    }

    /// Runs of this workflow so far, this one included.
    #[getter]
    fn attempt(&self) -> i32 {
        self.attempt
    }

    /// True when this start created the workflow (its first run).
    #[getter]
    fn created(&self) -> bool {
        self.created
    }

    /// The status as this handle knows it: `cancelled` as soon as it was
    /// told (by this process, or by the cancel notification).
    #[getter]
    fn status(&self) -> &'static str {
        let status = self.run.lock().status;
        if status == Status::Running && matches!(self.run.check(), Err(EngineError::Cancelled { .. })) {
            Status::Cancelled.as_str()
        } else {
            status.as_str()
        }
    }

    /// Seconds left before the deadline (negative once passed), or None.
    #[getter]
    fn deadline_in(&self) -> Option<f64> {
        self.deadline.map(|deadline| {
            let now = Instant::now();
            if deadline >= now {
                (deadline - now).as_secs_f64()
            } else {
                -(now - deadline).as_secs_f64()
            }
        })
    }

    /// The saved result, once completed; else None.
    #[getter]
    fn output<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let output = self.run.lock().output.clone();
        output.map_or_else(|| Ok(py.None().into_bound(py)), |text| json::decode(py, text.as_str()))
    }

    /// The saved error record, once failed; else None.
    #[getter]
    fn error<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let error = self.run.lock().error.clone();
        error.map_or_else(|| Ok(py.None().into_bound(py)), |text| json::decode(py, text.as_str()))
    }
}
