//! The engine: plain Rust, no Python. It owns the pool, applies migrations,
//! holds leases, starts and resumes workflows, and saves checkpoints through
//! the writer.

mod config;
mod error;
mod jsonb;
mod migrate;
mod owner;
mod pool;
mod retry;
mod sql;
mod workflow;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

pub use config::{MAX_NAME_BYTES, Options, validate_name, validate_schema};
pub use error::EngineError;
pub use jsonb::JsonText;
pub use migrate::LATEST_VERSION;
pub use workflow::{HistoryEntry, Kind, Started, Status, WorkflowId};
pub use writer::Outcome;

use owner::Owner;
use retry::{Backoff, is_transient};
use sql::Statements;
use workflow::Access;
use writer::Writer;

/// Runs an idempotent database call (`body`, an async block using the
/// connection `client`), retrying it on a fresh connection while the server
/// is unreachable, up to the engine's reconnect timeout.
macro_rules! retrying {
    ($engine:expr, $context:expr, |$client:ident| $body:expr) => {{
        let engine: &Engine = $engine;
        let mut backoff = Backoff::until(Instant::now() + engine.reconnect_timeout);
        loop {
            let err = match pool::checkout(&engine.pool, &engine.target).await {
                Ok($client) => match $body.await {
                    Ok(value) => break Ok(value),
                    Err(err) if is_transient(&err) => EngineError::database($context, &err),
                    Err(err) => break Err(EngineError::database($context, &err)),
                },
                Err(EngineError::Closed) => break Err(EngineError::Closed),
                Err(err) => err,
            };
            if !backoff.wait().await {
                break Err(err);
            }
        }
    }};
}

/// A connected engine. Cheap to share behind an `Arc`; every method may be
/// called concurrently.
pub struct Engine {
    pool: Pool,
    writer: Writer,
    owner: Owner,
    sql: Arc<Statements>,
    schema: String,
    target: Arc<str>,
    reconnect_timeout: Duration,
}

/// The parent of a child workflow: its identity and its name (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Parent<'a> {
    pub workflow: WorkflowId,
    pub name: &'a str,
}

