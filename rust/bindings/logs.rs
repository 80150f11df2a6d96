//! The engine's log records (the `log` facade) handed to Python's `logging`.
//!
//! The I/O thread never touches Python: a record goes into a queue, and the
//! first record into an empty queue wakes the event loop (or blocking call)
//! that last drained results, through its `Waker`. Records are emitted when
//! a `Waker` drains, on that thread, before the results it resolves, under
//! the logger `durable.<engine module>` (`durable.writer`, `durable.owner`; the
//! module's name without its folder).
//!
//! Each drain (and the import) copies the effective level of the `durable` logger into the
//! `log` crate's maximum, so a disabled record costs one atomic load at its
//! call site and is never formatted.

use std::sync::{Mutex, PoisonError};

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// A formatted record, waiting for a Python thread.
struct Pending {
    level: Level,
    target: String,
    message: String,
}

static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());

struct Bridge;

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) || !record.target().starts_with("durable") {
            return;
        }
        let pending = Pending {
            level: record.level(),
            target: logger_name(record.target()),
            message: record.args().to_string(),
        };
        let mut queue = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        let was_empty = queue.is_empty();
        queue.push(pending);
        drop(queue);
        if was_empty {
            super::runtime::nudge_log_drainer();
        }
    }

    fn flush(&self) {}
}

/// `durable::engine::checkpoint::writer` -> `durable.writer`: the module,
/// not its folder, so that loggers keep their names when modules move.
fn logger_name(target: &str) -> String {
    match target.strip_prefix("durable::engine::") {
        Some(path) => format!("durable.{}", path.rsplit("::").next().unwrap_or(path)),
        None => "durable".to_owned(),
    }
}

/// Installs the bridge (once per process) at the `durable` logger's level.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    if log::set_logger(&Bridge).is_ok() {
        follow_level(py)?;
    }
    Ok(())
}

/// `logging.getLogger`, and the `durable` logger (loggers live as long as
/// the process: caching one is safe).
static GET_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static DURABLE_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Emits the waiting records, then follows the `durable` logger's level.
pub(crate) fn emit(py: Python<'_>) -> PyResult<()> {
    let get_logger = GET_LOGGER.import(py, "logging", "getLogger")?;
    let records = std::mem::take(&mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner));
    for record in records {
        let logger = get_logger.call1((record.target,))?;
        logger.call_method1(
            pyo3::intern!(py, "log"),
            (python_level(record.level), "%s", record.message),
        )?;
    }
    follow_level(py)
}

/// Lets through the records that the `durable` logger's level lets through.
pub(crate) fn follow_level(py: Python<'_>) -> PyResult<()> {
    let logger = DURABLE_LOGGER.get_or_try_init(py, || {
        GET_LOGGER
            .import(py, "logging", "getLogger")?
            .call1(("durable",))
            .map(Bound::unbind)
    })?;
    let level: i32 = logger
        .bind(py)
        .call_method0(pyo3::intern!(py, "getEffectiveLevel"))?
        .extract()?;
    log::set_max_level(level_filter(level));
    Ok(())
}

fn python_level(level: Level) -> i32 {
    match level {
        Level::Error => 40,
        Level::Warn => 30,
        Level::Info => 20,
        Level::Debug | Level::Trace => 10,
    }
}

/// The most verbose `log` level that Python's `level` lets through.
fn level_filter(level: i32) -> LevelFilter {
    match level {
        ..=10 => LevelFilter::Debug,
        11..=20 => LevelFilter::Info,
        21..=30 => LevelFilter::Warn,
        31..=40 => LevelFilter::Error,
        _ => LevelFilter::Off,
    }
}
