//! The engine: plain Rust, no Python. It owns the pool, applies migrations,
//! starts and resumes workflows, and saves checkpoints through the writer.

mod config;
mod error;
mod jsonb;
mod migrate;
mod pool;
mod sql;
mod workflow;
mod writer;

use std::sync::Arc;

use deadpool_postgres::Pool;

pub use config::{MAX_NAME_BYTES, Options, validate_name, validate_schema};
pub use error::EngineError;
pub use jsonb::JsonText;
pub use migrate::LATEST_VERSION;
pub use workflow::{HistoryEntry, Kind, Started, Status, WorkflowId};
pub use writer::Outcome;

use sql::Statements;
use writer::Writer;

/// A connected engine. Cheap to share behind an `Arc`; every method may be
/// called concurrently.
pub struct Engine {
    pool: Pool,
    writer: Writer,
    sql: Arc<Statements>,
    schema: String,
    target: Arc<str>,
}

/// The parent of a child workflow: its identity and its name (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Parent<'a> {
    pub workflow: WorkflowId,
    pub name: &'a str,
}

impl Engine {
    /// Connects, applies missing migrations and starts the checkpoint writer.
    /// Must run inside a tokio runtime. Fails fast when the server cannot be
    /// reached, naming host and port (never the password).
    pub async fn connect(dsn: &str, options: &Options) -> Result<Engine, EngineError> {
        validate_schema(&options.schema)?;
        let config = config::parse_dsn(dsn, options)?;
        let target: Arc<str> = config::describe_target(&config).into();
        let pool = pool::build(config, options.max_connections)?;
        let mut conn = pool::checkout(&pool, &target).await?;
        migrate::migrate(&mut conn, &options.schema).await?;
        drop(conn);
        let sql = Arc::new(Statements::new(&options.schema));
        let writer = Writer::spawn(pool.clone(), Arc::clone(&sql), Arc::clone(&target));
        Ok(Engine {
            pool,
            writer,
            sql,
            schema: options.schema.clone(),
            target,
        })
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Creates a workflow, or resumes the existing one of that name (under
    /// `parent`, or among roots), returning its saved history in the same
    /// round trip. A different input than the saved one is `InputMismatch`.
    pub async fn start(
        &self,
        parent: Option<Parent<'_>>,
        name: &str,
        input: &JsonText,
    ) -> Result<Started, EngineError> {
        validate_name("workflow", name)?;
        self.check_open()?;
        let client = pool::checkout(&self.pool, &self.target).await?;
        let context = || format!("starting workflow {name:?}");
        let row = match parent {
            None => {
                let statement = client
                    .prepare_cached(&self.sql.start_root)
                    .await
                    .map_err(|e| EngineError::database(context(), &e))?;
                client.query_one(&statement, &[&name, input]).await
            }
            Some(parent) => {
                let statement = client
                    .prepare_cached(&self.sql.start_child)
                    .await
                    .map_err(|e| EngineError::database(context(), &e))?;
                client
                    .query_one(
                        &statement,
                        &[&name, input, &parent.workflow.id, &parent.workflow.root_id],
                    )
                    .await
            }
        }
        .map_err(|e| EngineError::database(context(), &e))?;
        workflow::read_started(&row, name, parent.map(|p| p.name))
    }

    /// Queues the `running` marker of a step, to be written without anyone
    /// waiting: a step's body starts at once.
    pub fn step_started(
        &self,
        workflow: WorkflowId,
        name: &str,
        attempt: i32,
    ) -> Result<(), EngineError> {
        self.check_open()?;
        self.writer.step_started(workflow, name, attempt)
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
        self.writer
            .step_finished(workflow, name, attempt, outcome)
            .await
    }

    /// Saves a workflow's result or error; resolves after the commit.
    pub async fn workflow_finished(
        &self,
        workflow: WorkflowId,
        outcome: Outcome,
    ) -> Result<(), EngineError> {
        self.check_open()?;
        self.writer.workflow_finished(workflow, outcome).await
    }

    /// Closes the engine: new work fails with `Closed`, connections are
    /// released (the writer's after its current batch).
    pub fn close(&self) {
        self.pool.close();
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.pool.is_closed() {
            Err(EngineError::Closed)
        } else {
            Ok(())
        }
    }
}
