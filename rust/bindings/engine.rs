//! `durable._core.Engine`: a connected engine (pool, migrations, lease
//! owner, writer).

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::errors::{ConfigError, to_py};
use super::json;
use super::logs;
use super::os_fork::ForkSafe;
use super::runtime::{abortable, awaitable};
use super::workflow::PyWorkflow;
use crate::engine::{
    BrowseFilter, BrowsedTree, CancelScope, ClaimLimits, Engine, Enqueue, EnqueueMany, EventRead, Forked, JsonText,
    Moment, Options, QueueInfo, QueueLimits, Recovered, RunFilter, RunInfo, Sender, Sent, Ticks, WorkflowTree, limits,
    validate_name,
};

#[pyclass(frozen, module = "durable._core", name = "Engine")]
pub(crate) struct PyEngine {
    engine: ForkSafe<Engine>,
    /// Largest JSON value (bytes) accepted for saving.
    max_value_bytes: usize,
}

/// A finite number of seconds in `(0, at_most]`, or a `ConfigError` naming `what`.
pub(crate) fn seconds(what: &str, value: f64, at_most: Duration) -> PyResult<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if value > 0.0 && duration <= at_most => Ok(duration),
        _ => Err(ConfigError::new_err(format!(
            "{what} must be a positive number of seconds (at most {}), not {value}",
            at_most.as_secs_f64()
        ))),
    }
}

/// Which runs a read of `durable ui` selects: a `durable._query.RunQuery`,
/// read by attribute (times in microseconds since the epoch).
#[derive(FromPyObject)]
struct RunQuery {
    status: Option<String>,
    queue: Option<String>,
    name_prefix: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    workflow: Option<String>,
    input: Option<String>,
    parent: Option<Vec<String>>,
    before: Option<i64>,
    limit: i64,
}

impl RunQuery {
    /// The engine's filter, borrowing this query.
    fn filter(&self) -> BrowseFilter<'_> {
        BrowseFilter {
            runs: RunFilter {
                status: self.status.as_deref(),
                queue: self.queue.as_deref(),
                name_prefix: self.name_prefix.as_deref(),
                since: self.since,
                limit: self.limit,
            },
            workflow: self.workflow.as_deref(),
            input: self.input.as_deref(),
            until: self.until,
            parent: self.parent.as_deref(),
            before: self.before,
        }
    }
}

/// `seconds`, or zero: for a delay or a grace that may be none.
fn seconds_or_zero(what: &str, value: f64, at_most: Duration) -> PyResult<Duration> {
    if value == 0.0 {
        Ok(Duration::ZERO)
    } else {
        seconds(what, value, at_most)
    }
}

impl PyEngine {
    pub(crate) fn engine(&self) -> PyResult<&Engine> {
        self.engine.get()
    }
}

