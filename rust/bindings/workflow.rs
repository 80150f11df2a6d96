//! `durable._core.Workflow`: the Python face of `engine::WorkflowHandle`,
//! which keeps the rules (replay lookups, duplicate checks, refused
//! finishes). Here arguments and results are converted; writes return
//! awaitables that resolve after commit.

use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::errors::to_py;
use super::json;
use super::os_fork::ForkSafe;
use super::runtime::{abortable, awaitable};
use super::transaction::PyTransaction;
use crate::engine::{Engine, Hold, HoldSlot, JsonText, Outcome, Started, Status, StepVerdict, WorkflowHandle, now_us};

/// The hold of a handle's tree, neither used nor dropped in a child of
/// `os.fork()` (see `ForkSafe`).
pub(crate) type ForkHold = ForkSafe<Option<Hold>>;

/// What the awaitables and transactions of a handle share with it.
pub(crate) type Run = crate::engine::Run<ForkHold>;

impl HoldSlot for ForkHold {
    fn keep(hold: Option<Hold>) -> Self {
        ForkSafe::new(hold)
    }

    fn hold(&self) -> Option<&Hold> {
        self.get().ok().and_then(Option::as_ref)
    }
}

#[pyclass(frozen, module = "durable._core", name = "Workflow")]
pub(crate) struct PyWorkflow {
    engine: ForkSafe<Engine>,
    handle: WorkflowHandle<ForkHold>,
    /// Largest JSON value (bytes) accepted for saving.
    limit: usize,
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
        Self::of(
            engine,
            WorkflowHandle::new(name, input, started, within_finished),
            limit,
        )
    }

    fn of(engine: Engine, handle: WorkflowHandle<ForkHold>, limit: usize) -> Self {
        PyWorkflow {
            engine: ForkSafe::new(engine),
            handle,
            limit,
        }
    }

    fn engine(&self) -> PyResult<Engine> {
        self.engine.get().cloned()
    }

    fn encode(&self, value: &Bound<'_, PyAny>, what: &str) -> PyResult<JsonText> {
        json::encode(value, what, self.limit)
    }

    /// Saves a step's outcome, its attempt ended at `ended_us`; the
    /// awaitable resolves to `value` once committed.
    fn save_step<'py>(
        &self,
        py: Python<'py>,
        name: String,
        attempt: i32,
        outcome: Outcome,
        ended_us: i64,
        value: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?;
        let run = self.handle.run();
        awaitable(py, async move {
            run.save_step(&engine, name, attempt, outcome, ended_us)
                .await
                .map_err(to_py)?;
            Ok(value)
        })
    }

    /// Saves the workflow's outcome and records it in the handle once
    /// committed; the awaitable resolves to `value`.
    fn finish<'py>(&self, py: Python<'py>, outcome: Outcome, value: Py<PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.handle.check_finish(&outcome).map_err(to_py)?;
        let engine = self.engine()?;
        let run = self.handle.run();
        awaitable(py, async move {
            run.finish(&engine, outcome).await.map_err(to_py)?;
            Ok(value)
        })
    }
}

