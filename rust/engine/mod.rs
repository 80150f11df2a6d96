//! The engine: plain Rust, no Python. It owns the pool, applies migrations,
//! holds leases, starts and resumes workflows, and saves checkpoints through
//! the writer.

/// Runs an idempotent database call (`body`, an async block using the
/// pooled connection `client`), retrying it on a fresh connection while the
/// server is unreachable. Everything, waiting for a connection and for
/// answers included, ends within the engine's reconnect timeout: a
/// connection whose answer does not come in time is dropped from the pool
/// (it may be stuck) and the call fails; a pool whose every connection
/// stayed in use is named, with who held it (`pool::Connections::get`).
macro_rules! retrying {
    ($engine:expr, $context:expr, |$client:ident| $body:expr) => {{
        let inner: &$crate::engine::Inner = &$engine.inner;
        let context = $context;
        let give_up = std::time::Instant::now() + inner.reconnect_timeout;
        let mut backoff = $crate::engine::retry::Backoff::until(give_up);
        let no_answer = || $crate::engine::pool::no_answer(&inner.target, &context, inner.reconnect_timeout);
        loop {
            let checkout = inner.connections.get(&context, give_up, inner.reconnect_timeout);
            // Past `give_up`, the backoff below gives up with the error.
            let err = match checkout.await {
                Err($crate::engine::EngineError::Closed) => break Err($crate::engine::EngineError::Closed),
                Err(err) => err,
                Ok(checked_out) => {
                    inner.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Mutable for bodies that open a transaction.
                    #[allow(unused_mut)]
                    let mut $client = checked_out;
                    let answer = tokio::time::timeout_at(give_up.into(), $body).await;
                    match answer {
                        Ok(Ok(value)) => break Ok(value),
                        Ok(Err(err)) if $crate::engine::retry::is_transient(&err) => {
                            let err = $crate::engine::EngineError::database(&context, &err);
                            log::warn!("{err}; retrying for up to {} s", inner.reconnect_timeout.as_secs_f64());
                            err
                        }
                        Ok(Err(err)) => break Err($crate::engine::EngineError::database(&context, &err)),
                        Err(_) => {
                            drop(deadpool_postgres::Object::take($client));
                            break Err(no_answer());
                        }
                    }
                }
            };
            if !backoff.wait().await {
                break Err(err);
            }
        }
    }};
}

mod browse;
mod cancel;
mod config;
mod dsn;
mod error;
mod events;
mod fork_run;
mod gc;
mod handle;
mod holds;
mod info;
mod jsonb;
mod messages;
mod migrate;
mod moment;
mod owner;
mod pool;
mod pooler;
mod queue;
mod queue_info;
mod recovery;
mod results;
mod retry;
mod schedule;
mod sql;
mod sql_values;
mod starter;
mod tls;
mod transaction;
mod tree;
mod waits;
mod workflow;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Object;
use tokio::runtime::Handle;

pub use browse::{AttemptInfo, BrowsedTree, MessageInfo};
pub use config::{MAX_NAME_BYTES, Options, show_path, validate_name, validate_path, validate_schema};

/// The bounds of the options (see `Options::validate`), each defined once.
pub mod limits {
    pub use super::config::{
        MAX_CONNECT_TIMEOUT, MAX_CONNECTIONS, MAX_DURATION, MAX_LEASE, MAX_NAME_BYTES, MAX_RATE_PERIOD,
        MAX_RECONNECT_TIMEOUT, MAX_SESSION_GRACE, MAX_VALUE_BYTES, MAX_WAIT, MIN_CONNECTIONS, MIN_LEASE,
    };
}
pub use browse::{BrowseFilter, ScheduleRow};
pub use cancel::CancelScope;
pub use error::EngineError;
pub use fork_run::Forked;
pub use handle::{ChildStart, HoldSlot, Run, StepVerdict, WorkflowHandle};
pub use holds::Hold;
pub use info::{RunFilter, RunInfo};
pub use jsonb::JsonText;
pub use messages::{EventRead, Sender, Sent};
pub use migrate::LATEST_VERSION;
pub use moment::Moment;
pub use queue::{ClaimLimits, Claimed, EnqueueMany, Enqueued, QueueLimits};
pub use queue_info::{QueueInfo, RateUse};
pub use recovery::Recovered;
pub use results::RunState;
pub use schedule::{Registered, ScheduleState, Ticks};
pub use sql_values::{Cell, Param, Rows};
pub use transaction::{CommitError, Transaction};
pub use tree::WorkflowTree;
pub use waits::{Suspended, Suspension};
pub use workflow::{HistoryEntry, Kind, Started, Status, WorkflowId};
pub use writer::{Outcome, Stats};