#[pymethods]
impl PyEngine {
    /// Connects, migrates and registers this process; an awaitable of the engine.
    #[staticmethod]
    #[pyo3(signature = (
        dsn, *, schema, max_connections, connect_timeout, lease, reconnect_timeout, session_grace,
        max_value_bytes, host, migrate = true
    ))]
    #[allow(clippy::too_many_arguments)] // keyword-only options, each documented in durable.init
    fn connect(
        py: Python<'_>,
        dsn: String,
        schema: String,
        max_connections: i64,
        connect_timeout: f64,
        lease: f64,
        reconnect_timeout: f64,
        session_grace: f64,
        max_value_bytes: i64,
        host: String,
        migrate: bool,
    ) -> PyResult<Bound<'_, PyAny>> {
        if !(1..=limits::MAX_VALUE_BYTES).contains(&max_value_bytes) {
            return Err(ConfigError::new_err(format!(
                "max_value_bytes must be from 1 to {} (the most jsonb holds), not {max_value_bytes}",
                limits::MAX_VALUE_BYTES
            )));
        }
        let options = Options {
            schema,
            max_connections: usize::try_from(max_connections).unwrap_or(0),
            connect_timeout: seconds("connect_timeout", connect_timeout, limits::MAX_CONNECT_TIMEOUT)?,
            lease: seconds("lease", lease, limits::MAX_LEASE)?,
            reconnect_timeout: seconds("reconnect_timeout", reconnect_timeout, limits::MAX_RECONNECT_TIMEOUT)?,
            session_grace: seconds_or_zero("session_grace", session_grace, limits::MAX_SESSION_GRACE)?,
            host,
            migrate,
        };
        options.validate().map_err(to_py)?;
        logs::follow_level(py)?;
        let max_value_bytes = usize::try_from(max_value_bytes).unwrap_or(1);
        awaitable(py, async move {
            let engine = Engine::connect(&dsn, &options).await.map_err(to_py)?;
            Ok(PyEngine {
                engine: ForkSafe::new(engine),
                max_value_bytes,
            })
        })
    }

    /// Creates or takes the root workflow `name`; an awaitable of its
    /// `Workflow`. `workflow`: the registered function that runs it.
    #[pyo3(signature = (name, input, deadline = None, workflow = None))]
    fn start<'py>(
        &self,
        py: Python<'py>,
        name: String,
        input: &Bound<'py, PyAny>,
        deadline: Option<f64>,
        workflow: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        validate_name("workflow", &name).map_err(to_py)?;
        let deadline = deadline
            .map(|d| seconds("deadline", d, limits::MAX_DURATION))
            .transpose()?;
        let input = json::encode(input, &format!("input of workflow {name:?}"), self.max_value_bytes)?;
        let limit = self.max_value_bytes;
        awaitable(py, async move {
            let started = match &workflow {
                Some(workflow) => engine.start_registered(&name, &input, deadline, workflow).await,
                None => engine.start(None, &name, &input, deadline).await,
            };
            Ok(PyWorkflow::new(
                engine,
                name,
                input,
                started.map_err(to_py)?,
                None,
                limit,
            ))
        })
    }

    /// Queues the run `name` of the registered function `workflow`, sent
    /// with the other enqueues of the moment in one statement; an awaitable
    /// of `(id, status, created, queue_created)`. `Workflow.enqueue` queues
    /// through it. `enqueued_by`: the id of the workflow that enqueues it,
    /// if one does.
    #[allow(clippy::too_many_arguments)] // one per column of the run
    #[pyo3(signature = (name, workflow, input, queue, delay, priority, key = None, run_at = None, enqueued_by = None))]
    fn enqueue<'py>(
        &self,
        py: Python<'py>,
        name: String,
        workflow: String,
        input: &Bound<'py, PyAny>,
        queue: String,
        delay: f64,
        priority: i32,
        key: Option<String>,
        run_at: Option<String>,
        enqueued_by: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let input = json::encode(input, &format!("input of workflow {name:?}"), self.max_value_bytes)?;
        let delay = seconds_or_zero("delay", delay, limits::MAX_DURATION)?;
        awaitable(py, async move {
            let enqueued = engine
                .enqueue(&Enqueue {
                    name: &name,
                    input: &input,
                    workflow: &workflow,
                    queue: &queue,
                    delay,
                    run_at: run_at.as_deref(),
                    priority,
                    key: key.as_deref(),
                    enqueued_by,
                })
                .await
                .map_err(to_py)?;
            Ok((
                enqueued.id,
                enqueued.status.as_str(),
                enqueued.created,
                enqueued.queue_created,
            ))
        })
    }

    /// Queues runs of the registered function `workflow` (`names[i]` with
    /// `inputs[i]`) in one statement; an awaitable of a list of `(id, status,
    /// created, queue_created)`, one per run. `Workflow.enqueue` queues one.
    /// `enqueued_by`: the id of the workflow that enqueues them, if one does.
    #[allow(clippy::too_many_arguments)] // one per column of the runs
    #[pyo3(signature = (names, workflow, inputs, queue, delay, priority, key = None, run_at = None, enqueued_by = None))]
    fn enqueue_many<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        workflow: String,
        inputs: &Bound<'py, PyList>,
        queue: String,
        delay: f64,
        priority: i32,
        key: Option<String>,
        run_at: Option<String>,
        enqueued_by: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        if names.len() != inputs.len() {
            return Err(ConfigError::new_err(format!(
                "enqueue_many: {} names for {} inputs",
                names.len(),
                inputs.len()
            )));
        }
        let inputs = names
            .iter()
            .zip(inputs.iter())
            .map(|(name, input)| json::encode(&input, &format!("input of workflow {name:?}"), self.max_value_bytes))
            .collect::<PyResult<Vec<JsonText>>>()?;
        let delay = seconds_or_zero("delay", delay, limits::MAX_DURATION)?;
        awaitable(py, async move {
            let runs: Vec<(&str, &JsonText)> = names.iter().map(String::as_str).zip(&inputs).collect();
            let enqueued = engine
                .enqueue_many(&EnqueueMany {
                    runs: &runs,
                    workflow: &workflow,
                    queue: &queue,
                    delay,
                    run_at: run_at.as_deref(),
                    priority,
                    key: key.as_deref(),
                    enqueued_by,
                })
                .await
                .map_err(to_py)?;
            Ok(enqueued
                .into_iter()
                .map(|e| (e.id, e.status.as_str(), e.created, e.queue_created))
                .collect::<Vec<_>>())
        })
    }

    /// Creates the queue `name` or updates the limits given; an awaitable.
    /// `rates`: `(max_starts, period_seconds)` windows, replacing the queue's.
    #[pyo3(signature = (name, concurrency = None, concurrency_per_key = None, rates = None))]
    fn create_queue<'py>(
        &self,
        py: Python<'py>,
        name: String,
        concurrency: Option<i32>,
        concurrency_per_key: Option<i32>,
        rates: Option<Vec<(i32, f64)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let rates = rates
            .map(|rates| {
                rates
                    .into_iter()
                    .map(|(n, period)| Ok((n, seconds("rate limit period", period, limits::MAX_DURATION)?)))
                    .collect::<PyResult<Vec<_>>>()
            })
            .transpose()?;
        let limits = QueueLimits {
            concurrency,
            concurrency_per_key,
            rates,
        };
        awaitable(
            py,
            async move { engine.create_queue(&name, &limits).await.map_err(to_py) },
        )
    }

    /// Pauses or resumes the queue `name`; an awaitable.
    fn set_queue_paused<'py>(&self, py: Python<'py>, name: String, paused: bool) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            engine.set_queue_paused(&name, paused).await.map_err(to_py)
        })
    }

    /// Claims up to `max` runs of `queue` (None: runs of no queue) of the
    /// functions `workflows`; an awaitable of `[(function, Workflow)]`.
    /// `isolated`: claim one isolated run to run alone (see `ClaimLimits`).
    #[pyo3(signature = (queue, max, workflows, version = None, isolated = false))]
    fn claim<'py>(
        &self,
        py: Python<'py>,
        queue: Option<String>,
        max: usize,
        workflows: Vec<String>,
        version: Option<String>,
        isolated: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let limit = self.max_value_bytes;
        awaitable(py, async move {
            let limits = ClaimLimits {
                max,
                workflows: &workflows,
                version: version.as_deref(),
                isolated,
            };
            let claimed = engine.claim(queue.as_deref(), limits).await.map_err(to_py)?;
            Ok(claimed
                .into_iter()
                .map(|run| {
                    let handle = PyWorkflow::new(engine.clone(), run.name, run.input, run.started, None, limit);
                    (run.workflow, handle)
                })
                .collect::<Vec<_>>())
        })
    }

    /// One recovery pass for `workflows` (see `Engine::recover`); an
    /// awaitable of a dict: `requeued`, `failed`, `orphans`, `freed`,
    /// `queues` (with waiting runs), `isolated_waiting`.
    #[pyo3(signature = (workflows, max_recoveries, version = None))]
    fn recover<'py>(
        &self,
        py: Python<'py>,
        workflows: Vec<String>,
        max_recoveries: i32,
        version: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            let found = engine
                .recover(&workflows, version.as_deref(), max_recoveries)
                .await
                .map_err(to_py)?;
            Ok(RecoveryPass(found))
        })
    }

    /// Seconds until a waiting run of `workflows` (at `version`) may become
    /// claimable by time alone, or None (see `Engine::next_due`; `since`:
    /// seconds since the claims this follows began); an awaitable.
    #[pyo3(signature = (workflows, version = None, since = 0.0))]
    fn next_due<'py>(
        &self,
        py: Python<'py>,
        workflows: Vec<String>,
        version: Option<String>,
        since: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let since = Duration::try_from_secs_f64(since.clamp(0.0, 3600.0)).unwrap_or_default();
        awaitable(py, async move {
            let due = engine
                .next_due(&workflows, version.as_deref(), since)
                .await
                .map_err(to_py)?;
            Ok(due.map(|d| d.as_secs_f64()))
        })
    }

    /// Registers (or confirms) the schedule `spec` of `workflow` (a new one
    /// starts at `first_tick`) and removes the function's other specs unseen
    /// for `forget_after` seconds; an awaitable of `(next_tick, now,
    /// forgotten specs)`, times in microseconds since the epoch on the
    /// database's clock.
    fn schedule<'py>(
        &self,
        py: Python<'py>,
        workflow: String,
        spec: String,
        first_tick: i64,
        forget_after: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let forget_after = seconds("forget_after", forget_after, limits::MAX_DURATION)?;
        awaitable(py, async move {
            let registered = engine
                .schedule(&workflow, &spec, first_tick, forget_after)
                .await
                .map_err(to_py)?;
            Ok((registered.state.next_tick, registered.state.now, registered.forgotten))
        })
    }

    /// The schedule `spec` of `workflow` as it is now; an awaitable of
    /// `(next_tick, now)` or None.
    fn schedule_state<'py>(&self, py: Python<'py>, workflow: String, spec: String) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            let state = engine.schedule_state(&workflow, &spec).await.map_err(to_py)?;
            Ok(state.map(|state| (state.next_tick, state.now)))
        })
    }

    /// Advances the schedule `spec` of `workflow` from `seen` to `next`,
    /// queueing the runs `names` with `inputs` in `queue`, unless another
    /// executor did first; an awaitable of whether this call did.
    #[allow(clippy::too_many_arguments)] // the compare-and-set and the runs it queues
    fn advance_schedule<'py>(
        &self,
        py: Python<'py>,
        workflow: String,
        spec: String,
        queue: String,
        seen: i64,
        next: i64,
        names: Vec<String>,
        inputs: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let inputs = names
            .iter()
            .zip(inputs)
            .map(|(name, input)| json::encode(&input, &format!("input of workflow {name:?}"), self.max_value_bytes))
            .collect::<PyResult<Vec<_>>>()?;
        awaitable(py, async move {
            let ticks = Ticks {
                workflow: &workflow,
                spec: &spec,
                queue: &queue,
                seen,
                next,
                names,
                inputs,
            };
            engine.advance_schedule(&ticks).await.map_err(to_py)
        })
    }

    /// Puts the failed or cancelled root `name` back to run; an awaitable of
    /// whether there was one.
    fn resume<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move { engine.resume(&name).await.map_err(to_py) })
    }

    /// The roots that match the filters, newest first; an awaitable of dicts
    /// (see `RunInfo`).
    #[pyo3(signature = (status = None, queue = None, name_prefix = None, since = None, limit = 100))]
    fn list_runs<'py>(
        &self,
        py: Python<'py>,
        status: Option<String>,
        queue: Option<String>,
        name_prefix: Option<String>,
        since: Option<i64>,
        limit: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            let filter = RunFilter {
                status: status.as_deref(),
                queue: queue.as_deref(),
                name_prefix: name_prefix.as_deref(),
                since,
                limit,
            };
            let runs = engine.list_runs(&filter).await.map_err(to_py)?;
            Ok(runs.into_iter().map(Info).collect::<Vec<_>>())
        })
    }

    /// The runs that `query` (a `RunQuery`) selects, newest first, in a
    /// read-only transaction under a statement timeout (seconds), for
    /// `durable ui`: `list_runs`'s filter, and the function `workflow`,
    /// `input` a JSON path predicate on the input, below the id `before`
    /// (None: from the newest); with `parent`, its child workflows instead
    /// of the roots.
    fn browse_runs<'py>(&self, py: Python<'py>, query: RunQuery, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(py, async move {
            let runs = engine.browse_runs(&query.filter(), timeout).await.map_err(to_py)?;
            Ok(runs.into_iter().map(Info).collect::<Vec<_>>())
        })
    }

    /// A version of what `browse_runs` answers for the same query (a
    /// string that changes when a run appears in it, leaves it or changes),
    /// for the live pages of `durable ui`; an awaitable of a string.
    fn runs_version<'py>(&self, py: Python<'py>, query: RunQuery, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(py, async move {
            engine.runs_version(&query.filter(), timeout).await.map_err(to_py)
        })
    }

    /// A version of the tree of the root named `root` (changes when anything
    /// in it does), None if there is no such root, under a statement timeout
    /// (seconds), for the live pages of `durable ui`.
    fn tree_version<'py>(&self, py: Python<'py>, root: String, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(
            py,
            async move { engine.tree_version(&root, timeout).await.map_err(to_py) },
        )
    }

    /// `tree` of the workflow at `path` (the root's name, then each
    /// child's), in a read-only transaction under a statement timeout
    /// (seconds), for `durable ui`.
    fn browse_tree<'py>(&self, py: Python<'py>, path: Vec<String>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(py, async move {
            Ok(engine.browse_tree(&path, timeout).await.map_err(to_py)?.map(Browsed))
        })
    }

    /// The JSON text of the `column` (`input`, `output` or `error`) of the
    /// task `id`, as the database holds it (None: no such task, or no
    /// value), under a statement timeout (seconds), for `durable ui`.
    fn browse_value<'py>(&self, py: Python<'py>, id: i64, column: String, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(py, async move {
            engine.browse_value(id, &column, timeout).await.map_err(to_py)
        })
    }

    /// For each status (None: any), how many runs `query` selects but its
    /// status, counting at most its limit; an awaitable of ints, for
    /// `durable ui`.
    fn count_runs<'py>(
        &self,
        py: Python<'py>,
        statuses: Vec<Option<String>>,
        query: RunQuery,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(py, async move {
            engine
                .count_runs(&statuses, &query.filter(), timeout)
                .await
                .map_err(to_py)
        })
    }

    /// How many due runs of its queue come before the waiting root `id`,
    /// counting at most `cap` (None: it is not waiting in a queue), for
    /// `durable ui`.
    fn runs_ahead<'py>(&self, py: Python<'py>, id: i64, cap: i64, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(
            py,
            async move { engine.runs_ahead(id, cap, timeout).await.map_err(to_py) },
        )
    }

    /// How many roots there are, as the planner estimates it; an awaitable
    /// of an int, for `durable ui`.
    fn estimate_roots<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move { engine.estimate_roots().await.map_err(to_py) })
    }

    /// The names of the registered functions known cheaply (scheduled, of
    /// executors, of the newest `recent` roots), for `durable ui`.
    fn known_workflows<'py>(&self, py: Python<'py>, recent: i64, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(py, async move {
            engine.known_workflows(recent, timeout).await.map_err(to_py)
        })
    }

    /// The workflow at `path` (the root's name, then each child's); an
    /// awaitable of a dict or None.
    fn run_info<'py>(&self, py: Python<'py>, path: Vec<String>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(
            py,
            async move { Ok(engine.run_info(&path).await.map_err(to_py)?.map(Info)) },
        )
    }

    /// The workflow at `path` with its steps and children, recursively; an
    /// awaitable of `{"info": dict, "steps": [dict], "children": [tree]}`
    /// (dicts as `run_info`'s) or None.
    fn tree<'py>(&self, py: Python<'py>, path: Vec<String>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(
            py,
            async move { Ok(engine.tree(&path).await.map_err(to_py)?.map(Tree)) },
        )
    }

    /// `list_queues` in a read-only transaction under a statement timeout
    /// (seconds), for `durable ui`.
    fn browse_queues<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(py, async move {
            let queues = engine.browse_queues(timeout).await.map_err(to_py)?;
            Ok(queues.into_iter().map(Queue).collect::<Vec<_>>())
        })
    }

    /// Every schedule, for `durable ui`; an awaitable of `(workflow, spec,
    /// next_tick, seen_at)` tuples (times as `Time`).
    fn browse_schedules<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(py, async move {
            let schedules = engine.browse_schedules(timeout).await.map_err(to_py)?;
            Ok(schedules
                .into_iter()
                .map(|s| (s.workflow, s.spec, Time(s.next_tick), Time(s.seen_at)))
                .collect::<Vec<_>>())
        })
    }

    /// The roots named `names` (those that exist), newest first, for
    /// `durable ui`; an awaitable of dicts as `run_info`'s.
    fn browse_named<'py>(&self, py: Python<'py>, names: Vec<String>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = read_timeout(timeout)?;
        awaitable(py, async move {
            let runs = engine.browse_named(&names, timeout).await.map_err(to_py)?;
            Ok(runs.into_iter().map(Info).collect::<Vec<_>>())
        })
    }

    /// Every queue by name; an awaitable of dicts (see `QueueInfo`).
    fn list_queues<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            let queues = engine.list_queues().await.map_err(to_py)?;
            Ok(queues.into_iter().map(Queue).collect::<Vec<_>>())
        })
    }

    /// Deletes the trees of roots finished more than `older_than` seconds
    /// ago, `batch` roots per transaction; an awaitable of how many roots.
    fn gc<'py>(&self, py: Python<'py>, older_than: f64, batch: i64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let older_than = Duration::try_from_secs_f64(older_than).map_err(|_| {
            ConfigError::new_err(format!("older_than must be a number of seconds ≥ 0, not {older_than}"))
        })?;
        awaitable(py, async move { engine.gc(older_than, batch).await.map_err(to_py) })
    }

    /// Registers an executor of this process running `workflows` at
    /// `version`; an awaitable of its number (for `unregister_executor`).
    #[pyo3(signature = (workflows, version = None))]
    fn register_executor<'py>(
        &self,
        py: Python<'py>,
        workflows: Vec<String>,
        version: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            engine
                .register_executor(&workflows, version.as_deref())
                .await
                .map_err(to_py)
        })
    }

    /// Removes the registration of executor `id`; an awaitable.
    fn unregister_executor<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move { engine.unregister_executor(id).await.map_err(to_py) })
    }

    /// A counter that changes whenever work may have become claimable.
    fn work_version(&self) -> PyResult<u64> {
        Ok(self.engine()?.work_version())
    }

    /// Waits until `work_version()` differs from `seen` or `timeout`
    /// seconds passed; an awaitable of whether it changed.
    fn work_changed<'py>(&self, py: Python<'py>, seen: u64, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(limits::MAX_DURATION);
        abortable(py, async move { Ok(engine.work_changed(seen, timeout).await) })
    }

    /// Waits until the root run `name` finished or `timeout` seconds passed
    /// (0: look once); an awaitable of `(status, output, error)`, or None
    /// when there is no such run.
    #[pyo3(signature = (name, timeout = 0.0))]
    fn run_state<'py>(&self, py: Python<'py>, name: String, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(limits::MAX_DURATION);
        abortable(py, async move {
            let state = engine.wait_finished(&name, timeout).await.map_err(to_py)?;
            Ok(state.map(|state| {
                (
                    state.status.as_str(),
                    state.output.map(json::Decoded),
                    state.error.map(json::Decoded),
                )
            }))
        })
    }

    /// Sends `value` on `topic` to the workflow at `path` (the root's name,
    /// then each child's); an awaitable of
    /// `"sent"`, `"duplicate"` (another sender sent a message of that `key`
    /// before) or `"no workflow"`. `sender`: the sending workflow's id and
    /// step, for a send made by a step.
    #[pyo3(signature = (path, topic, value, key = None, sender = None))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        path: Vec<String>,
        topic: String,
        value: &Bound<'py, PyAny>,
        key: Option<String>,
        sender: Option<(i64, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let value = json::encode(value, &format!("message on {topic:?}"), self.max_value_bytes)?;
        awaitable(py, async move {
            let sender = sender.as_ref().map(|(workflow_id, step)| Sender {
                workflow_id: *workflow_id,
                step,
            });
            let sent = engine
                .send(&path, &topic, &value, key.as_deref(), sender)
                .await
                .map_err(to_py)?;
            Ok(match sent {
                Sent::Sent => "sent",
                Sent::Duplicate => "duplicate",
                Sent::NoWorkflow => "no workflow",
            })
        })
    }

    /// The event `key` of the workflow at `path` (the root's name, then
    /// each child's), waiting up to `timeout` seconds; an awaitable of
    /// `("value", value)`, `("not yet", None)` or `("no workflow", None)`.
    fn get_event<'py>(
        &self,
        py: Python<'py>,
        path: Vec<String>,
        key: String,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(limits::MAX_DURATION);
        abortable(py, async move {
            Ok(match engine.get_event(&path, &key, timeout).await.map_err(to_py)? {
                EventRead::Value(value) => ("value", Some(json::Decoded(value))),
                EventRead::NotYet => ("not yet", None),
                EventRead::NoWorkflow => ("no workflow", None),
            })
        })
    }

    /// Forks the root `name` as `new_name` from its step `from_step`, with
    /// `input` if `replace_input`; an awaitable of `(outcome, status, kept)`,
    /// outcome one of `made`, `no source`, `no step`, `name taken`.
    #[pyo3(signature = (name, new_name, from_step, input, replace_input))]
    fn fork<'py>(
        &self,
        py: Python<'py>,
        name: String,
        new_name: String,
        from_step: Option<String>,
        input: &Bound<'py, PyAny>,
        replace_input: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let input = if replace_input {
            Some(json::encode(
                input,
                &format!("input of the fork {new_name:?}"),
                self.max_value_bytes,
            )?)
        } else {
            None
        };
        awaitable(py, async move {
            let forked = engine
                .fork(&name, &new_name, from_step.as_deref(), input.as_ref())
                .await
                .map_err(to_py)?;
            Ok(match forked {
                Forked::Made { status, kept } => ("made", Some(status), kept),
                Forked::NoSource => ("no source", None, 0),
                Forked::NoStep => ("no step", None, 0),
                Forked::NameTaken => ("name taken", None, 0),
            })
        })
    }

    /// The database's clock, microseconds since the epoch; an awaitable.
    fn db_now<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move { engine.db_now().await.map_err(to_py) })
    }

    /// Wakes the waiting root with id `root_id`: suspended, it is due now;
    /// still running, its next suspension is refused. An awaitable of
    /// whether either happened.
    fn wake<'py>(&self, py: Python<'py>, root_id: i64) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move { engine.wake(root_id).await.map_err(to_py) })
    }

    /// Cancels the workflow at `path` (the root's name, then each
    /// child's), with `children` every unfinished workflow under it, with
    /// `enqueued` the runs its workflows enqueued; an awaitable of whether
    /// anything was cancelled.
    #[pyo3(signature = (path, *, children, enqueued))]
    fn cancel<'py>(
        &self,
        py: Python<'py>,
        path: Vec<String>,
        children: bool,
        enqueued: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        let scope = CancelScope { children, enqueued };
        awaitable(py, async move { engine.cancel(&path, scope).await.map_err(to_py) })
    }

    /// What the group commits did so far. The checkpoint writer: `commits`
    /// (statements committed), `records` (rows written in them), `splits`
    /// (batches split to isolate a record the server refused). Root starts:
    /// `start_batches` (statements committed), `starts` (starts in them).
    /// Single enqueues: `enqueue_batches` (statements committed),
    /// `enqueues` (enqueues in them).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.engine()?.stats();
        let dict = PyDict::new(py);
        dict.set_item("commits", stats.commits)?;
        dict.set_item("records", stats.records)?;
        dict.set_item("splits", stats.splits)?;
        dict.set_item("start_batches", stats.start_batches)?;
        dict.set_item("starts", stats.starts)?;
        dict.set_item("enqueue_batches", stats.enqueue_batches)?;
        dict.set_item("enqueues", stats.enqueues)?;
        dict.set_item("calls", stats.calls)?;
        Ok(dict)
    }

    /// The Postgres schema holding durable's tables.
    #[getter]
    fn schema(&self) -> PyResult<&str> {
        Ok(self.engine()?.schema())
    }

    /// This process's id in `owner` and `task.owner_id`.
    #[getter]
    fn owner_id(&self) -> PyResult<&str> {
        Ok(self.engine()?.owner_id())
    }

    /// The schema's version before this engine migrated it (0: created).
    #[getter]
    fn migrated_from(&self) -> PyResult<i32> {
        Ok(self.engine()?.migrated_from())
    }

    /// Largest JSON value (bytes) accepted for saving.
    #[getter]
    fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    /// Gives up this process's leases and closes the pool; an awaitable.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?.clone();
        awaitable(py, async move {
            engine.close().await;
            Ok(())
        })
    }
}

