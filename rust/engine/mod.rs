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
        let mut backoff = $crate::engine::connect::retry::Backoff::until(give_up);
        let no_answer = || $crate::engine::connect::pool::no_answer(&inner.target, &context, inner.reconnect_timeout);
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
                        Ok(Err(err)) if $crate::engine::connect::retry::is_transient(&err) => {
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

mod admin;
mod checkpoint;
mod connect;
mod error;
mod handle;
mod lease;
mod queue;
mod read;
mod sql;
mod values;
mod wait;
mod workflow;

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

pub use admin::cancel::CancelScope;
pub use admin::fork::Forked;
pub use checkpoint::transaction::{CommitError, Transaction};
pub use checkpoint::writer::{Outcome, Stats};
pub use connect::config::{MAX_NAME_BYTES, Options, show_path, validate_name, validate_path, validate_schema};
pub use connect::migrate::LATEST_VERSION;
pub use error::EngineError;
pub use handle::{ChildStart, HoldSlot, Run, StepVerdict, WorkflowHandle};
pub use lease::holds::Hold;
pub use queue::recovery::Recovered;
pub use queue::schedule::{Registered, ScheduleState, Ticks};
pub use queue::{ClaimLimits, Claimed, Enqueue, EnqueueMany, Enqueued, QueueLimits};
pub use read::queues::{QueueInfo, RateUse};
pub use read::runs::{RunFilter, RunInfo};
pub use read::tree::WorkflowTree;
pub use read::ui::{AttemptInfo, BrowseFilter, BrowsedTree, MessageInfo, ScheduleRow};
pub use sql::{NamedStatement, statements};
pub use values::jsonb::JsonText;
pub use values::moment::Moment;
pub use values::sql_values::{Cell, Param, Rows};
pub use wait::messages::{EventRead, Sender, Sent};
pub use wait::results::RunState;
pub use wait::suspend::{Suspended, Suspension};
pub use workflow::{HistoryEntry, Kind, Started, Status, WorkflowId};

/// The bounds of the options (see `Options::validate`), each defined once.
pub mod limits {
    pub use super::connect::config::{
        MAX_CONNECT_TIMEOUT, MAX_CONNECTIONS, MAX_DURATION, MAX_LEASE, MAX_NAME_BYTES, MAX_RATE_PERIOD,
        MAX_RECONNECT_TIMEOUT, MAX_SESSION_GRACE, MAX_VALUE_BYTES, MAX_WAIT, MIN_CONNECTIONS, MIN_LEASE,
    };
}

use checkpoint::starter::Starter;
use checkpoint::writer::Writer;
use connect::pool;
use lease::holds::Holds;
use lease::notifications::Events;
use lease::owner::Owner;
use queue::enqueuer::Enqueuer;
use sql::Statements;
use wait::messages;

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
    enqueuer: Enqueuer,
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
    /// Database calls made outside the group commits (the writer, the
    /// starter, the enqueuer): reads,
    /// claims, recovery passes, waits... (`Stats::calls`).
    calls: std::sync::atomic::AtomicU64,
}

/// The parent of a child workflow: its identity and its name (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Parent<'a> {
    pub workflow: WorkflowId,
    pub name: &'a str,
}

impl Engine {
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

    /// What the group commits (the checkpoint writer, root starts and
    /// single enqueues) did so far.
    pub fn stats(&self) -> Stats {
        let (start_batches, starts) = self.inner.starter.stats();
        let (enqueue_batches, enqueues) = self.inner.enqueuer.stats();
        Stats {
            start_batches,
            starts,
            enqueue_batches,
            enqueues,
            calls: self.inner.calls.load(std::sync::atomic::Ordering::Relaxed),
            ..self.inner.writer.stats()
        }
    }

    pub(crate) fn holds(&self) -> &Holds {
        &self.inner.holds
    }

    /// Runs `work` on the engine's runtime, in the background (from any thread).
    pub(crate) fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.runtime.spawn(work);
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
}
