//! Objects that must not cross `fork()`.
//!
//! A child made by `os.fork()` (gunicorn, multiprocessing) inherits the
//! parent's engine: its sockets, and its registrations in the I/O thread's
//! epoll instance, which the child shares with the parent. Using them would
//! interleave two processes on one connection; even dropping them would
//! deregister the parent's sockets. So in a child they are neither used
//! (a clear error instead) nor dropped (leaked).

use pyo3::PyResult;

use super::errors::DurableError;

/// A value that belongs to the process that made it.
pub(crate) struct ForkSafe<T> {
    pid: u32,
    value: Option<T>,
}

impl<T> ForkSafe<T> {
    pub(crate) fn new(value: T) -> Self {
        ForkSafe {
            pid: std::process::id(),
            value: Some(value),
        }
    }

    /// The value, in the process that made it; else a `DurableError` that
    /// says what to do.
    pub(crate) fn get(&self) -> PyResult<&T> {
        match &self.value {
            Some(value) if self.pid == std::process::id() => Ok(value),
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
        if self.pid != std::process::id() {
            std::mem::forget(self.value.take());
        }
    }
}
