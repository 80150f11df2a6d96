//! `durable._core`: the pyo3 face of the engine. Conversion and nothing
//! else: every decision lives in `engine` or in the Python package.

mod engine;
mod errors;
mod fork;
mod json;
mod limits;
mod logs;
mod runtime;
mod sql_values;
mod transaction;
mod workflow;

use pyo3::prelude::*;

/// Rust core of durable. Use the `durable` package, not this module.
#[pymodule(name = "_core")]
mod core {
    use pyo3::prelude::*;

    use super::{fork, limits, runtime};

    #[pymodule_export]
    use super::engine::PyEngine;
    #[pymodule_export]
    use super::runtime::Waker;
    #[pymodule_export]
    use super::transaction::{PyStatement, PyTransaction};
    #[pymodule_export]
    use super::workflow::PyWorkflow;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        fork::install(m)?;
        runtime::init(m.py())?;
        m.add("SCHEMA_VERSION", crate::engine::LATEST_VERSION)?;
        limits::export(m)
    }
}
