//! `durable._core.Workflow`: one started workflow, its saved history, and
//! the names used in this run. Replay lookups and duplicate checks happen
//! here, synchronously; writes return awaitables that resolve after commit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::errors::to_py;
use super::json;
use super::runtime::awaitable;
use crate::engine::{
    Engine, EngineError, HistoryEntry, JsonText, Kind, Outcome, Parent, Started, Status, WorkflowId, validate_name,
};

/// `type` of the error record of an at-most-once step found interrupted.
const STEP_INTERRUPTED: &str = "StepInterrupted";

#[pyclass(frozen, module = "durable._core", name = "Workflow")]
pub(crate) struct PyWorkflow {
    engine: Arc<Engine>,
    id: WorkflowId,
    name: String,
    attempt: i32,
    created: bool,
    deadline: Option<Instant>,
    /// Largest JSON value (bytes) accepted for saving.
    limit: usize,
    state: Arc<Mutex<State>>,
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
    /// workflow (lease lost, cancelled): every later call fails with it, so
    /// no further step body runs.
    doomed: Option<EngineError>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A poisoned lock only means another thread panicked mid-update of plain
    // data; the data is still consistent enough to report from.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Passes `result` through, remembering an error that ends this run.
fn watch<T>(state: &Mutex<State>, result: Result<T, EngineError>) -> Result<T, EngineError> {
    if let Err(err @ (EngineError::LeaseLost { .. } | EngineError::Cancelled { .. })) = &result {
        lock(state).doomed.get_or_insert_with(|| err.clone());
    }
    result
}

impl PyWorkflow {
    pub(crate) fn new(engine: Arc<Engine>, name: String, started: Started, limit: usize) -> Self {
        PyWorkflow {
            engine,
            id: started.workflow,
            name,
            attempt: started.attempt,
            created: started.created,
            deadline: started.deadline,
            limit,
            state: Arc::new(Mutex::new(State {
                status: started.status,
                output: started.output,
                error: started.error,
                history: started.history,
                used: HashSet::new(),
                doomed: None,
            })),
        }
    }

    /// Claims `name` for this run and returns what the history holds for it.
    fn claim(&self, what: &'static str, name: &str) -> Result<Option<HistoryEntry>, EngineError> {
        validate_name(what, name)?;
        let mut state = lock(&self.state);
        if let Some(err) = &state.doomed {
            return Err(err.clone());
        }
        if !state.used.insert(name.to_owned()) {
            return Err(self.duplicate(name));
        }
        let entry = state.history.get(name).cloned();
        let wanted = if what == "step" { Kind::Step } else { Kind::Workflow };
        let past_deadline = self.deadline.is_some_and(|deadline| Instant::now() >= deadline);
        match &entry {
            Some(entry) if entry.kind != wanted => Err(self.duplicate(name)),
            // A finished workflow replays its history and takes nothing new.
            None if state.status != Status::Running => Err(EngineError::WorkflowFinished {
                workflow: self.name.clone(),
                status: state.status.as_str(),
                what,
                name: name.to_owned(),
            }),
            // Past the deadline saved results still replay; new work is refused.
            Some(HistoryEntry {
                status: Status::Completed,
                ..
            }) => Ok(entry),
            _ if past_deadline && state.status == Status::Running => Err(EngineError::DeadlineExceeded {
                workflow: self.name.clone(),
            }),
            _ => Ok(entry),
        }
    }

    fn duplicate(&self, name: &str) -> EngineError {
        EngineError::DuplicateName {
            workflow: self.name.clone(),
            name: name.to_owned(),
        }
    }

    fn encode(&self, value: &Bound<'_, PyAny>, what: &str) -> PyResult<JsonText> {
        json::encode(value, what, self.limit)
    }

    fn save_step<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        outcome: Outcome,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = Arc::clone(&self.engine);
        let state = Arc::clone(&self.state);
        let id = self.id;
        awaitable(py, async move {
            let result = engine.step_finished(id, name, attempt, outcome).await;
            watch(&state, result).map_err(to_py)
        })
    }