impl Engine {
    /// Connects, applies missing migrations, registers this process as a
    /// lease owner and starts the checkpoint writer. Must run inside a tokio
    /// runtime. Fails fast when the server cannot be reached, naming host and
    /// port (never the password).
    pub async fn connect(dsn: &str, options: &Options) -> Result<Engine, EngineError> {
        validate_schema(&options.schema)?;
        let config = config::parse_dsn(dsn, options)?;
        let target: Arc<str> = config::describe_target(&config).into();
        let pool = pool::build(config.clone(), options.max_connections)?;
        let mut conn = pool::checkout(&pool, &target).await?;
        migrate::migrate(&mut conn, &options.schema).await?;
        drop(conn);
        let sql = Arc::new(Statements::new(&options.schema));
        let owner = Owner::register(
            config,
            Arc::clone(&sql),
            Arc::clone(&target),
            options.host.clone(),
            options.lease,
        )
        .await?;
        let writer = Writer::spawn(writer::Setup {
            pool: pool.clone(),
            sql: Arc::clone(&sql),
            target: Arc::clone(&target),
            owner: owner.id.clone(),
            reconnect_timeout: options.reconnect_timeout,
        });
        Ok(Engine {
            pool,
            writer,
            owner,
            sql,
            schema: options.schema.clone(),
            target,
            reconnect_timeout: options.reconnect_timeout,
        })
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// This process's owner id, as recorded in `task.owner_id`.
    pub fn owner_id(&self) -> &str {
        &self.owner.id
    }

    /// Creates a workflow, or takes the existing one of that name (under
    /// `parent`, or among roots) and reads its saved history.
    ///
    /// Errors: `InputMismatch` for a different input than the saved one,
    /// `WorkflowBusy` when another live process holds it, `Cancelled`,
    /// `LeaseLost` when `parent` is no longer held by this process.
    /// `deadline` applies to a new root only (children share their root's).
    pub async fn start(
        &self,
        parent: Option<Parent<'_>>,
        name: &str,
        input: &JsonText,
        deadline: Option<Duration>,
    ) -> Result<Started, EngineError> {
        validate_name("workflow", name)?;
        self.check_open()?;
        let context = || format!("starting workflow {name:?}");
        let deadline_secs = deadline.map(|d| d.as_secs_f64());
        let owner = self.owner.id.as_str();
        let row = retrying!(self, &context(), |client| async {
            let row = match parent {
                None => {
                    let statement = client.prepare_cached(&self.sql.start_root).await?;
                    client
                        .query_opt(&statement, &[&name, input, &owner, &deadline_secs])
                        .await?
                }
                Some(parent) => {
                    let statement = client.prepare_cached(&self.sql.start_child).await?;
                    let p = parent.workflow;
                    client
                        .query_opt(&statement, &[&name, input, &owner, &p.id, &p.epoch])
                        .await?
                }
            };
            Ok(row)
        })?;
        let Some(row) = row else {
            // Only a child start yields no row: its parent's lease was refused.
            let Some(parent) = parent else {
                return Err(EngineError::Unexpected(format!(
                    "starting workflow {name:?} returned no row"
                )));
            };
            return Err(self.refusal(parent.workflow).await);
        };
        let started = workflow::read_started(&row, name, parent.map(|p| p.name), Access::Take)?;
        self.with_history(started).await
    }

    /// Reads the child `name` of a finished parent as it is, to replay it:
    /// nothing is taken or written. `InputMismatch` for another input.
    pub async fn replay_child(&self, parent: Parent<'_>, name: &str, input: &JsonText) -> Result<Started, EngineError> {
        validate_name("workflow", name)?;
        self.check_open()?;
        let id = parent.workflow.id;
        let row = retrying!(self, &format!("reading child workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.sql.replay_child).await?;
            client.query_opt(&statement, &[&name, input, &id]).await
        })?;
        let Some(row) = row else {
            return Err(EngineError::WorkflowFinished {
                workflow: parent.name.to_owned(),
                status: "finished",
                what: "child workflow",
                name: name.to_owned(),
            });
        };
        let started = workflow::read_started(&row, name, Some(parent.name), Access::Replay)?;
        self.with_history(started).await
    }

    /// Fills in the history of a workflow that existed before. Runs as a
    /// separate statement after the takeover committed, so it sees every
    /// write the previous holder got in before it.
    async fn with_history(&self, mut started: Started) -> Result<Started, EngineError> {
        if started.created {
            return Ok(started);
        }
        let id = started.workflow.id;
        let rows = retrying!(self, "reading a workflow's history", |client| async {
            let statement = client.prepare_cached(&self.sql.history).await?;
            client.query(&statement, &[&id]).await
        })?;
        started.history = workflow::read_history(&rows)?;
        Ok(started)
    }

    /// Queues the `running` marker of a step, to be written without anyone
    /// waiting: a step's body starts at once.
    pub fn step_started(&self, workflow: WorkflowId, name: &str, attempt: i32) -> Result<(), EngineError> {
        self.check_open()?;
        self.writer.step_started(workflow, name, attempt)
    }

    /// Writes the `running` marker of a step and waits for its commit: for
    /// steps that must not run twice, the marker must be durable first.
    pub async fn step_started_durably(
        &self,
        workflow: WorkflowId,
        name: String,
        attempt: i32,
    ) -> Result<(), EngineError> {
        self.check_open()?;
        self.writer.step_started_durably(workflow, name, attempt).await
    }

    /// Saves a step's result or error; resolves after the commit.
    pub async fn step_finished(
        &self,
        workflow: WorkflowId,
        name: String,
        attempt: i32,
        outcome: Outcome,
    ) -> Result<(), EngineError> {
        self.check_open()?;
        self.writer.step_finished(workflow, name, attempt, outcome).await
    }

    /// Saves a workflow's result or error; resolves after the commit.
    pub async fn workflow_finished(&self, workflow: WorkflowId, outcome: Outcome) -> Result<(), EngineError> {
        self.check_open()?;
        self.writer.workflow_finished(workflow, outcome).await
    }

    /// Cancels the root workflow `name` and every unfinished workflow under
    /// it. Whoever runs them gets `Cancelled` at their next checkpoint.
    /// Returns false when there is no such root or it already finished.
    pub async fn cancel(&self, name: &str) -> Result<bool, EngineError> {
        validate_name("workflow", name)?;
        self.check_open()?;
        let rows = retrying!(self, &format!("cancelling workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.sql.cancel).await?;
            client.query(&statement, &[&name]).await
        })?;
        rows.iter()
            .map(|row| workflow::col::<bool>(row, "is_root"))
            .try_fold(false, |found, is_root| Ok(found || is_root?))
    }

    /// Closes the engine: gives up this process's leases (others may take its
    /// unfinished workflows at once), then refuses new work with `Closed` and
    /// releases the connections (the writer's after its current batch).
    pub async fn close(&self) {
        self.owner.stop();
        if !self.pool.is_closed() {
            let owner = self.owner.id.as_str();
            let _ = retrying!(self, "releasing leases", |client| async {
                client.execute(&self.sql.owner_release, &[&owner]).await
            });
        }
        self.pool.close();
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.pool.is_closed() {
            Err(EngineError::Closed)
        } else {
            Ok(())
        }
    }

    /// Why `workflow` refuses the writes of this process.
    async fn refusal(&self, workflow: WorkflowId) -> EngineError {
        let owner = self.owner.id.as_str();
        let id = workflow.id;
        let found = retrying!(self, "checking a workflow's lease", |client| async {
            client.query_opt(&self.sql.diagnose, &[&vec![id], &owner]).await
        });
        match found.map(|row| row.map(|row| workflow::refusal(&row, workflow.epoch, "child workflow"))) {
            Ok(Some(Ok((_, Some(reason))))) => reason,
            // Its fence would pass: the refusal came from somewhere else.
            Ok(Some(Ok((_, None)))) => EngineError::Unexpected(format!("workflow id {id} refused a child start")),
            Ok(Some(Err(err))) | Err(err) => err,
            Ok(None) => workflow::vanished(id),
        }
    }
}