/// A recovery pass as Python sees it: a dict.
struct RecoveryPass(Recovered);

impl<'py> IntoPyObject<'py> for RecoveryPass {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let found = self.0;
        let dict = PyDict::new(py);
        dict.set_item("requeued", found.requeued)?;
        dict.set_item("failed", found.failed)?;
        dict.set_item("orphans", found.orphans)?;
        dict.set_item("freed", found.freed)?;
        dict.set_item("queues", found.queues)?;
        dict.set_item("isolated_waiting", found.isolated_waiting)?;
        Ok(dict)
    }
}

/// A `Moment` as Python sees it: microseconds since the epoch (an int), or
/// the text of a time outside the years 1 to 9999 in UTC (a str).
struct Time(Moment);

impl<'py> IntoPyObject<'py> for Time {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.0 {
            Moment::Micros(micros) => micros.into_pyobject(py)?.into_any(),
            Moment::Beyond(text) => text.into_pyobject(py)?.into_any(),
        })
    }
}

/// A `RunInfo` as Python sees it: a dict, JSON values decoded, times as
/// `Time`. A value Python cannot hold (nested deeper than the reader goes, a
/// number beyond any float: only SQL written by hand stores one) is None,
/// and its text, cut, is in `out_of_range` under its field, so that one row
/// never breaks a listing.
struct Info(RunInfo);

