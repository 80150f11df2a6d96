//! The connection pool, the share of it transaction steps may hold, and
//! turning its failures into errors that name the server (host and port,
//! never credentials) or, when every connection stayed in use, the pool.
//!
//! A transaction step holds a pooled connection while the user's function
//! runs, and that function may itself call durable (`durable.get`,
//! `durable.send`), which needs a connection of the same pool. Were
//! transactions free to take every connection, such calls would wait for
//! connections that only their own transactions' ends could free, and
//! nothing would move until the reconnect timeout. So transaction steps
//! hold at most `max_connections - KEPT_FOR_THE_ENGINE` connections at once
//! (`TransactionShare`); the checkpoint writer keeps one of the rest and
//! the engine's other calls (reads, starts, claims, releases, each short)
//! share the last. The liveness session is a connection of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::connect::config::Target;
use crate::engine::connect::tls;
use crate::engine::error::{EngineError, describe};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType, Timeouts,
};

/// Connections of the pool that transaction steps never hold: the
/// checkpoint writer's, and one for the engine's other calls.
pub(super) const KEPT_FOR_THE_ENGINE: usize = 2;

/// Builds the pool. Connections are opened lazily, by `checkout`; opening
/// one (TCP, TLS, login) takes at most `connect_timeout`: tokio-postgres
/// bounds only the TCP connect, so a server that accepts and never answers
/// would otherwise hold a start forever.
pub(super) fn build(target: Target, max_size: usize, connect_timeout: Duration) -> Result<Pool, EngineError> {
    let manager = Manager::from_config(
        target.config,
        target.tls,
        ManagerConfig {
            // A broken connection reports itself closed; checking that is
            // enough, a test query per checkout would cost a round trip.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size.max(2))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(connect_timeout))
        .recycle_timeout(Some(connect_timeout))
        .build()
        .map_err(|e| EngineError::InvalidDsn(e.to_string()))
}

/// What pgbouncer answers to the `options` durable sets on its sessions.
const POOLER_REFUSAL: &str = "unsupported startup parameter";

const POOLER_HINT: &str = " (a pooler such as pgbouncer answered, not Postgres: durable needs a session \
     (direct) connection, so use the server's own endpoint, e.g. port 5432; a pooler in session mode \
     also works if it passes or ignores the options parameter: pgbouncer's ignore_startup_parameters)";

/// A failed connection attempt to `target` ("host:port"), as `Connect`,
/// or `TlsConnect` when TLS failed (a refused certificate, no TLS).
pub(crate) fn connect_error(target: &str, err: &tokio_postgres::Error) -> EngineError {
    if let Some(reason) = tls::explain(err) {
        return EngineError::TlsConnect {
            target: target.to_owned(),
            reason,
        };
    }
    let (mut reason, sqlstate) = describe(err);
    if reason.contains(POOLER_REFUSAL) {
        reason.push_str(POOLER_HINT);
    }
    EngineError::Connect {
        target: target.to_owned(),
        reason,
        sqlstate,
    }
}

/// A pooled connection, or an error naming the server it could not reach.
/// Waits for a free connection as long as it takes: for the checkpoint
/// writer (which the share of transactions cannot starve) and at `connect`.
pub(crate) async fn checkout(pool: &Pool, target: &str) -> Result<Object, EngineError> {
    pool.get().await.map_err(|err| pool_error(pool, target, err))
}

fn pool_error(pool: &Pool, target: &str, err: PoolError) -> EngineError {
    match err {
        PoolError::Backend(err) => connect_error(target, &err),
        PoolError::Closed => EngineError::Closed,
        PoolError::Timeout(_) => EngineError::Connect {
            target: target.to_owned(),
            reason: format!(
                "no connection within the connect timeout ({} s): the server does not answer",
                pool.timeouts().create.unwrap_or_default().as_secs_f64()
            ),
            sqlstate: None,
        },
        other => EngineError::Connect {
            target: target.to_owned(),
            reason: other.to_string(),
            sqlstate: None,
        },
    }
}

/// Durable's pool, with the share of it transaction steps may hold.
#[derive(Clone)]
pub(crate) struct Connections {
    pool: Pool,
    target: Arc<str>,
    /// One permit per connection transaction steps may hold at once.
    transactions: Arc<Semaphore>,
}

/// A transaction step's right to hold a connection; given back when dropped.
pub(crate) type TransactionPermit = OwnedSemaphorePermit;

impl Connections {
    pub(super) fn new(pool: Pool, target: Arc<str>) -> Self {
        let share = pool.status().max_size.saturating_sub(KEPT_FOR_THE_ENGINE);
        Connections {
            pool,
            target,
            transactions: Arc::new(Semaphore::new(share)),
        }
    }

    /// The pool's size (`max_connections`).
    fn max_connections(&self) -> usize {
        self.pool.status().max_size
    }

    /// How many connections transaction steps may hold at once.
    fn transaction_share(&self) -> usize {
        self.max_connections().saturating_sub(KEPT_FOR_THE_ENGINE)
    }

    /// A pooled connection for `context`, waiting at most until `give_up`.
    /// When none came: an error naming the server, or, when every one of
    /// the pool's connections stayed in use, one naming the pool and who
    /// held it. `timeout` (the reconnect timeout) is for the messages.
    pub(crate) async fn get(&self, context: &str, give_up: Instant, timeout: Duration) -> Result<Object, EngineError> {
        let left = give_up.saturating_duration_since(Instant::now());
        let configured = self.pool.timeouts();
        let create = configured.create.unwrap_or(left);
        let timeouts = Timeouts {
            wait: Some(left),
            create: Some(create.min(left)),
            recycle: Some(configured.recycle.unwrap_or(left).min(left)),
        };
        match self.pool.timeout_get(&timeouts).await {
            Ok(conn) => Ok(conn),
            Err(PoolError::Timeout(TimeoutType::Wait)) => Err(self.exhausted(context, timeout)),
            // Cut short by the deadline rather than by the connect timeout.
            Err(PoolError::Timeout(_)) if left < create => Err(no_answer(&self.target, context, timeout)),
            Err(err) => Err(pool_error(&self.pool, &self.target, err)),
        }
    }

    /// The right for transaction step `name` to hold a connection, waiting
    /// at most until `give_up` for one of the share to come free. `timeout`
    /// (the reconnect timeout) is for the message.
    pub(crate) async fn transaction_permit(
        &self,
        name: &str,
        give_up: Instant,
        timeout: Duration,
    ) -> Result<TransactionPermit, EngineError> {
        let size = self.max_connections();
        let share = self.transaction_share();
        if share == 0 {
            return Err(EngineError::InvalidOption(format!(
                "transaction step {name:?} needs a connection of its own, and with max_connections={size} none \
                 is left for transactions: the checkpoint writer keeps one and one is kept for durable's own \
                 calls, which a transaction's function may make; use durable.init(max_connections=3) or more"
            )));
        }
        let permit = Arc::clone(&self.transactions).acquire_owned();
        match tokio::time::timeout_at(give_up.into(), permit).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(EngineError::Closed),
            Err(_) => Err(EngineError::Database {
                context: format!("starting transaction step {name:?}"),
                message: format!(
                    "no connection for it within the reconnect timeout ({} s): transaction steps may hold {share} \
                     of durable's {size} connections at once (max_connections={size}, less the checkpoint \
                     writer's and one kept for durable's own calls), and other transaction steps held \
                     them the whole time; keep transactions short, run fewer at once, or raise \
                     max_connections",
                    timeout.as_secs_f64()
                ),
                sqlstate: None,
            }),
        }
    }

    /// Every connection of the pool stayed in use while `context` waited.
    fn exhausted(&self, context: &str, waited: Duration) -> EngineError {
        let size = self.max_connections();
        let share = self.transaction_share();
        let in_transactions = share - self.transactions.available_permits().min(share);
        EngineError::Database {
            context: context.to_owned(),
            message: format!(
                "no free connection in durable's pool within the reconnect timeout ({} s): all {size} \
                 connections (max_connections={size}) stayed in use; the checkpoint writer keeps 1, \
                 transaction steps held {in_transactions} (at most {share} at once), and durable's own calls \
                 in progress the rest; raise max_connections, or make fewer calls at once",
                waited.as_secs_f64()
            ),
            sqlstate: None,
        }
    }

    /// Stops handing out connections; new transaction steps are refused.
    pub(crate) fn close(&self) {
        self.pool.close();
        self.transactions.close();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

/// A request to `target` that got no answer in time: the server is stuck
/// (stopped, overloaded) or the network is cut.
pub(crate) fn no_answer(target: &str, context: &str, waited: Duration) -> EngineError {
    EngineError::Database {
        context: context.to_owned(),
        message: format!(
            "no answer from Postgres at {target} within the reconnect timeout ({} s); \
             is the server stopped or overloaded, or the network cut?",
            waited.as_secs_f64()
        ),
        sqlstate: None,
    }
}
