//! Reaching Postgres: options and names, the DSN and TLS, the pool and its
//! retries, refusing transaction poolers, and migrating the schema.

pub(super) mod config;
pub(super) mod dsn;
pub(super) mod group;
pub(super) mod migrate;
pub(super) mod pool;
pub(super) mod pooler;
pub(super) mod retry;
pub(super) mod tls;

use std::sync::Arc;

use deadpool_postgres::Object;
use tokio::runtime::Handle;

use super::checkpoint::starter::{Starter, Starts};
use super::checkpoint::writer::{self, Writer};
use super::lease::holds::Holds;
use super::lease::notifications::Events;
use super::lease::owner::{self, Owner};
use super::queue::enqueuer::{Enqueuer, Enqueues};
use super::sql::Statements;
use super::wait::messages;
use super::{Engine, EngineError, Inner, Options};

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
        let group_setup = || group::Setup {
            connections: connections.clone(),
            target: Arc::clone(&target),
            reconnect_timeout: options.reconnect_timeout,
            max_connections: options.max_connections,
        };
        let starter = Starter::spawn(
            group_setup(),
            Starts {
                sql: Arc::clone(&sql),
                owner: owner.id.clone(),
            },
        );
        let enqueuer = Enqueuer::spawn(
            group_setup(),
            Enqueues {
                sql: Arc::clone(&sql),
                schema: options.schema.clone(),
            },
        );
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
                enqueuer,
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
}
