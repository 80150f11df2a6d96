//! `durable._core.Engine`: a connected engine (pool, migrations, lease
//! owner, writer).

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use super::errors::{ConfigError, to_py};
use super::json;
use super::runtime::awaitable;
use super::workflow::PyWorkflow;
use crate::engine::{Engine, Options, validate_name};

#[pyclass(frozen, module = "durable._core", name = "Engine")]
pub(crate) struct PyEngine {
    inner: Arc<Engine>,
    /// Largest JSON value (bytes) accepted for saving.
    max_value_bytes: usize,
}

/// A positive, finite number of seconds, or a `ConfigError` naming `what`.
pub(crate) fn seconds(what: &str, value: f64) -> PyResult<Duration> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(ConfigError::new_err(format!(
            "{what} must be a positive number of seconds, not {value}"
        )))
    }
}

#[pymethods]
impl PyEngine {
    /// Connects, migrates and registers this process; an awaitable of the engine.
    #[staticmethod]
    #[pyo3(signature = (dsn, *, schema, max_connections, connect_timeout, lease, reconnect_timeout, max_value_bytes, host))]
    #[allow(clippy::too_many_arguments)] // keyword-only options, each documented in durable.init
    fn connect(
        py: Python<'_>,
        dsn: String,
        schema: String,
        max_connections: usize,
        connect_timeout: f64,
        lease: f64,
        reconnect_timeout: f64,
        max_value_bytes: usize,
        host: String,
    ) -> PyResult<Bound<'_, PyAny>> {
        if max_connections < 2 {
            return Err(ConfigError::new_err(format!(
                "max_connections must be at least 2 (the checkpoint writer keeps one), not {max_connections}"
            )));
        }
        if max_value_bytes == 0 {
            return Err(ConfigError::new_err("max_value_bytes must be positive"));
        }
        let options = Options {
            schema,
            max_connections,
            connect_timeout: seconds("connect_timeout", connect_timeout)?,
            lease: seconds("lease", lease)?,
            reconnect_timeout: seconds("reconnect_timeout", reconnect_timeout)?,
            host,
        };
        awaitable(py, async move {
            let engine = Engine::connect(&dsn, &options).await.map_err(to_py)?;
            Ok(PyEngine {
                inner: Arc::new(engine),
                max_value_bytes,
            })
        })
    }

    /// Creates or takes the root workflow `name`; an awaitable of its `Workflow`.
    #[pyo3(signature = (name, input, deadline = None))]
    fn start<'py>(
        &self,
        py: Python<'py>,
        name: String,
        input: &Bound<'py, PyAny>,
        deadline: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        validate_name("workflow", &name).map_err(to_py)?;
        let deadline = deadline.map(|d| seconds("deadline", d)).transpose()?;
        let input = json::encode(input, &format!("input of workflow {name:?}"), self.max_value_bytes)?;
        let engine = Arc::clone(&self.inner);
        let limit = self.max_value_bytes;
        awaitable(py, async move {
            let started = engine.start(None, &name, &input, deadline).await.map_err(to_py)?;
            Ok(PyWorkflow::new(engine, name, input, started, None, limit))
        })
    }

    /// Cancels the root workflow `name` and its unfinished children; an
    /// awaitable of whether there was anything to cancel.
    fn cancel<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let engine = Arc::clone(&self.inner);
        awaitable(py, async move { engine.cancel(&name).await.map_err(to_py) })
    }

    /// The Postgres schema holding durable's tables.
    #[getter]
    fn schema(&self) -> &str {
        self.inner.schema()
    }

    /// This process's id in `owner` and `task.owner_id`.
    #[getter]
    fn owner_id(&self) -> &str {
        self.inner.owner_id()
    }

    /// Gives up this process's leases and closes the pool; an awaitable.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = Arc::clone(&self.inner);
        awaitable(py, async move {
            engine.close().await;
            Ok(())
        })
    }
}
