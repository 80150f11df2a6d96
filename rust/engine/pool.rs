//! The connection pool, and turning its failures into errors that name the
//! server (host and port, never credentials).

use std::time::Duration;

use super::config::Target;
use super::error::{EngineError, describe};
use super::tls;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};

/// Builds the pool. Connections are opened lazily, by `checkout`; opening
/// one (TCP, TLS, login) takes at most `connect_timeout`: tokio-postgres
/// bounds only the TCP connect, so a server that accepts and never answers
/// would otherwise hold a start forever.
pub(crate) fn build(target: Target, max_size: usize, connect_timeout: Duration) -> Result<Pool, EngineError> {
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
pub(crate) async fn checkout(pool: &Pool, target: &str) -> Result<Object, EngineError> {
    pool.get().await.map_err(|err| match err {
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
    })
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
