//! The one place where engine errors become Python exceptions. The classes
//! live in `durable/errors.py` (documented, typed, with multiple bases where
//! a built-in applies) and are imported here.

use pyo3::PyErr;
use pyo3::import_exception;

use super::json;
use crate::engine::EngineError;

import_exception!(durable.errors, ConfigError);
import_exception!(durable.errors, ConnectError);
import_exception!(durable.errors, DatabaseError);
import_exception!(durable.errors, DuplicateStep);
import_exception!(durable.errors, DurableError);
import_exception!(durable.errors, InputMismatch);
import_exception!(durable.errors, InvalidName);
import_exception!(durable.errors, NotJson);
import_exception!(durable.errors, SchemaTooNew);
import_exception!(durable.errors, WorkflowFinished);
import_exception!(durable.errors, WorkflowBusy);
import_exception!(durable.errors, LeaseLost);
import_exception!(durable.errors, Cancelled);
import_exception!(durable.errors, StepInterrupted);
import_exception!(durable.errors, DeadlineExceeded);
import_exception!(durable.errors, ValueTooLarge);
import_exception!(durable.errors, WaitCycle);

/// Converts an engine error into the matching Python exception.
pub(crate) fn to_py(err: EngineError) -> PyErr {
    let message = err.to_string();
    match err {
        EngineError::InvalidDsn(_)
        | EngineError::InvalidSchema(_)
        | EngineError::InvalidOption(_)
        | EngineError::SchemaNotCurrent { .. }
        | EngineError::Tls(_)
        | EngineError::TransactionPooler { .. } => ConfigError::new_err(message),
        EngineError::InvalidName { .. } => InvalidName::new_err(message),
        EngineError::Connect { sqlstate, .. } => ConnectError::new_err((message, sqlstate)),
        EngineError::TlsConnect { .. } => ConnectError::new_err((message, None::<String>)),
        EngineError::Database { sqlstate, .. } => DatabaseError::new_err((message, sqlstate)),
        EngineError::Unexpected(_) | EngineError::Closed => DatabaseError::new_err((message, None::<String>)),
        EngineError::SchemaTooNew { .. } => SchemaTooNew::new_err(message),
        EngineError::InputMismatch { .. } | EngineError::OtherWorkflow { .. } => InputMismatch::new_err(message),
        EngineError::DuplicateName { .. } => DuplicateStep::new_err(message),
        EngineError::WorkflowFinished { .. }
        | EngineError::WithinFinished { .. }
        | EngineError::FinishedHere { .. }
        | EngineError::RootFinished { .. }
        | EngineError::NotRunning { .. } => WorkflowFinished::new_err(message),
        EngineError::WorkflowBusy { .. } | EngineError::HeldHere { .. } => WorkflowBusy::new_err(message),
        EngineError::LeaseLost { .. } | EngineError::Released { .. } => LeaseLost::new_err(message),
        // A BaseException, like a cancel: the run stops here without being
        // failed, and user code that catches Exception does not swallow it.
        EngineError::Draining { .. } => pyo3::exceptions::asyncio::CancelledError::new_err(message),
        EngineError::Cancelled { .. } => Cancelled::new_err(message),
        EngineError::StepInterrupted { .. } => StepInterrupted::new_err(message),
        EngineError::DeadlineExceeded { .. } => DeadlineExceeded::new_err(message),
        EngineError::WaitCycle { .. } => WaitCycle::new_err(message),
    }
}

/// A value that cannot be saved, with what it was meant to be.
pub(crate) fn not_json(what: &str, err: &json::NotJson) -> PyErr {
    NotJson::new_err(format!("{what}: {err}"))
}

/// A value whose JSON is over the size limit.
pub(crate) fn value_too_large(what: &str, size: usize, limit: usize) -> PyErr {
    ValueTooLarge::new_err(format!(
        "{what} is {size} bytes as JSON, over the limit of {limit} bytes (durable.init(max_value_bytes=...)); \
         store large data elsewhere and save a reference to it"
    ))
}