#[pymethods]
impl PyWorkflow {
    /// Looks step `name` up before running it. Returns `(verdict, value,
    /// attempt)`: `("replay", saved_result, attempt)` when a previous run
    /// completed it; `("run", None, attempt)` when the caller should write
    /// its marker and run the body as `attempt`; `("interrupted", message,
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
        match self.handle.begin_step(name, at_most_once).map_err(to_py)? {
            StepVerdict::Replay { output, attempt } => Ok(("replay", json::decode(py, output.as_str())?, attempt)),
            StepVerdict::Run { attempt } => Ok(("run", py.None().into_bound(py), attempt)),
            StepVerdict::Interrupted { message, attempt } => {
                Ok(("interrupted", PyString::new(py, &message).into_any(), attempt))
            }
        }
    }

    /// Queues the `running` marker of a step's attempt, without waiting.
    /// Refuses (before the body runs) when the handle may do no more work:
    /// cancelled, lease lost, released.
    fn mark_step(&self, name: &str, attempt: i32) -> PyResult<()> {
        self.handle.mark_step(self.engine.get()?, name, attempt).map_err(to_py)
    }

    /// Writes the `running` marker of a step's attempt; an awaitable that
    /// resolves once it is committed (for at-most-once steps).
    fn mark_step_durably<'py>(&self, py: Python<'py>, name: String, attempt: i32) -> PyResult<Bound<'py, PyAny>> {
        self.handle.check().map_err(to_py)?;
        let engine = self.engine()?;
        let run = self.handle.run();
        awaitable(py, async move {
            run.mark_step_durably(&engine, name, attempt).await.map_err(to_py)
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
        let ended_us = now_us(); // the body's end: before the result is encoded
        let output = self.encode(result, &format!("result of step {name:?}"))?;
        let value = json::decode(py, output.as_str())?.unbind();
        self.save_step(py, name, attempt, Outcome::Completed(output), ended_us, value)
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
        self.handle.check_ending().map_err(to_py)?;
        let engine = self.engine()?;
        let run = self.handle.run();
        let until = Instant::now() + Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX / 4);
        awaitable(py, async move {
            let message = run.receive(&engine, &name, attempt, &topic, until).await;
            Ok(message.map_err(to_py)?.map(json::Decoded))
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
        self.handle.check().map_err(to_py)?;
        let value = self.encode(value, &format!("event {key:?}"))?;
        let engine = self.engine()?;
        let run = self.handle.run();
        awaitable(py, async move {
            run.set_event(&engine, &name, attempt, &key, &value)
                .await
                .map_err(to_py)
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
        self.handle.check().map_err(to_py)?;
        let wake = self.encode(wake, &format!("wake-up time of sleep {name:?}"))?;
        let engine = self.engine()?;
        let run = self.handle.run();
        awaitable(py, async move {
            run.save_sleep(&engine, &name, attempt, &wake).await.map_err(to_py)
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
        let ended_us = now_us();
        let error = self.encode(error, &format!("error of step {name:?}"))?;
        self.save_step(py, name, attempt, Outcome::Failed(error), ended_us, py.None())
    }

    /// Starts transaction step `name` as `attempt` (after `begin_step` said
    /// "run"): writes its `running` marker and opens a Postgres transaction;
    /// an awaitable of the `Transaction`, whose `commit` saves the result.
    fn begin_transaction<'py>(&self, py: Python<'py>, name: String, attempt: i32) -> PyResult<Bound<'py, PyAny>> {
        self.handle.check().map_err(to_py)?;
        let engine = self.engine()?;
        let run = self.handle.run();
        let limit = self.limit;
        awaitable(py, async move {
            let tx = run.begin_transaction(&engine, name, attempt).await.map_err(to_py)?;
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
        let child = self.handle.claim_child(name).map_err(to_py)?;
        let engine = self.engine()?;
        let run = self.handle.run();
        let limit = self.limit;
        awaitable(py, async move {
            let handle = run.start_child(&engine, child, input).await.map_err(to_py)?;
            Ok(PyWorkflow::of(engine, handle, limit))
        })
    }

    /// Marks the workflow completed with `result`; the awaitable resolves to
    /// the result as a replay will return it (its JSON form).
    fn complete<'py>(&self, py: Python<'py>, result: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let output = self.encode(result, &format!("result of workflow {:?}", self.handle.name()))?;
        let value = json::decode(py, output.as_str())?.unbind();
        self.finish(py, Outcome::Completed(output), value)
    }

    /// Marks the workflow failed with an error record.
    fn fail<'py>(&self, py: Python<'py>, error: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let error = self.encode(error, &format!("error of workflow {:?}", self.handle.name()))?;
        self.finish(py, Outcome::Failed(error), py.None())
    }

    /// Gives the workflow up without finishing it; an awaitable that
    /// resolves once the database lets anyone resume it. On a root: every
    /// handle of its tree stops. On a child: this handle stops (its parent's
    /// holder may start it again).
    fn release<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let released = self.handle.release();
        awaitable(py, async move {
            released.await;
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
        let engine = self.engine()?;
        let run = self.handle.run();
        awaitable(py, async move {
            run.note_wait(&engine, waiting.as_ref()).await.map_err(to_py)
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
        let hold = self.handle.suspension_hold().map_err(to_py)?;
        let engine = self.engine()?;
        let run = self.handle.run();
        awaitable(py, async move {
            let suspended = run.suspend(
                &engine,
                hold,
                until_us,
                &waiting,
                waiting_on.as_deref(),
                topic.as_deref(),
            );
            suspended.await.map_err(to_py)
        })
    }

    /// An awaitable that ends when the work of this tree stops: it raises
    /// why (`Cancelled`, `LeaseLost`...) once the hold ends; with `drain`,
    /// it returns True when a graceful stop begins. Never resolves for a
    /// handle that only replays. Cancelling the await stops it.
    #[pyo3(signature = (drain = false))]
    fn stopped<'py>(&self, py: Python<'py>, drain: bool) -> PyResult<Bound<'py, PyAny>> {
        let run = self.handle.run();
        abortable(py, async move {
            run.stopped(drain).await.map_err(to_py)?;
            Ok(true)
        })
    }

    /// True once a graceful stop (`drain`) began for this tree.
    #[getter]
    fn draining(&self) -> bool {
        self.handle.draining()
    }

    /// Records that this tree's root waits for the root run `run` (None: it
    /// no longer waits), refusing with `WaitCycle` a wait that would close
    /// a cycle (see `Engine::wait_on`); an awaitable.
    fn wait_on<'py>(&self, py: Python<'py>, run: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let Some(root) = self.handle.tree_root() else {
            return awaitable(py, async { Ok(()) });
        };
        let engine = self.engine()?;
        let held = self.handle.run();
        awaitable(py, async move {
            held.wait_on(&engine, root, run.as_deref()).await.map_err(to_py)
        })
    }

    /// `release`, without waiting for the database (for a run that was
    /// cancelled, which should not wait).
    fn release_soon(&self) {
        self.handle.release_soon();
    }

    /// Starts a graceful stop of the tree: from now on its handles start no
    /// new step, child or retry (they raise `asyncio.CancelledError`), while
    /// what runs finishes and saves its result.
    fn drain(&self) {
        self.handle.drain();
    }

    /// True when `value`'s JSON form is the workflow's input.
    fn same_input(&self, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.encode(value, "input")?.as_str() == self.handle.input().as_str())
    }

    /// The workflow's input, as saved (its JSON form).
    #[getter]
    fn input<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json::decode(py, self.handle.input().as_str())
    }

    #[getter]
    fn name(&self) -> &str {
        self.handle.name()
    }

    #[getter]
    fn id(&self) -> i64 {
        self.handle.id().id
    }

    #[getter]
    fn root_id(&self) -> i64 {
        self.handle.id().root_id
    }

    /// The lease epoch this process holds the workflow under.
    #[getter]
    fn epoch(&self) -> i64 {
        self.handle.id().epoch
    }

    /// Runs of this workflow so far, this one included.
    #[getter]
    fn attempt(&self) -> i32 {
        self.handle.attempt()
    }

    /// True when this start created the workflow (its first run).
    #[getter]
    fn created(&self) -> bool {
        self.handle.created()
    }

    /// The status as this handle knows it: `cancelled` as soon as it was
    /// told (by this process, or by the cancel notification).
    #[getter]
    fn status(&self) -> &'static str {
        self.handle.status().as_str()
    }

    /// Seconds left before the deadline (negative once passed), or None.
    #[getter]
    fn deadline_in(&self) -> Option<f64> {
        self.handle.deadline_in()
    }

    /// The saved result, once completed; else None.
    #[getter]
    fn output<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let output = self.handle.output();
        output.map_or_else(|| Ok(py.None().into_bound(py)), |text| json::decode(py, text.as_str()))
    }

    /// The saved error record, once failed; else None.
    #[getter]
    fn error<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let error = self.handle.error();
        error.map_or_else(|| Ok(py.None().into_bound(py)), |text| json::decode(py, text.as_str()))
    }
}
