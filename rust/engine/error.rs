//! The engine's one error type. Every variant is something a caller can act
//! on; the message names the cause and the fix. No variant ever carries the
//! database password: connection targets are described by host and port only.

use std::fmt;

/// What went wrong, with enough structure for the bindings to pick an exception class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error(
        "invalid database URL: {0}. Expected postgresql://user:password@host:5432/dbname \
         or key=value pairs such as 'host=localhost dbname=app'"
    )]
    InvalidDsn(String),

    #[error(
        "invalid schema name {0:?}: use 1 to 63 lowercase ASCII letters, digits or underscores, \
         starting with a letter or underscore"
    )]
    InvalidSchema(String),

    #[error("invalid option: {0}")]
    InvalidOption(String),

    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },

    #[error(
        "cannot connect to Postgres at {target}: {reason}. Check that the server is running \
         and that the host, port, user and password in the database URL are right"
    )]
    Connect {
        target: String,
        reason: String,
        sqlstate: Option<String>,
    },

    /// TLS settings that cannot work (a missing root file, a mode that
    /// contradicts `sslrootcert=system`), found before connecting.
    #[error("TLS settings: {0}")]
    Tls(String),

    /// The TLS handshake with `target` failed: its certificate was refused,
    /// or it does not accept TLS.
    #[error("cannot connect to Postgres at {target} over TLS: {reason}")]
    TlsConnect { target: String, reason: String },

    #[error(
        "durable needs a session (direct) connection, but the server at {target} looks like a \
         transaction-mode pooler (pgbouncer with pool_mode=transaction, Supabase's port 6543, the \
         pooled endpoints of Neon or RDS Proxy, ...): one connection was served by different \
         Postgres sessions, which breaks the liveness of lease owners and notifications. Use the \
         direct endpoint (port 5432, or the pooler's session mode); see \"Connecting and TLS\" in \
         doc/api.md"
    )]
    TransactionPooler { target: String },

    #[error("{context}: {message}")]
    Database {
        context: String,
        message: String,
        sqlstate: Option<String>,
    },

    #[error(
        "the database schema {schema:?} is at version {found}, but this durable library only \
         knows versions up to {supported}. Upgrade the durable package (or use another schema)"
    )]
    SchemaTooNew { schema: String, found: i32, supported: i32 },

    #[error(
        "the database schema {schema:?} {}, and this durable needs version {wanted}: run \
         `durable migrate` (or durable.init() without migrate=False), or check the schema name",
        found.map_or_else(|| "does not exist".to_owned(), |v| format!("is at version {v}"))
    )]
    SchemaNotCurrent {
        schema: String,
        found: Option<i32>,
        wanted: i32,
    },

    #[error(
        "workflow {name:?} already exists with a different input. A workflow's name is its \
         identity: start it with the same input to resume it, or use a new name"
    )]
    InputMismatch { name: String },

    #[error(
        "workflow {name:?} already exists as a run of {}: a workflow's name is its identity, \
         whatever function runs it. Use a new name",
        workflow.as_deref().map_or_else(|| "no registered function (started by hand)".to_owned(), |w| format!("{w:?}"))
    )]
    OtherWorkflow { name: String, workflow: Option<String> },

    #[error(
        "the name {name:?} is used twice in workflow {workflow:?}. Step and child names must be \
         unique within a workflow: give each call its own name (e.g. add the loop index)"
    )]
    DuplicateName { workflow: String, name: String },

    #[error(
        "workflow {workflow:?} is already {status} and has no completed {what} {name:?}: a \
         finished workflow only replays what it recorded and runs nothing new. Start a workflow \
         with a new name to run new work"
    )]
    WorkflowFinished {
        workflow: String,
        status: &'static str,
        what: &'static str,
        name: String,
    },

    #[error(
        "child workflow {child:?} belongs to workflow {parent:?}, which is already {status}: a \
         finished workflow only replays what it recorded, so {what} cannot run or be saved"
    )]
    WithinFinished {
        parent: String,
        status: &'static str,
        child: String,
        what: String,
    },

    #[error("workflow {workflow:?} was already {status} by this run, so {what} was not saved")]
    FinishedHere {
        workflow: String,
        status: &'static str,
        what: String,
    },

    #[error(
        "workflow id {workflow_id} is no longer running, so its {what} was not saved: it \
         finished or was cancelled elsewhere"
    )]
    NotRunning { workflow_id: i64, what: String },

    #[error("unexpected data in the task table: {0}. Is a newer durable version writing to this schema?")]
    Unexpected(String),

    #[error(
        "workflow {name:?} is running in another live process. Wait for it (Ctx.start(..., \
         wait=seconds)), or start it again once that process has stopped"
    )]
    WorkflowBusy { name: String },

    #[error(
        "workflow {name:?} is held by another handle in this process (another Ctx, or a \
         Workflow.run still going). Finish or release that one first (ctx.release()), or wait \
         for it (Ctx.start(..., wait=seconds))"
    )]
    HeldHere { name: String },

    #[error(
        "workflow id {workflow_id} was taken over elsewhere (by another process, or another \
         durable.init of this one: its lease expired or its owner looked dead), so this handle \
         stopped working on it; nothing it did after the takeover was saved"
    )]
    LeaseLost { workflow_id: i64 },

    #[error(
        "workflow {name:?} was released by this process (ctx.release(), or its run ended without \
         finishing), so this handle does no more work on it; start it again to resume it"
    )]
    Released { name: String },

    #[error(
        "workflow {name:?} is stopping at this checkpoint: its executor is shutting down, and \
         another executor resumes it"
    )]
    Draining { name: String },

    #[error("workflow {name:?} is already {status}, so the handles of its children do no more work")]
    RootFinished { name: String, status: &'static str },

    #[error("workflow id {workflow_id} was cancelled")]
    Cancelled { workflow_id: i64 },

    #[error(
        "step {name:?} of workflow {workflow:?} was interrupted in an earlier run and is declared \
         at_most_once, so it is not run again. Decide by hand: mark it completed with a result, \
         or delete its row to let it run again (see doc/api.md)"
    )]
    StepInterrupted { workflow: String, name: String },

    #[error("workflow {workflow:?} passed its deadline")]
    DeadlineExceeded { workflow: String },

    #[error(
        "workflow {waiter:?} would wait for {}: that wait would never end, so it is refused",
        describe_cycle(waiter, cycle)
    )]
    WaitCycle {
        waiter: String,
        /// The runs from the awaited one to the waiter (last), each waiting
        /// for the next.
        cycle: Vec<String>,
    },

    #[error("the database handle is closed; call durable.init() again")]
    Closed,
}

