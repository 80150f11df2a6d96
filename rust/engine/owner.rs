//! This process as a lease owner: a row in `owner`, a dedicated session whose
//! existence proves the process alive, and one heartbeat that renews every
//! lease of the process at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};

use super::error::EngineError;
use super::pool::connect_error;
use super::retry::Backoff;
use super::sql::Statements;
use super::workflow::col;

/// The owner of this engine's workflows. Dropping it stops the heartbeat and
/// closes the dedicated session, which others then see as a dead owner.
pub(crate) struct Owner {
    pub(crate) id: String,
    heartbeat: JoinHandle<()>,
}

/// What the heartbeat needs to keep going, and to reconnect.
struct Session {
    config: Config,
    sql: Arc<Statements>,
    target: Arc<str>,
    host: String,
    lease: Duration,
}

impl Owner {
    /// Opens the dedicated session, registers, and starts the heartbeat.
    pub(crate) async fn register(
        config: Config,
        sql: Arc<Statements>,
        target: Arc<str>,
        host: String,
        lease: Duration,
    ) -> Result<Owner, EngineError> {
        let session = Session {
            config,
            sql,
            target,
            host,
            lease,
        };
        let client = session.connect().await?;
        let id = session.register(&client, None).await?;
        let heartbeat = tokio::spawn(session.beat(client, id.clone()));
        Ok(Owner { id, heartbeat })
    }

    /// Stops the heartbeat and closes the dedicated session: from now on
    /// this owner is dead to everyone.
    pub(crate) fn stop(&self) {
        self.heartbeat.abort();
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Session {
    async fn connect(&self) -> Result<Client, EngineError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|err| connect_error(&self.target, &err))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Records (or refreshes) the owner row for this session; returns the id.
    async fn register(&self, client: &Client, id: Option<&str>) -> Result<String, EngineError> {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let row = client
            .query_one(
                &self.sql.owner_register,
                &[&id, &self.host, &pid, &self.lease.as_secs_f64()],
            )
            .await
            .map_err(|e| EngineError::database("registering this process as a lease owner", &e))?;
        col(&row, "id")
    }

    /// Renews the leases every third of their length. If the session breaks
    /// (a database restart), reconnects and registers the new session: until
    /// then this process looks dead and its workflows may be taken over,
    /// which the fencing of every write makes safe.
    async fn beat(self, mut client: Client, id: String) {
        let period = self.lease / 3;
        loop {
            tokio::time::sleep(period).await;
            let renewed = client
                .query_one(&self.sql.owner_heartbeat, &[&id, &self.lease.as_secs_f64()])
                .await
                .ok()
                .and_then(|row| col::<i64>(&row, "renewed").ok());
            match renewed {
                Some(1) => {}
                // The row was removed (expired for a day): put it back.
                Some(_) => {
                    let _ = self.register(&client, Some(&id)).await;
                }
                None => client = self.reconnect(&id).await,
            }
        }
    }

    async fn reconnect(&self, id: &str) -> Client {
        loop {
            let mut backoff = Backoff::until(Instant::now() + self.lease);
            while backoff.wait().await {
                if let Ok(client) = self.connect().await {
                    if self.register(&client, Some(id)).await.is_ok() {
                        return client;
                    }
                }
            }
        }
    }
}
