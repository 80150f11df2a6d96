//! This process as a lease owner: a row in `owner`, a dedicated session whose
//! existence proves the process alive, one heartbeat that renews every lease
//! of the process at once, and the notifications (cancels, new work,
//! finished runs) that arrive on that session.
//!
//! The session is kept, not merely opened: it is immune to the server's
//! `idle_session_timeout`, and when it drops anyway (a terminated backend,
//! a restart) the loss is seen at once, because this task drives the
//! connection itself, and a new session is registered right away. Claimants
//! give a gone session the owner's grace (`session_grace`) before they take
//! its workflows over, so a live process keeps them; unless they run on the
//! same machine and find the process itself ended (`lease::gone`), which a
//! process also looks for among the owners of its machine when it registers.
//! Every heartbeat also marks the sessions of other owners that vanished,
//! so that their grace runs from then rather than from a claimant's look.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_postgres::{AsyncMessage, Client, Config, Notification};

use crate::engine::connect::pool::connect_error;
use crate::engine::connect::tls::Connector;
use crate::engine::error::EngineError;
use crate::engine::lease::gone;
use crate::engine::lease::holds::Holds;
use crate::engine::lease::notifications::CHANNEL;
use crate::engine::lease::notifications::Events;
use crate::engine::lease::process::Process;
use crate::engine::sql::{Sql, Statements};
use crate::engine::workflow::col;

/// Server settings of the dedicated session: it sits idle between
/// heartbeats, and must not be closed for that (managed Postgres often sets
/// an idle timeout).
const SESSION_SETTINGS: &str = "-c idle_session_timeout=0";

/// Shortest wait between two attempts to get a lost session back.
const FIRST_RETRY: Duration = Duration::from_millis(10);

/// The owner of this engine's workflows. Dropping it stops the heartbeat and
/// closes the dedicated session, which others then see as a dead owner.
pub(crate) struct Owner {
    pub(crate) id: String,
    /// This process, as its owner row records it (`None`: the kernel
    /// cannot be asked, and this process proves no other gone).
    pub(crate) process: Option<Process>,
    task: JoinHandle<()>,
}

/// What the owner's task needs to keep its session, and to get it back.
pub(crate) struct Setup {
    pub config: Config,
    /// The same TLS as the pool's.
    pub tls: Connector,
    pub sql: Arc<Statements>,
    pub target: Arc<str>,
    pub host: String,
    pub lease: Duration,
    pub grace: Duration,
    pub connect_timeout: Duration,
    pub holds: Arc<Holds>,
    pub events: Arc<Events>,
}

/// The dedicated session: its client, and the notifications it receives
/// (the channel closes when the session is gone).
struct Session {
    client: Client,
    events: mpsc::UnboundedReceiver<Notification>,
}

impl Owner {
    /// Opens the dedicated session, registers, and starts the heartbeat.
    pub(crate) async fn register(mut setup: Setup) -> Result<Owner, EngineError> {
        let options = match setup.config.get_options() {
            Some(given) => format!("{given} {SESSION_SETTINGS}"),
            None => SESSION_SETTINGS.to_owned(),
        };
        setup.config.options(&options);
        let session = setup.connect().await?;
        let process = Process::this();
        let id = setup.register(&session.client, None, process.as_ref()).await?;
        if let Some(here) = &process {
            // Sooner only: a start that finds their workflows proves them ended too.
            let released = gone::release_ended(&session.client, &setup.sql, here, &id, setup.connect_timeout);
            if let Err(err) = released.await {
                log::warn!("{err}");
            }
        }
        let task = tokio::spawn(setup.run(session, id.clone(), process.clone()));
        Ok(Owner { id, process, task })
    }

