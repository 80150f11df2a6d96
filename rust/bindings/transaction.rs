//! `durable._core.Transaction`: the open Postgres transaction of a
//! transaction step (see `engine::transaction`), and `Statement`, one of its
//! prepared statements. Arguments are converted here, on the Python thread,
//! for the parameter types the server inferred at `prepare`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tokio::sync::Mutex;

use super::errors::to_py;
use super::json;
use super::runtime::awaitable;
use super::sql_values::{Fetched, params};
use super::workflow::Run;
use crate::engine::{CommitError, EngineError, Transaction, now_us};

/// The transaction, `None` once committed or rolled back. Statements of
/// one transaction run one at a time, in the order they were issued.
type Shared = Arc<Mutex<Option<Transaction>>>;

#[pyclass(frozen, module = "durable._core", name = "Transaction")]
pub(crate) struct PyTransaction {
    tx: Shared,
    name: String,
    run: Arc<Run>,
    /// Largest JSON value (bytes) accepted, for json parameters and the result.
    limit: usize,
    /// Set when the connection broke during `COMMIT`: whether the step
    /// committed is unknown, so nothing may be recorded for it.
    in_doubt: Arc<AtomicBool>,
}

/// A statement prepared in a transaction: its text parsed by the server,
/// with the types of its parameters.
#[pyclass(frozen, module = "durable._core", name = "Statement")]
pub(crate) struct PyStatement {
    statement: tokio_postgres::Statement,
}

impl PyTransaction {
    pub(crate) fn new(tx: Transaction, run: Arc<Run>, limit: usize) -> Self {
        PyTransaction {
            name: tx.name().to_owned(),
            tx: Arc::new(Mutex::new(Some(tx))),
            run,
            limit,
            in_doubt: Arc::new(AtomicBool::new(false)),
        }
    }

    fn over(name: &str) -> PyErr {
        to_py(EngineError::Database {
            context: format!("transaction step {name:?}"),
            message: "the transaction is over (committed or rolled back): use `tx` only inside the step's function"
                .to_owned(),
            sqlstate: None,
        })
    }
}

#[pymethods]
impl PyTransaction {
    /// Parses `sql` on the server; an awaitable of its `Statement`.
    fn prepare<'py>(&self, py: Python<'py>, sql: String) -> PyResult<Bound<'py, PyAny>> {
        let tx = Arc::clone(&self.tx);
        let name = self.name.clone();
        awaitable(py, async move {
            let mut guard = tx.lock().await;
            let tx = guard.as_mut().ok_or_else(|| Self::over(&name))?;
            let statement = tx.prepare(&sql).await.map_err(to_py)?;
            Ok(PyStatement { statement })
        })
    }

    /// Runs `statement` with `args`; an awaitable of the number of rows affected.
    #[pyo3(signature = (statement, *args))]
    fn execute<'py>(
        &self,
        py: Python<'py>,
        statement: &PyStatement,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args: Vec<Bound<'py, PyAny>> = args.iter().collect();
        let params = params(&args, statement.statement.params(), self.limit)?;
        let statement = statement.statement.clone();
        let tx = Arc::clone(&self.tx);
        let name = self.name.clone();
        awaitable(py, async move {
            let mut guard = tx.lock().await;
            let tx = guard.as_mut().ok_or_else(|| Self::over(&name))?;
            tx.execute(&statement, &params).await.map_err(to_py)
        })
    }

    /// Runs `statement` with `args`; an awaitable of its rows, as a list of
    /// dicts from column name to value.
    #[pyo3(signature = (statement, *args))]
    fn fetch<'py>(
        &self,
        py: Python<'py>,
        statement: &PyStatement,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args: Vec<Bound<'py, PyAny>> = args.iter().collect();
        let params = params(&args, statement.statement.params(), self.limit)?;
        let statement = statement.statement.clone();
        let tx = Arc::clone(&self.tx);
        let name = self.name.clone();
        awaitable(py, async move {
            let mut guard = tx.lock().await;
            let tx = guard.as_mut().ok_or_else(|| Self::over(&name))?;
            tx.query(&statement, &params).await.map(Fetched).map_err(to_py)
        })
    }

    /// Saves `result` as the step's result and commits it with the
    /// transaction; the awaitable resolves to the result's JSON form. Raises
    /// `NotJson` or `ValueTooLarge` at once (nothing is committed: roll back).
    fn commit<'py>(&self, py: Python<'py>, result: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let ended_us = now_us(); // the body's end: before the result is encoded
        let output = json::encode(result, &format!("result of step {:?}", self.name), self.limit)?;
        let value = json::decode(py, output.as_str())?.unbind();
        let tx = Arc::clone(&self.tx);
        let run = Arc::clone(&self.run);
        let in_doubt = Arc::clone(&self.in_doubt);
        let name = self.name.clone();
        awaitable(py, async move {
            let taken = tx.lock().await.take();
            let tx = taken.ok_or_else(|| Self::over(&name))?;
            match tx.commit(output, ended_us).await {
                Ok(()) => Ok(value),
                Err(CommitError::RolledBack(err)) => {
                    let what = || format!("the result of transaction step {name:?}");
                    Err(to_py(run.watch_error(what, err)))
                }
                Err(CommitError::InDoubt(err)) => {
                    // Whether the step committed is only known to a new run,
                    // which reads it: this handle stops, recording nothing
                    // (its run ends and releases the workflow to that run).
                    in_doubt.store(true, Ordering::Relaxed);
                    run.doom(&err);
                    Err(to_py(err))
                }
            }
        })
    }

    /// Rolls the transaction back; an awaitable resolved once done.
    fn rollback<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let tx = Arc::clone(&self.tx);
        awaitable(py, async move {
            let taken = tx.lock().await.take();
            if let Some(tx) = taken {
                tx.rollback().await;
            }
            Ok(())
        })
    }

    /// Ends the transaction without waiting (for a cancelled step): its
    /// connection is closed, so the server rolls back. A statement still in
    /// flight ends it the same way when it returns.
    fn rollback_soon(&self) {
        if let Ok(mut guard) = self.tx.try_lock() {
            drop(guard.take());
        }
    }

    /// True when the connection broke during `COMMIT`, so that whether the
    /// step committed is unknown (a new run of the workflow finds out).
    #[getter]
    fn in_doubt(&self) -> bool {
        self.in_doubt.load(Ordering::Relaxed)
    }
}

#[pymethods]
impl PyStatement {
    /// The Postgres types of the parameters `$1`, `$2`..., by name.
    #[getter]
    fn params(&self) -> Vec<String> {
        self.statement.params().iter().map(|t| t.name().to_owned()).collect()
    }
}
