//! `durable._core.Engine`: a connected engine (pool, migrations, writer).

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use super::errors::{ConfigError, not_json, to_py};
use super::json;
use super::runtime::awaitable;
use super::workflow::PyWorkflow;
use crate::engine::{Engine, Options, validate_name};

#[pyclass(frozen, module = "durable._core", name = "Engine")]
pub(crate) struct PyEngine {
    inner: Arc<Engine>,
}

#[pymethods]
impl PyEngine {
    /// Connects and migrates; an awaitable of the engine.
    #[staticmethod]
    #[pyo3(signature = (dsn, *, schema, max_connections, connect_timeout))]
    fn connect(
        py: Python<'_>,
        dsn: String,
        schema: String,
        max_connections: usize,
        connect_timeout: f64,
    ) -> PyResult<Bound<'_, PyAny>> {
        if !(connect_timeout.is_finite() && connect_timeout > 0.0) {
            return Err(ConfigError::new_err(format!(
                "connect_timeout must be a positive number of seconds, not {connect_timeout}"
            )));
        }
        if max_connections < 2 {
            return Err(ConfigError::new_err(format!(
                "max_connections must be at least 2 (the checkpoint writer keeps one), not {max_connections}"
            )));
        }
        let options = Options {
            schema,
            max_connections,
            connect_timeout: Duration::from_secs_f64(connect_timeout),
        };
        awaitable(py, async move {
            let engine = Engine::connect(&dsn, &options).await.map_err(to_py)?;
            Ok(PyEngine {
                inner: Arc::new(engine),
            })
        })
    }

    /// Creates or resumes the root workflow `name`; an awaitable of its `Workflow`.
    fn start<'py>(
        &self,
        py: Python<'py>,
        name: String,
        input: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        validate_name("workflow", &name).map_err(to_py)?;
        let input = json::encode(input)
            .map_err(|e| not_json(&format!("input of workflow {name:?}"), &e))?;
        let engine = Arc::clone(&self.inner);
        awaitable(py, async move {
            let started = engine.start(None, &name, &input).await.map_err(to_py)?;
            Ok(PyWorkflow::new(engine, name, started))
        })
    }

    /// The Postgres schema holding durable's tables.
    #[getter]
    fn schema(&self) -> &str {
        self.inner.schema()
    }

    /// Closes the pool; later calls fail with `DatabaseError`.
    fn close(&self) {
        self.inner.close();
    }
}