    /// Stops the heartbeat and closes the dedicated session: from now on
    /// this owner is dead to everyone.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Setup {
    /// Opens the session and listens on `CHANNEL`, all within the connect
    /// timeout. The connection is driven by a task of its own, which passes
    /// notifications on and ends (closing the channel) with the session.
    async fn connect(&self) -> Result<Session, EngineError> {
        let no_answer = || EngineError::Connect {
            target: self.target.to_string(),
            reason: format!(
                "no answer within the connect timeout ({} s)",
                self.connect_timeout.as_secs_f64()
            ),
            sqlstate: None,
        };
        let (client, mut connection) = timeout(self.connect_timeout, self.config.connect(self.tls.clone()))
            .await
            .map_err(|_| no_answer())?
            .map_err(|err| connect_error(&self.target, &err))?;
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(notification) = message {
                    if tx.send(notification).is_err() {
                        break;
                    }
                }
            }
        });
        timeout(self.connect_timeout, client.batch_execute(&format!("LISTEN {CHANNEL}")))
            .await
            .map_err(|_| no_answer())?
            .map_err(|err| EngineError::database("listening for cancellations", &err))?;
        Ok(Session { client, events })
    }

    /// Records (or refreshes) the owner row for this session, with this
    /// `process`; returns the id.
    async fn register(
        &self,
        client: &Client,
        id: Option<&str>,
        process: Option<&Process>,
    ) -> Result<String, EngineError> {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &id,
            &self.host,
            &pid,
            &self.lease.as_secs_f64(),
            &self.grace.as_secs_f64(),
            &process.map(|p| p.boot_id.as_str()),
            &process.map(|p| p.namespace.as_str()),
            &process.map(|p| p.start),
        ];
        let context = "registering this process as a lease owner";
        let row = timeout(
            self.connect_timeout,
            client.query_one(&self.sql.owner_register, &params),
        )
        .await
        .map_err(|_| EngineError::Unexpected(format!("{context}: no answer")))?
        .map_err(|e| EngineError::database(context, &e))?;
        col(&row, "id")
    }

    /// Renews the leases every third of their length, and hands cancel
    /// notifications to the holds. When the session is lost, gets a new one
    /// at once; until it is registered, this process looks dead, and once
    /// its grace has passed its workflows may be taken over, which the
    /// fencing of every write makes safe.
    async fn run(self, mut session: Session, id: String, process: Option<Process>) {
        let process = process.as_ref();
        let period = self.lease / 3;
        let mut beats = tokio::time::interval(period);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beats.tick().await; // the first tick is immediate: registering was the first beat
        loop {
            tokio::select! {
                _ = beats.tick() => {
                    if !self.beat(&session.client, &id, period, process).await {
                        log::warn!(
                            "the heartbeat of this process (owner {id}) got no answer within {:.1} s; \
                             reconnecting its session",
                            period.as_secs_f64()
                        );
                        session = self.reconnect(&id, process).await;
                    }
                }
                event = session.events.recv() => {
                    if let Some(notification) = event {
                        self.dispatch(notification.payload());
                    } else {
                        log::warn!(
                            "lost the session of this process (owner {id}); reconnecting (others take its \
                             workflows over if it is not back within {:.1} s)",
                            self.grace.as_secs_f64()
                        );
                        session = self.reconnect(&id, process).await;
                    }
                }
            }
        }
    }

    /// One heartbeat; false when the session did not answer in time.
    async fn beat(&self, client: &Client, id: &str, period: Duration, process: Option<&Process>) -> bool {
        let lease = self.lease.as_secs_f64();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id, &lease];
        let renewed = match timeout(period, client.query_one(&self.sql.owner_heartbeat, &params)).await {
            Ok(Ok(row)) => col::<i64>(&row, "renewed").unwrap_or(0),
            _ => return false,
        };
        // The row was purged (expired for a day) or names another session: put it back.
        renewed == 1 || self.register(client, Some(id), process).await.is_ok()
    }

    /// A new session, registered, after the old one was lost. Tries at once,
    /// then at short intervals (a fraction of the grace, so that a server
    /// coming back finds this owner back well within it).
    async fn reconnect(&self, id: &str, process: Option<&Process>) -> Session {
        let longest = (self.grace / 3).max(FIRST_RETRY);
        let mut delay = FIRST_RETRY;
        let since = Instant::now();
        loop {
            if let Ok(session) = self.connect().await {
                if self.register(&session.client, Some(id), process).await.is_ok() {
                    log::info!(
                        "the session of this process (owner {id}) is back, after {:.1} s",
                        since.elapsed().as_secs_f64()
                    );
                    self.catch_up(&session.client).await;
                    return session;
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(longest);
        }
    }

    /// Cancels that went out while the session was away; and whatever
    /// was queued or finished meanwhile, for executors and waiters to look.
    async fn catch_up(&self, client: &Client) {
        self.events.more_work();
        let held = self.holds.root_ids();
        if held.is_empty() {
            return;
        }
        if let Ok(Ok(rows)) = timeout(self.connect_timeout, client.query(&self.sql.cancelled, &[&held])).await {
            for row in &rows {
                if let (Ok(id), Ok(root)) = (col::<i64>(row, "id"), col::<i64>(row, "root_id")) {
                    self.holds.cancelled_part(root, &[id]);
                }
            }
        }
    }

    /// Acts on a notification (see `lease::notifications`).
    fn dispatch(&self, payload: &str) {
        self.events.dispatch(payload, &self.holds);
    }
}

/// True while the owner of row `t` is alive: its row has not expired, and
/// its dedicated session still exists or has been gone for less than its
/// grace. A killed process's session is gone as soon as the server sees its
/// socket close; the grace (set from when anyone first saw it gone: a
/// heartbeat, a recovery pass, a claimant, see `checkpoint::start::HOLDER`)
/// lets a live process whose session merely dropped re-register first, and
/// is set back to over by a claimant on the owner's machine that proves its
/// process ended (`lease::gone`); the expiry covers hung processes and
/// partitions. An owner without grace (`session_grace` 0) is alive only
/// while its session exists, so the first claim after its crash takes over.
/// (`backend_start` is compared when visible, against pid reuse; other
/// users' sessions show it as NULL.)
pub(crate) const OWNER_ALIVE: &str = "EXISTS (
    SELECT 1 FROM {schema}.owner AS o
    WHERE o.id = t.owner_id AND o.expires_at > now()
      AND ((o.session_grace > interval '0'
            AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace))
           OR {connected}))";

