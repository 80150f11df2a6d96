//! `durable._core.Workflow`: one started workflow, its saved history, and
//! the names used in this run. Replay lookups and duplicate checks happen
//! here, synchronously; writes return awaitables that resolve after commit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;

use super::errors::{not_json, to_py};
use super::json;
use super::runtime::awaitable;
use crate::engine::{
    Engine, EngineError, HistoryEntry, JsonText, Kind, Outcome, Parent, Started, Status,
    WorkflowId, validate_name,
};

#[pyclass(frozen, module = "durable._core", name = "Workflow")]
pub(crate) struct PyWorkflow {
    engine: Arc<Engine>,
    id: WorkflowId,
    name: String,
    attempt: i32,
    created: bool,
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
}

impl PyWorkflow {
    pub(crate) fn new(engine: Arc<Engine>, name: String, started: Started) -> Self {
        PyWorkflow {
            engine,
            id: started.workflow,
            name,
            attempt: started.attempt,
            created: started.created,
            state: Arc::new(Mutex::new(State {
                status: started.status,
                output: started.output,
                error: started.error,
                history: started.history,
                used: HashSet::new(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain data; the data is still consistent enough to report from.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims `name` for this run and returns what the history holds for it.
    fn claim(&self, what: &'static str, name: &str) -> Result<Option<HistoryEntry>, EngineError> {
        validate_name(what, name)?;
        let mut state = self.state();
        if !state.used.insert(name.to_owned()) {
            return Err(self.duplicate(name));
        }
        let entry = state.history.get(name).cloned();
        let wanted = if what == "step" {
            Kind::Step
        } else {
            Kind::Workflow
        };
        match &entry {
            Some(entry) if entry.kind != wanted => Err(self.duplicate(name)),
            // A finished workflow replays its history and takes nothing new.
            None if state.status != Status::Running => Err(EngineError::WorkflowFinished {
                workflow: self.name.clone(),
                status: state.status.as_str(),
                what,
                name: name.to_owned(),
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

    /// Saves the workflow's outcome and records it locally once committed.
    fn finish<'py>(&self, py: Python<'py>, outcome: Outcome) -> PyResult<Bound<'py, PyAny>> {
        let engine = Arc::clone(&self.engine);
        let state = Arc::clone(&self.state);
        let id = self.id;
        awaitable(py, async move {
            engine
                .workflow_finished(id, outcome.clone())
                .await
                .map_err(to_py)?;
            let mut state = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    /// Starts step `name`: returns `(True, saved_result, attempt)` when a
    /// previous run completed it, else queues its `running` marker and
    /// returns `(False, None, attempt)` for the caller to run the body.
    fn begin_step<'py>(
        &self,
        py: Python<'py>,
        name: &str,
    ) -> PyResult<(bool, Bound<'py, PyAny>, i32)> {
        let entry = self.claim("step", name).map_err(to_py)?;
        if let Some(HistoryEntry {
            status: Status::Completed,
            output,
            attempt,
            ..
        }) = &entry
        {
            let saved = output.as_ref().map_or("null", JsonText::as_str);
            return Ok((true, json::decode(py, saved)?, *attempt));
        }
        let attempt = entry.map_or(1, |e| e.attempt + 1);
        self.engine
            .step_started(self.id, name, attempt)
            .map_err(to_py)?;
        Ok((false, py.None().into_bound(py), attempt))
    }

    /// Saves a step's result. Raises `NotJson` at once if it is not JSON.
    fn finish_step<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        result: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let output =
            json::encode(result).map_err(|e| not_json(&format!("result of step {name:?}"), &e))?;
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
        let error =
            json::encode(error).map_err(|e| not_json(&format!("error of step {name:?}"), &e))?;
        self.save_step(py, name, attempt, Outcome::Failed(error))
    }

    /// Creates or resumes the child workflow `name`; an awaitable of its `Workflow`.
    fn start_child<'py>(
        &self,
        py: Python<'py>,
        name: String,
        input: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let input = json::encode(input)
            .map_err(|e| not_json(&format!("input of child workflow {name:?}"), &e))?;
        self.claim("child workflow", &name).map_err(to_py)?;
        let engine = Arc::clone(&self.engine);
        let parent_id = self.id;
        let parent_name = self.name.clone();
        awaitable(py, async move {
            let parent = Parent {
                workflow: parent_id,
                name: &parent_name,
            };
            let started = engine
                .start(Some(parent), &name, &input)
                .await
                .map_err(to_py)?;
            Ok(PyWorkflow::new(engine, name, started))
        })
    }

    /// Marks the workflow completed with `result`.
    fn complete<'py>(
        &self,
        py: Python<'py>,
        result: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let output = json::encode(result)
            .map_err(|e| not_json(&format!("result of workflow {:?}", self.name), &e))?;
        self.finish(py, Outcome::Completed(output))
    }

    /// Marks the workflow failed with an error record.
    fn fail<'py>(&self, py: Python<'py>, error: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let error = json::encode(error)
            .map_err(|e| not_json(&format!("error of workflow {:?}", self.name), &e))?;
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
        self.state().status.as_str()
    }

    /// The saved result, once completed; else None.
    #[getter]
    fn output<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let output = self.state().output.clone();
        output.map_or_else(
            || Ok(py.None().into_bound(py)),
            |text| json::decode(py, text.as_str()),
        )
    }

    /// The saved error record, once failed; else None.
    #[getter]
    fn error<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let error = self.state().error.clone();
        error.map_or_else(
            || Ok(py.None().into_bound(py)),
            |text| json::decode(py, text.as_str()),
        )
    }
}

impl PyWorkflow {
    fn save_step<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        outcome: Outcome,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = Arc::clone(&self.engine);
        let id = self.id;
        awaitable(py, async move {
            engine
                .step_finished(id, name, attempt, outcome)
                .await
                .map_err(to_py)
        })
    }
}