impl<'py> IntoPyObject<'py> for Info {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let run = self.0;
        let beyond = PyDict::new(py);
        let decode = |field: &str, text: Option<JsonText>| -> PyResult<Option<Bound<'py, PyAny>>> {
            let Some(text) = text else { return Ok(None) };
            if let Ok(value) = json::decode(py, text.as_str()) {
                Ok(Some(value))
            } else {
                beyond.set_item(field, json::unreadable(text.as_str()))?;
                Ok(None)
            }
        };
        let dict = PyDict::new(py);
        dict.set_item("id", run.id)?;
        dict.set_item("name", run.name)?;
        dict.set_item("path", PyTuple::new(py, run.path)?)?;
        dict.set_item("status", run.status)?;
        dict.set_item("workflow", run.workflow)?;
        dict.set_item("queue", run.queue)?;
        dict.set_item("input", decode("input", run.input)?)?;
        dict.set_item("output", decode("output", run.output)?)?;
        dict.set_item("error", decode("error", run.error)?)?;
        dict.set_item("attempt", run.attempt)?;
        dict.set_item("recoveries", run.recoveries)?;
        dict.set_item("priority", run.priority)?;
        dict.set_item("key", run.key)?;
        dict.set_item("version", run.version)?;
        dict.set_item("created_at", Time(run.created_at))?;
        dict.set_item("started_at", run.started_at.map(Time))?;
        dict.set_item("completed_at", run.completed_at.map(Time))?;
        dict.set_item("run_at", run.run_at.map(Time))?;
        dict.set_item("waiting_for", run.waiting_for)?;
        dict.set_item("out_of_range", beyond)?;
        Ok(dict)
    }
}

