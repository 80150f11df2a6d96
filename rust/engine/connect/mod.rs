//! Reaching Postgres: options and names, the DSN and TLS, the pool and its
//! retries, refusing transaction poolers, and migrating the schema.

pub(super) mod config;
pub(super) mod dsn;
pub(super) mod migrate;
pub(super) mod pool;
pub(super) mod pooler;
pub(super) mod retry;
pub(super) mod tls;