use events::Events;
use holds::Holds;
use owner::Owner;
use sql::Statements;
use starter::Starter;
use workflow::Access;
use writer::Writer;

/// How often a start that found its root busy looks again (after waiting
/// out the grace of an owner whose session is gone) before it reports it
/// busy: the owner kept coming back, or kept changing.
const MAX_BUSY_TRIES: u32 = 5;

/// A connected engine. Cheap to clone (clones share everything); every
/// method may be called concurrently.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    /// The pool, and the share of it transaction steps may hold.
    connections: pool::Connections,
    writer: Writer,
    starter: Starter,
    owner: Owner,
    holds: Arc<Holds>,
    events: Arc<Events>,
    sql: Arc<Statements>,
    /// Numbers the sends made from outside any workflow (see `messages`).
    send_calls: messages::SendCalls,
    schema: String,
    target: Arc<str>,
    reconnect_timeout: Duration,
    /// The runtime the engine was made on: releases of dropped holds are
    /// spawned there, from whatever thread drops them.
    runtime: Handle,
    /// The schema's version before `connect` migrated it (0: it was new).
    migrated_from: i32,
    /// Claims read-lock it from their statement until their runs are held;
    /// the recovery pass write-locks it to compare the database with the
    /// holds (see `recovery`).
    claiming: tokio::sync::RwLock<()>,
    /// The number of the next executor registered (see `register_executor`).
    executors: std::sync::atomic::AtomicI64,
    /// Database calls made outside the writer and the starter: reads,
    /// claims, recovery passes, waits... (`Stats::calls`).
    calls: std::sync::atomic::AtomicU64,
}

/// The parent of a child workflow: its identity and its name (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Parent<'a> {
    pub workflow: WorkflowId,
    pub name: &'a str,
}

/// The owner of a busy root, as a start saw it.
enum Holder {
    /// Connected, or within its lease with a session still there: busy.
    Alive,
    /// Its session is gone; it has this long left to come back.
    Gone(Duration),
    /// Nobody live holds it any more: try again at once.
    Free,
}