/// True while the dedicated session of owner `o` exists.
pub(crate) const CONNECTED: &str = "EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start))";

/// Registers this process as an owner (`$1` NULL: a new id), or re-registers
/// it after its session was replaced, clearing any mark of the old session
/// being gone. Runs on the owner's dedicated session. `$2` host, `$3`
/// process id, `$4` lease seconds, `$5` grace seconds; `$6` boot id, `$7`
/// pid namespace, `$8` start time of the process (NULL where the kernel
/// cannot be asked; see `lease::process`).
pub(crate) const REGISTER: Sql = Sql::new(
    "
INSERT INTO {schema}.owner AS o (id, backend_pid, backend_start, host, pid, expires_at, session_grace,
                                 boot_id, pid_namespace, process_start)
SELECT coalesce($1::text::uuid, gen_random_uuid()), pg_backend_pid(),
       (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
       $2, $3, now() + make_interval(secs => $4::float8), make_interval(secs => $5::float8),
       $6::text, $7::text, $8::int8
ON CONFLICT (id) DO UPDATE SET
    backend_pid = EXCLUDED.backend_pid,
    backend_start = EXCLUDED.backend_start,
    expires_at = EXCLUDED.expires_at,
    session_grace = EXCLUDED.session_grace,
    session_lost_at = NULL,
    boot_id = EXCLUDED.boot_id,
    pid_namespace = EXCLUDED.pid_namespace,
    process_start = EXCLUDED.process_start
RETURNING id::text",
);

/// The heartbeat: extends every lease of the owner `$1` by `$2` seconds at
/// once (run on its own session, it also proves that session alive, so any
/// mark of it being gone is cleared). Also marks the other owners whose
/// session vanished (`lost`, `marked`), which starts their grace now, not
/// when a claimant comes to look; as `checkpoint::start::HOLDER` does, only
/// on the very session seen gone, so an owner that registered a new one
/// meanwhile keeps a clean row. Owners without grace need no mark. And
/// removes owners expired for a day, so the table stays small.
pub(crate) const HEARTBEAT: Sql = Sql::new(
    "
WITH renewed AS (
    UPDATE {schema}.owner SET expires_at = now() + make_interval(secs => $2::float8), session_lost_at = NULL
    WHERE id = $1::text::uuid AND backend_pid = pg_backend_pid()
    RETURNING id
), lost AS (
    SELECT o.id, o.backend_pid FROM {schema}.owner AS o
    WHERE o.id <> $1::text::uuid AND o.session_lost_at IS NULL AND o.session_grace > interval '0'
      AND o.expires_at > now() AND NOT {connected}
), marked AS (
    UPDATE {schema}.owner AS o SET session_lost_at = now()
    FROM lost
    WHERE o.id = lost.id AND o.backend_pid = lost.backend_pid AND o.session_lost_at IS NULL
), purged AS (
    DELETE FROM {schema}.owner WHERE expires_at < now() - interval '1 day'
)
SELECT count(*) AS renewed FROM renewed",
)
.with(&[("connected", CONNECTED)]);

/// Gives up every lease of owner `$1` at once (a clean shutdown).
pub(crate) const RELEASE: Sql = Sql::new("UPDATE {schema}.owner SET expires_at = now() WHERE id = $1::text::uuid");

/// The cancelled workflows of the trees of the roots `$1`: for a holder
/// that was away from its session when the notifications went out (their
/// handles stop; see `holds`).
pub(crate) const CANCELLED: Sql = Sql::new(
    "
SELECT id, root_id FROM {schema}.task WHERE root_id = ANY($1) AND kind = 'workflow' AND status = 'cancelled'",
);