/// A `WorkflowTree` as Python sees it: nested dicts.
struct Tree(WorkflowTree);

impl<'py> IntoPyObject<'py> for Tree {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let tree = self.0;
        let dict = PyDict::new(py);
        dict.set_item("info", Info(tree.info))?;
        dict.set_item("steps", tree.steps.into_iter().map(Info).collect::<Vec<_>>())?;
        dict.set_item("children", tree.children.into_iter().map(Tree).collect::<Vec<_>>())?;
        Ok(dict)
    }
}

/// A `BrowsedTree` as Python sees it: the tree's dict (as `Tree`) with
/// `attempts` and `messages`, lists of dicts (times as `Time`), and
/// `sleeps`, a list of step ids.
struct Browsed(BrowsedTree);

impl<'py> IntoPyObject<'py> for Browsed {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let BrowsedTree {
            tree,
            attempts,
            messages,
            sleeps,
        } = self.0;
        let mut texts = Vec::new();
        json_texts(&tree, &mut texts);
        let dict = Tree(tree).into_pyobject(py)?;
        dict.set_item("json", texts)?;
        let mut past = Vec::with_capacity(attempts.len());
        for attempt in attempts {
            let item = PyDict::new(py);
            item.set_item("task_id", attempt.task_id)?;
            item.set_item("attempt", attempt.attempt)?;
            item.set_item("status", attempt.status)?;
            item.set_item("started_at", attempt.started_at.map(Time))?;
            item.set_item("ended_at", attempt.ended_at.map(Time))?;
            item.set_item("replaced_at", Time(attempt.replaced_at))?;
            // The ui shows an error it cannot decode as its text.
            let error = attempt
                .error
                .map(|text| {
                    json::decode(py, text.as_str())
                        .or_else(|_| json::unreadable(text.as_str()).into_pyobject(py).map(Bound::into_any))
                })
                .transpose()?;
            item.set_item("error", error)?;
            past.push(item);
        }
        dict.set_item("attempts", past)?;
        let mut sent = Vec::with_capacity(messages.len());
        for message in messages {
            let item = PyDict::new(py);
            item.set_item("task_id", message.task_id)?;
            item.set_item("topic", message.topic)?;
            item.set_item("sent_at", Time(message.sent_at))?;
            item.set_item("received_at", message.received_at.map(Time))?;
            item.set_item("received_by", message.received_by)?;
            sent.push(item);
        }
        dict.set_item("messages", sent)?;
        dict.set_item("sleeps", sleeps)?;
        Ok(dict)
    }
}