    /// Saves the workflow's outcome and records it locally once committed.
    fn finish<'py>(&self, py: Python<'py>, outcome: Outcome) -> PyResult<Bound<'py, PyAny>> {
        let engine = Arc::clone(&self.engine);
        let state = Arc::clone(&self.state);
        let id = self.id;
        awaitable(py, async move {
            let result = engine.workflow_finished(id, outcome.clone()).await;
            watch(&state, result).map_err(to_py)?;
            let mut state = lock(&state);
            match outcome {
                Outcome::Completed(output) => {
                    state.status = Status::Completed;
                    state.output = Some(output);
                }
                Outcome::Failed(error) => {
                    state.status = Status::Failed;
                    state.error = Some(error);
                }
            }
            Ok(())
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
                    workflow: self.name.clone(),
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
    fn mark_step(&self, name: &str, attempt: i32) -> PyResult<()> {
        self.engine.step_started(self.id, name, attempt).map_err(to_py)
    }

    /// Writes the `running` marker of a step's attempt; an awaitable that
    /// resolves once it is committed (for at-most-once steps).
    fn mark_step_durably<'py>(&self, py: Python<'py>, name: String, attempt: i32) -> PyResult<Bound<'py, PyAny>> {
        let engine = Arc::clone(&self.engine);
        let state = Arc::clone(&self.state);
        let id = self.id;
        awaitable(py, async move {
            let result = engine.step_started_durably(id, name, attempt).await;
            watch(&state, result).map_err(to_py)
        })
    }

    /// Saves a step's result. Raises `NotJson` or `ValueTooLarge` at once if
    /// it cannot be saved.
    fn finish_step<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        result: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let output = self.encode(result, &format!("result of step {name:?}"))?;
        self.save_step(py, name, attempt, Outcome::Completed(output))
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
        self.save_step(py, name, attempt, Outcome::Failed(error))
    }

    /// Creates or takes the child workflow `name`; an awaitable of its `Workflow`.
    fn start_child<'py>(
        &self,
        py: Python<'py>,
        name: String,
        input: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let input = self.encode(input, &format!("input of child workflow {name:?}"))?;
        self.claim("child workflow", &name).map_err(to_py)?;
        let engine = Arc::clone(&self.engine);
        let state = Arc::clone(&self.state);
        let parent_id = self.id;
        let parent_name = self.name.clone();
        let limit = self.limit;
        let replay = lock(&self.state).status != Status::Running;
        awaitable(py, async move {
            let parent = Parent {
                workflow: parent_id,
                name: &parent_name,
            };
            let result = if replay {
                engine.replay_child(parent, &name, &input).await
            } else {
                engine.start(Some(parent), &name, &input, None).await
            };
            let started = watch(&state, result).map_err(to_py)?;
            Ok(PyWorkflow::new(engine, name, started, limit))
        })
    }

    /// Marks the workflow completed with `result`.
    fn complete<'py>(&self, py: Python<'py>, result: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let output = self.encode(result, &format!("result of workflow {:?}", self.name))?;
        self.finish(py, Outcome::Completed(output))
    }

    /// Marks the workflow failed with an error record.
    fn fail<'py>(&self, py: Python<'py>, error: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let error = self.encode(error, &format!("error of workflow {:?}", self.name))?;
        self.finish(py, Outcome::Failed(error))
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
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

    #[getter]
    fn status(&self) -> &'static str {
        lock(&self.state).status.as_str()
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
        let output = lock(&self.state).output.clone();
        output.map_or_else(|| Ok(py.None().into_bound(py)), |text| json::decode(py, text.as_str()))
    }

    /// The saved error record, once failed; else None.
    #[getter]
    fn error<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let error = lock(&self.state).error.clone();
        error.map_or_else(|| Ok(py.None().into_bound(py)), |text| json::decode(py, text.as_str()))
    }
}