/// What a wait that closes `cycle` would wait for, in words.
fn describe_cycle(waiter: &str, cycle: &[String]) -> String {
    if cycle.len() < 2 {
        return "its own end".to_owned();
    }
    let chain: Vec<String> = cycle.iter().map(|name| format!("{name:?}")).collect();
    debug_assert_eq!(cycle.last().map(String::as_str), Some(waiter));
    format!("the end of {}", chain.join(", which waits for "))
}

impl EngineError {
    /// Wraps a driver error with what the engine was doing when it happened.
    pub(crate) fn database(context: impl fmt::Display, err: &tokio_postgres::Error) -> Self {
        let (message, sqlstate) = describe(err);
        EngineError::Database {
            context: context.to_string(),
            message,
            sqlstate,
        }
    }

    /// The SQLSTATE code of a database-side error, if there is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            EngineError::Connect { sqlstate, .. } | EngineError::Database { sqlstate, .. } => sqlstate.as_deref(),
            _ => None,
        }
    }
}

/// A one-line description of a driver error, and its SQLSTATE when the server sent one.
pub(crate) fn describe(err: &tokio_postgres::Error) -> (String, Option<String>) {
    if let Some(db) = err.as_db_error() {
        let mut message = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            message.push_str(": ");
            message.push_str(detail);
        }
        return (message, Some(db.code().code().to_owned()));
    }
    // Non-server errors (I/O, protocol): the chain of sources says the most.
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    (message, err.code().map(|c| c.code().to_owned()))
}
