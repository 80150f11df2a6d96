//! Objects that must not cross `fork()`.
//!
//! A child made by `os.fork()` (gunicorn, multiprocessing) inherits the
//! parent's engine: its sockets, and its registrations in the I/O thread's
//! epoll instance, which the child shares with the parent. Using them would
//! interleave two processes on one connection; even dropping them would
//! deregister the parent's sockets. So in a child they are neither used
//! (a clear error instead) nor dropped (leaked).

use std::sync::atomic::{AtomicU32, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::DurableError;

/// This process's id, cached (0: to be read again). `getpid` is a system
/// call, and it was asked several times a step (by every handle's check
/// below and by each awaitable): about a tenth of the Python thread's time
/// with 200 workflows in flight (py-spy). A child made by `os.fork()`
/// forgets it (`install`).
static PID: AtomicU32 = AtomicU32::new(0);

/// This process's id.
pub(crate) fn current_pid() -> u32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// Run in a child of `os.fork()`, before anything else: its id is not its parent's.
#[pyfunction]
fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}

/// Has `os.fork()` children forget the cached id.
pub(crate) fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item("after_in_child", wrap_pyfunction!(forget_pid, module)?)?;
    py.import("os")?.call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}

/// A value that belongs to the process that made it.
pub(crate) struct ForkSafe<T> {
    pid: u32,
    value: Option<T>,
}

impl<T> ForkSafe<T> {
    pub(crate) fn new(value: T) -> Self {
        ForkSafe {
            pid: current_pid(),
            value: Some(value),
        }
    }

    /// The value, in the process that made it; else a `DurableError` that
    /// says what to do.
    pub(crate) fn get(&self) -> PyResult<&T> {
        match &self.value {
            Some(value) if self.pid == current_pid() => Ok(value),
            _ => Err(DurableError::new_err(format!(
                "this durable handle was made in process {} before os.fork(); its connections \
                 belong to that process. Call durable.init() in this process (after the fork)",
                self.pid
            ))),
        }
    }
}

impl<T> Drop for ForkSafe<T> {
    fn drop(&mut self) {
        if self.pid != current_pid() {
            std::mem::forget(self.value.take());
        }
    }
}