impl Engine {
    /// Connects, applies missing migrations, registers this process as a
    /// lease owner and starts the checkpoint writer. Must run inside a tokio
    /// runtime. Fails fast when the server cannot be reached, naming host and
    /// port (never the password); no step of it waits longer than the
    /// connect timeout for a connection or the reconnect timeout for an answer.
    pub async fn connect(dsn: &str, options: &Options) -> Result<Engine, EngineError> {
        options.validate()?;
        let parsed = config::parse_dsn(dsn, options)?;
        let target: Arc<str> = config::describe_target(&parsed.config).into();
        let connect_timeout = parsed
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(options.connect_timeout);
        let pool = pool::build(parsed.clone(), options.max_connections, connect_timeout)?;
        pooler::refuse_transaction_pooler(&pool, &target, options.reconnect_timeout).await?;
        let mut conn = pool::checkout(&pool, &target).await?;
        let migrating = async {
            if options.migrate {
                migrate::migrate(&mut conn, &options.schema).await
            } else {
                migrate::require_current(&conn, &options.schema).await
            }
        };
        let Ok(migrated) = tokio::time::timeout(options.reconnect_timeout, migrating).await else {
            drop(Object::take(conn));
            return Err(pool::no_answer(
                &target,
                "migrating the schema",
                options.reconnect_timeout,
            ));
        };
        let migrated_from = migrated?;
        drop(conn);
        let sql = Arc::new(Statements::new(&options.schema));
        let holds = Arc::new(Holds::default());
        let events = Arc::new(Events::new(&options.schema));
        let owner = Owner::register(owner::Setup {
            config: parsed.config,
            tls: parsed.tls,
            sql: Arc::clone(&sql),
            target: Arc::clone(&target),
            host: options.host.clone(),
            lease: options.lease,
            grace: options.session_grace,
            connect_timeout,
            holds: Arc::clone(&holds),
            events: Arc::clone(&events),
        })
        .await?;
        let connections = pool::Connections::new(pool.clone(), Arc::clone(&target));
        let starter = Starter::spawn(starter::Setup {
            connections: connections.clone(),
            sql: Arc::clone(&sql),
            target: Arc::clone(&target),
            owner: owner.id.clone(),
            reconnect_timeout: options.reconnect_timeout,
            max_connections: options.max_connections,
        });
        let writer = Writer::spawn(writer::Setup {
            pool: pool.clone(),
            sql: Arc::clone(&sql),
            target: Arc::clone(&target),
            owner: owner.id.clone(),
            schema: options.schema.clone(),
            reconnect_timeout: options.reconnect_timeout,
        });
        Ok(Engine {
            inner: Arc::new(Inner {
                connections,
                writer,
                starter,
                owner,
                holds,
                events,
                sql,
                send_calls: messages::SendCalls::default(),
                schema: options.schema.clone(),
                target,
                reconnect_timeout: options.reconnect_timeout,
                runtime: Handle::current(),
                migrated_from,
                claiming: tokio::sync::RwLock::new(()),
                executors: std::sync::atomic::AtomicI64::new(1),
                calls: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// This process's owner id, as recorded in `task.owner_id`.
    pub fn owner_id(&self) -> &str {
        &self.inner.owner.id
    }

    /// The schema's version before `connect` brought it to
    /// `LATEST_VERSION` (0: the schema was created).
    pub fn migrated_from(&self) -> i32 {
        self.inner.migrated_from
    }

    /// What the checkpoint writer and the root starts' group commit did so far.
    pub fn stats(&self) -> Stats {
        let (start_batches, starts) = self.inner.starter.stats();
        Stats {
            start_batches,
            starts,
            calls: self.inner.calls.load(std::sync::atomic::Ordering::Relaxed),
            ..self.inner.writer.stats()
        }
    }

    pub(crate) fn holds(&self) -> &Holds {
        &self.inner.holds
    }

    /// Creates a workflow, or takes the existing one of that name (under
    /// `parent`, or among roots) and reads its saved history.
    ///
    /// A root taken to run (not a completed one, which only replays) comes
    /// with its `Hold`: keep it (and clones, for the handles of its children)
    /// while working on the workflow. Dropping the last clone releases the
    /// workflow; until then a second start of it in this engine is
    /// `WorkflowBusy`, as from another process.
    ///
    /// Errors: `InputMismatch` for a different input than the saved one,
    /// `WorkflowBusy` when another live holder has it, `Cancelled`,
    /// `LeaseLost` when `parent` is no longer held by this process.
    /// A root whose owner's session is gone is waited for, for the rest of
    /// that owner's grace, then taken over unless the owner came back.
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
        match parent {
            None => self.start_root(name, input, deadline, None).await,
            Some(parent) => self.start_child(parent, name, input).await,
        }
    }

    /// `start` of a root run by the registered function `workflow` (its
    /// `module.qualname`, or the name it was registered under): recorded on
    /// the row, so that executors knowing the function can recover the run
    /// if its holder dies. `OtherWorkflow` if another function owns the name.
    pub async fn start_registered(
        &self,
        name: &str,
        input: &JsonText,
        deadline: Option<Duration>,
        workflow: &str,
    ) -> Result<Started, EngineError> {
        validate_name("workflow", name)?;
        validate_name("registered workflow", workflow)?;
        self.check_open()?;
        self.start_root(name, input, deadline, Some(workflow)).await
    }

    async fn start_root(
        &self,
        name: &str,
        input: &JsonText,
        deadline: Option<Duration>,
        workflow: Option<&str>,
    ) -> Result<Started, EngineError> {
        let reservation = match self.inner.holds.reserve(name).await {
            Ok(reservation) => reservation,
            Err(busy) => return Err(self.input_mismatch(name, input).await?.unwrap_or(busy)),
        };
        let deadline_secs = deadline.map(|d| d.as_secs_f64());
        let mut tries = 0;
        loop {
            // Sent with the other root starts of the moment, in one commit.
            let row = self.inner.starter.start(name, input, deadline_secs, workflow).await?;
            let recorded: Option<String> = workflow::col(&row, "workflow")?;
            if workflow.is_some() && recorded.is_some() && recorded.as_deref() != workflow {
                return Err(EngineError::OtherWorkflow {
                    name: name.to_owned(),
                    workflow: recorded,
                });
            }
            match workflow::read_started(&row, name, None, Access::Take) {
                Err(busy @ EngineError::WorkflowBusy { .. }) if tries < MAX_BUSY_TRIES => {
                    tries += 1;
                    match self.holder(name).await? {
                        Holder::Alive => return Err(busy),
                        Holder::Free => {}
                        // A little past the grace, so the claim's own clock agrees it ran out.
                        Holder::Gone(left) => tokio::time::sleep(left + Duration::from_millis(20)).await,
                    }
                }
                Err(err) => return Err(err),
                Ok(mut started) => {
                    if started.status == Status::Running {
                        started.hold = Some(reservation.hold(self.clone(), started.workflow));
                        if started.created {
                            log::debug!("started workflow '{name}'");
                        } else {
                            log::info!("took over workflow '{name}' (attempt {})", started.attempt);
                        }
                    }
                    return self.with_history(started).await;
                }
            }
        }
    }

    async fn start_child(&self, parent: Parent<'_>, name: &str, input: &JsonText) -> Result<Started, EngineError> {
        let owner = self.owner_id();
        let p = parent.workflow;
        let row = retrying!(self, &format!("starting workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.start_child).await?;
            client
                .query_opt(&statement, &[&name, input, &owner, &p.id, &p.epoch])
                .await
        })?;
        // No row: the parent's lease was refused.
        let Some(row) = row else {
            return Err(self.refusal(parent.workflow).await);
        };
        let started = workflow::read_started(&row, name, Some(parent.name), Access::Take)?;
        self.with_history(started).await
    }

    /// `InputMismatch` if the root `name` exists with another input.
    async fn input_mismatch(&self, name: &str, input: &JsonText) -> Result<Option<EngineError>, EngineError> {
        let row = retrying!(
            self,
            &format!("reading the input of workflow {name:?}"),
            |client| async {
                let statement = client.prepare_cached(&self.inner.sql.root_input).await?;
                client.query_opt(&statement, &[&name, input]).await
            }
        )?;
        let matches = row
            .map(|row| workflow::col::<bool>(&row, "input_matches"))
            .transpose()?;
        Ok((matches == Some(false)).then(|| EngineError::InputMismatch { name: name.to_owned() }))
    }

    /// Who holds the busy root `name`, marking its session gone if it is.
    async fn holder(&self, name: &str) -> Result<Holder, EngineError> {
        let owner = self.owner_id();
        let row = retrying!(self, &format!("checking who holds workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.holder).await?;
            client.query_opt(&statement, &[&name, &owner]).await
        })?;
        let Some(row) = row else {
            return Ok(Holder::Free);
        };
        if workflow::col::<bool>(&row, "connected")? {
            return Ok(Holder::Alive);
        }
        if workflow::col::<bool>(&row, "expired")? {
            return Ok(Holder::Free);
        }
        let left = workflow::col::<Option<f64>>(&row, "grace_left")?.unwrap_or(0.0);
        Ok(Holder::Gone(
            Duration::try_from_secs_f64(left).unwrap_or(Duration::ZERO),
        ))
    }

    /// Reads the child `name` of a finished parent as it is, to replay it:
    /// nothing is taken or written. `InputMismatch` for another input.
    pub async fn replay_child(&self, parent: Parent<'_>, name: &str, input: &JsonText) -> Result<Started, EngineError> {
        validate_name("workflow", name)?;
        self.check_open()?;
        let id = parent.workflow.id;
        let row = retrying!(self, &format!("reading child workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.replay_child).await?;
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
            let statement = client.prepare_cached(&self.inner.sql.history).await?;
            client.query(&statement, &[&id]).await
        })?;
        started.history = workflow::read_history(&rows)?;
        Ok(started)
    }

    /// Queues the `running` marker of a step, to be written without anyone
    /// waiting: a step's body starts at once.
    pub fn step_started(&self, workflow: WorkflowId, name: &str, attempt: i32) -> Result<(), EngineError> {
        self.check_open()?;
        self.inner.writer.step_started(workflow, name, attempt)
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
        self.inner.writer.step_started_durably(workflow, name, attempt).await
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
        let status = outcome.status();
        let debug = log::log_enabled!(log::Level::Debug).then(|| name.clone());
        self.inner
            .writer
            .step_finished(workflow, name, attempt, outcome)
            .await?;
        if let Some(name) = debug {
            log::debug!(
                "step '{name}' of workflow #{} {} (attempt {attempt})",
                workflow.id,
                status.as_str()
            );
        }
        Ok(())
    }

    /// Saves a workflow's result or error; resolves after the commit. A root
    /// that finished is no longer held: its name is free (a failed root may
    /// be started again at once) and the handles of its tree stop.
    pub async fn workflow_finished(&self, workflow: WorkflowId, outcome: Outcome) -> Result<(), EngineError> {
        self.check_open()?;
        let status = outcome.status();
        self.inner.writer.workflow_finished(workflow, outcome).await?;
        log::debug!("workflow #{} {}", workflow.id, status.as_str());
        if workflow.id == workflow.root_id {
            self.inner.holds.finished(workflow, status);
        }
        Ok(())
    }

    /// Gives up the root `root` and its tree in the database, so that anyone
    /// may take it over at once. Best effort: an unreachable database leaves
    /// the lease to run out as a dead process's would.
    pub(crate) async fn release(&self, root: WorkflowId) {
        if self.check_open().is_err() {
            return;
        }
        let owner = self.owner_id();
        let schema = self.schema();
        let _ = retrying!(self, "releasing a workflow", |client| async {
            let statement = client.prepare_cached(&self.inner.sql.release).await?;
            client
                .execute(&statement, &[&root.id, &owner, &root.epoch, &schema])
                .await
        });
    }

    /// Runs `work` on the engine's runtime, in the background (from any thread).
    pub(crate) fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.runtime.spawn(work);
    }

    /// `release`, spawned: for drops, which cannot wait.
    pub(crate) fn release_soon(&self, root: WorkflowId) {
        let engine = self.clone();
        self.inner.runtime.spawn(async move { engine.release(root).await });
    }

    /// Closes the engine: gives up the workflows it holds and this process's
    /// leases (others may take its unfinished workflows at once), then
    /// refuses new work with `Closed` and releases the connections (the
    /// writer's after its current batch).
    pub async fn close(&self) {
        // What is still held is given back, not left for a recovery (which
        // would count it as a crash): another process takes it up at once.
        if self.check_open().is_ok() {
            self.inner.holds.release_all().await;
        }
        self.inner.owner.stop();
        if !self.inner.connections.is_closed() {
            let owner = self.owner_id();
            let _ = retrying!(self, "releasing leases", |client| async {
                client.execute(&self.inner.sql.owner_release, &[&owner]).await
            });
        }
        self.inner.connections.close();
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.inner.connections.is_closed() {
            Err(EngineError::Closed)
        } else {
            Ok(())
        }
    }

    /// Why `workflow` refuses the writes of this process.
    async fn refusal(&self, workflow: WorkflowId) -> EngineError {
        let owner = self.owner_id();
        let id = workflow.id;
        let found = retrying!(self, "checking a workflow's lease", |client| async {
            client.query_opt(&self.inner.sql.diagnose, &[&vec![id], &owner]).await
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
