//! Refusing transaction-mode poolers at connect.
//!
//! durable needs each of its connections to be one Postgres session: the
//! owner's liveness is its session's backend pid (seen by others in
//! `pg_stat_activity`), and notifications arrive on that session. Behind a
//! transaction-mode pooler (pgbouncer `pool_mode=transaction`, the pooled
//! endpoints of managed services) a connection is served by whichever
//! server session is free at each transaction, so neither holds.
//!
//! The probe, on two pooled connections A and B (simple queries only: such
//! poolers may not keep prepared statements), four round trips:
//! A reads its backend pid; B opens a transaction and reads its pid; A reads
//! its pid again; B commits. On a direct connection A's two pids are equal
//! and B's differs (two live sessions never share a pid). A pooler either
//! hands B the session A just gave back (pgbouncer hands out the most
//! recently used one: B's pid is A's first) or hands A's second query
//! another session (A's pids differ). Neither can happen on a direct
//! connection, so the probe has no false positives.

use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::engine::connect::pool;
use crate::engine::error::EngineError;

/// What the probe is doing, for errors.
const CONTEXT: &str = "checking that the connection is a Postgres session (not a transaction-mode pooler)";

/// Fails with `TransactionPooler` when the connections of `pool` are not
/// sessions of their own; waits at most `wait` for answers.
pub(super) async fn refuse_transaction_pooler(pool: &Pool, target: &str, wait: Duration) -> Result<(), EngineError> {
    let a = pool::checkout(pool, target).await?;
    let b = pool::checkout(pool, target).await?;
    match tokio::time::timeout(wait, pooled(&a, &b)).await {
        Ok(Ok(false)) => Ok(()),
        Ok(Ok(true)) => Err(EngineError::TransactionPooler {
            target: target.to_owned(),
        }),
        Ok(Err(err)) => {
            // B may still be in its transaction: not for the pool.
            drop(Object::take(b));
            Err(EngineError::database(CONTEXT, &err))
        }
        Err(_) => {
            drop(Object::take(a));
            drop(Object::take(b));
            Err(pool::no_answer(target, CONTEXT, wait))
        }
    }
}

/// True when A and B are not sessions of their own (see the module's doc).
async fn pooled(a: &Client, b: &Client) -> Result<bool, tokio_postgres::Error> {
    let first = backend_pid(a, "SELECT pg_backend_pid()").await?;
    let other = backend_pid(b, "BEGIN; SELECT pg_backend_pid()").await?;
    let again = backend_pid(a, "SELECT pg_backend_pid()").await?;
    b.batch_execute("COMMIT").await?;
    Ok(judge(first, other, again))
}

/// The decision, apart: A's pid, B's pid within its transaction, A's pid again.
fn judge(first: Option<i64>, other: Option<i64>, again: Option<i64>) -> bool {
    other == first || again != first
}

/// The pid a simple query's one row holds (None if there is no row).
async fn backend_pid(client: &Client, query: &str) -> Result<Option<i64>, tokio_postgres::Error> {
    let messages = client.simple_query(query).await?;
    Ok(messages.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0).and_then(|pid| pid.parse().ok()),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn a_direct_connection_is_never_judged_pooled() {
        assert!(!judge(Some(10), Some(11), Some(10)));
    }

    #[test]
    fn a_reused_or_changed_session_is_judged_pooled() {
        // B got the session A had just given back (pgbouncer's LIFO).
        assert!(judge(Some(10), Some(10), Some(12)));
        // A's second transaction ran on another session.
        assert!(judge(Some(10), Some(11), Some(12)));
    }
}