/// Per task of `tree`: its id and its input, output and error as the JSON
/// text the database holds, for a viewer that shows numbers exactly (the
/// decoded values hold integers beyond 64 bits as floats).
type Texts = (i64, Option<String>, Option<String>, Option<String>);

fn json_texts(tree: &WorkflowTree, out: &mut Vec<Texts>) {
    let texts = |run: &RunInfo| -> Texts {
        let text = |json: &Option<JsonText>| json.as_ref().map(|t| t.as_str().to_owned());
        (run.id, text(&run.input), text(&run.output), text(&run.error))
    };
    out.push(texts(&tree.info));
    out.extend(tree.steps.iter().map(texts));
    for child in &tree.children {
        json_texts(child, out);
    }
}

/// A `QueueInfo` as Python sees it: a dict, periods in seconds, times as
/// `Time`.
struct Queue(QueueInfo);

impl<'py> IntoPyObject<'py> for Queue {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let queue = self.0;
        let dict = PyDict::new(py);
        dict.set_item("name", queue.name)?;
        dict.set_item("paused", queue.paused)?;
        dict.set_item("concurrency", queue.concurrency)?;
        dict.set_item("concurrency_per_key", queue.concurrency_per_key)?;
        let rates = queue
            .rates
            .iter()
            .map(|rate| (rate.max_starts, rate.period.as_secs_f64(), rate.used))
            .collect::<Vec<_>>();
        dict.set_item("rates", rates)?;
        dict.set_item("running", queue.running)?;
        dict.set_item("queued", queue.queued)?;
        dict.set_item("delayed", queue.delayed)?;
        dict.set_item("oldest_due", queue.oldest_due.map(Time))?;
        Ok(dict)
    }
}

/// A read's statement timeout, from seconds.
fn read_timeout(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| ConfigError::new_err(format!("timeout must be a number of seconds > 0, not {seconds}")))
}
