//! The engine's limits and statuses as constants of `durable._core`, so
//! that the Python package checks by the same numbers (durations in
//! seconds, sizes in bytes).

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::engine::{Status, limits};

pub(crate) fn export(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MAX_NAME_BYTES", limits::MAX_NAME_BYTES)?;
    m.add("MIN_CONNECTIONS", limits::MIN_CONNECTIONS)?;
    m.add("MAX_CONNECTIONS", limits::MAX_CONNECTIONS)?;
    m.add("MAX_CONNECT_TIMEOUT", limits::MAX_CONNECT_TIMEOUT.as_secs_f64())?;
    m.add("MIN_LEASE", limits::MIN_LEASE.as_secs_f64())?;
    m.add("MAX_LEASE", limits::MAX_LEASE.as_secs_f64())?;
    m.add("MAX_RECONNECT_TIMEOUT", limits::MAX_RECONNECT_TIMEOUT.as_secs_f64())?;
    m.add("MAX_SESSION_GRACE", limits::MAX_SESSION_GRACE.as_secs_f64())?;
    m.add("MAX_VALUE_BYTES", limits::MAX_VALUE_BYTES)?;
    m.add("MAX_DURATION", limits::MAX_DURATION.as_secs_f64())?;
    m.add("MAX_WAIT", limits::MAX_WAIT.as_secs_f64())?;
    m.add("MAX_RATE_PERIOD", limits::MAX_RATE_PERIOD.as_secs_f64())?;
    m.add("STATUSES", statuses(m.py(), &Status::ALL)?)?;
    m.add("FINISHED_STATUSES", statuses(m.py(), &Status::FINISHED)?)
}

/// `statuses` as a tuple of their names.
fn statuses<'py>(py: Python<'py>, statuses: &[Status]) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, statuses.iter().map(|status| status.as_str()))
}
