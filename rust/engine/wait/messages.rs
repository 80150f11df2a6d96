//! Messages to workflows (`send`, taken by `recv`) and the events workflows
//! publish (`set_event`, read by `get_event`).
//!
//! A message is received exactly once: the statement that takes the oldest
//! message of a topic also saves the receiving step, fenced on the holder's
//! lease, and marks the message received only if that step was written. A
//! replay finds the step and returns its saved message; a crash before the
//! commit leaves the message waiting. An event is written by the statement
//! that saves its `set_event` step, so a replay (which finds the step) never
//! writes an older value again.
//!
//! A message records who sent it (`sent_from`, `sent_by`): a send made again
//! by the same sender (a step run again after a crash between the send's
//! commit and its own, a statement sent again after a lost connection)
//! finds its own message and reports it sent; only another sender's use of
//! a key makes a send a duplicate.
//!
//! Waiters are woken by notifications (`<schema> message <id>`, `<schema>
//! event <id>`, see `lease::notifications`) and look again at least every second anyway,
//! as a notification sent while the session reconnected is lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::engine::connect::config::{show_path, validate_path};
use crate::engine::error::EngineError;
use crate::engine::read::tree::PATH;
use crate::engine::sql::Sql;
use crate::engine::values::jsonb::JsonText;
use crate::engine::wait::suspend::WAKE_ROOT;
use crate::engine::workflow::{WorkflowId, col, refusal};
use crate::engine::{Engine, validate_name};

/// Longest wait between two looks of a waiter (see the module's doc).
const POLL: Duration = Duration::from_secs(1);

/// After `tree::PATH`, the workflow at the path `$1`: `(SELECT id FROM target)`.
const TARGET: &str = ", target AS (
    SELECT id FROM path WHERE depth = cardinality($1::text[])
)";

/// Sends `$3` on topic `$2` to the workflow at path `$1`, once per key `$4`
/// when given, recording its sender (`$6`, `$7`: see `Sender`), and wakes
/// it (`$5` the schema): its waiters in their process by a notification;
/// its root by `waits::WAKE_ROOT` (suspended, it is due now; running, its
/// next suspension is refused, as a receiver may have looked just before
/// the message came), in the same statement as the message, so the
/// message and the wake commit together. `found`: whether the workflow
/// exists; `sent`: whether a message was added.
pub(crate) const SEND: Sql = Sql::new(
    "{path}{target}
, sent AS (
    INSERT INTO {schema}.task_message (task_id, topic, key, value, sent_from, sent_by)
    SELECT id, $2, $4, $3, $6, $7 FROM target
    ON CONFLICT (task_id, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING task_id
), root AS (
    SELECT w.root_id AS id FROM {schema}.task AS w JOIN sent ON w.id = sent.task_id
), {wake}
SELECT EXISTS (SELECT 1 FROM target) AS found, EXISTS (SELECT 1 FROM sent) AS sent,
       (SELECT left(pg_notify('durable', $5::text || ' message ' || task_id)::text, 0) FROM sent) AS notified,
       (SELECT left(pg_notify('durable', $5::text || ' queued ' || coalesce(queue, ''))::text, 0)
        FROM woken WHERE made_due) AS woken",
)
.with(&[("path", PATH), ("target", TARGET), ("wake", WAKE_ROOT)]);

/// Whether the message of key `$2` to the workflow at path `$1` was sent by
/// `$3`, `$4` (see `Sender`). A statement of its own, after `SEND` found the
/// key taken: `SEND`'s insert waited for the transaction that took it, so
/// this statement's snapshot sees that message even when it committed after
/// `SEND`'s began.
pub(crate) const OWN_MESSAGE: Sql = Sql::new(
    "{path}{target}
SELECT EXISTS (
    SELECT 1 FROM {schema}.task_message AS m JOIN target ON m.task_id = target.id
    WHERE m.key = $2 AND m.sent_from IS NOT DISTINCT FROM $3 AND m.sent_by = $4
) AS own",
)
.with(&[("path", PATH), ("target", TARGET)]);

/// The running workflow `$1` held by owner `$3` under epoch `$2`, share-locked
/// (as the writer's fence) for the statement.
pub(crate) const FENCE: &str = "
WITH fenced AS (
    SELECT w.id, w.root_id FROM {schema}.task AS w
    WHERE w.id = $1 AND w.owner_id = $3::text::uuid AND w.lease_epoch = $2 AND w.status = 'running'
    FOR SHARE OF w
)";

/// Saves step `$4` (attempt `$5`) of the fenced workflow as completed with
/// `{value}`; nothing if it completed already.
const SAVE_STEP: &str = "
    INSERT INTO {schema}.task AS t (parent_id, root_id, kind, name, status, attempt, output, started_at, completed_at)
    SELECT fenced.id, fenced.root_id, 'step', $4, 'completed', $5, {value}, now(), now()
    FROM {from}
    ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET
        status = 'completed', attempt = EXCLUDED.attempt, output = EXCLUDED.output, error = NULL,
        completed_at = now(), updated_at = now()
    WHERE t.kind = 'step' AND t.status <> 'completed'
    RETURNING t.id";

/// Takes the oldest waiting message of topic `$6` for the fenced workflow and
/// saves it as step `$4`; the message is marked received only if the step
/// was written. `fenced` 0: the lease was refused.
pub(crate) const TAKE: Sql = Sql::new(
    "{fence}, message AS (
             SELECT m.id, m.value FROM {schema}.task_message AS m, fenced
             WHERE m.task_id = fenced.id AND m.topic = $6 AND m.received_at IS NULL
             ORDER BY m.id
             LIMIT 1
             FOR UPDATE OF m SKIP LOCKED
         ), step AS ({save_step}
         ), received AS (
             UPDATE {schema}.task_message AS m SET received_at = now(), received_by = $4
             FROM message, step
             WHERE m.id = message.id
             RETURNING m.value
         )
         SELECT (SELECT count(*) FROM fenced) AS fenced, (SELECT value FROM received) AS value",
)
.with(&[
    ("fence", FENCE),
    ("save_step", SAVE_STEP),
    ("value", "message.value"),
    ("from", "fenced, message"),
]);

/// Saves step `$4` (attempt `$5`) with the value `$7` and publishes it as
/// the event `$6` of the fenced workflow, waking readers (`$8` the schema).
pub(crate) const SET_EVENT: Sql = Sql::new(
    "{fence}, step AS ({save_step}
         ), event AS (
             INSERT INTO {schema}.task_event (task_id, key, value)
             SELECT fenced.id, $6, $7 FROM fenced, step
             ON CONFLICT (task_id, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
             RETURNING task_id
         )
         SELECT (SELECT count(*) FROM fenced) AS fenced,
                (SELECT left(pg_notify('durable', $8::text || ' event ' || task_id)::text, 0) FROM event) AS notified",
)
.with(&[
    ("fence", FENCE),
    ("save_step", SAVE_STEP),
    ("value", "$7::jsonb"),
    ("from", "fenced"),
]);

/// The workflow at path `$1` and its event `$2`, if set.
pub(crate) const GET_EVENT: Sql = Sql::new(
    "{path}{target}
SELECT target.id, e.value FROM target
LEFT JOIN {schema}.task_event AS e ON e.task_id = target.id AND e.key = $2",
)
.with(&[("path", PATH), ("target", TARGET)]);

/// Who sends a message: the step `step` of the workflow `workflow_id`. A
/// send from outside any workflow has no `Sender`; the engine tells its
/// calls apart by a token of its own.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub workflow_id: i64,
    pub step: &'a str,
}

/// Numbers the sends made from outside any workflow, for their tokens.
#[derive(Debug, Default)]
pub(crate) struct SendCalls(AtomicU64);

/// What `send` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The message was added.
    Sent,
    /// Another sender sent a message with that key to the workflow before:
    /// nothing added.
    Duplicate,
    /// There is no workflow at that path.
    NoWorkflow,
}

/// What `get_event` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventRead {
    Value(JsonText),
    /// The timeout ran out before the event was set.
    NotYet,
    /// There is no workflow at that path.
    NoWorkflow,
}

impl Engine {
    /// Sends `value` on `topic` to the workflow at `path` (the root's name,
    /// then each child's), from `sender` (`None`: from outside any workflow).
    /// With a `key`, only the first send of that key to that workflow adds a
    /// message; the same sender sending it again gets `Sent` (its message
    /// is there), another sender `Duplicate`.
    pub async fn send(
        &self,
        path: &[String],
        topic: &str,
        value: &JsonText,
        key: Option<&str>,
        sender: Option<Sender<'_>>,
    ) -> Result<Sent, EngineError> {
        validate_path(path)?;
        validate_name("topic", topic)?;
        if let Some(key) = key {
            validate_name("message key", key)?;
        }
        self.check_open()?;
        let schema = self.schema();
        let sent_from = sender.map(|sender| sender.workflow_id);
        let sent_by = sender.map_or_else(
            || {
                let call = self.inner.send_calls.0.fetch_add(1, Ordering::Relaxed);
                format!("call {call} of {}", self.owner_id())
            },
            |sender| sender.step.to_owned(),
        );
        let context = format!("sending a message to workflow {}", show_path(path));
        let row = retrying!(self, &context, |client| async {
            let statement = client.prepare_cached(&self.inner.sql.send).await?;
            client
                .query_one(&statement, &[&path, &topic, value, &key, &schema, &sent_from, &sent_by])
                .await
        })?;
        if !col::<bool>(&row, "found")? {
            return Ok(Sent::NoWorkflow);
        }
        if col::<bool>(&row, "sent")? {
            return Ok(Sent::Sent);
        }
        let own = retrying!(self, &context, |client| async {
            let statement = client.prepare_cached(&self.inner.sql.own_message).await?;
            client.query_one(&statement, &[&path, &key, &sent_from, &sent_by]).await
        })?;
        Ok(if col::<bool>(&own, "own")? {
            Sent::Sent
        } else {
            Sent::Duplicate
        })
    }

    /// Takes the oldest message on `topic` for the running `workflow`, saved
    /// as its step `name` (attempt `attempt`) in the same statement; `None`
    /// when none waits. `LeaseLost`/`Cancelled` when the lease is refused.
    pub async fn take_message(
        &self,
        workflow: WorkflowId,
        name: &str,
        attempt: i32,
        topic: &str,
    ) -> Result<Option<JsonText>, EngineError> {
        self.check_open()?;
        let owner = self.owner_id();
        let row = retrying!(self, &format!("receiving a message on {topic:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.take_message).await?;
            client
                .query_one(
                    &statement,
                    &[&workflow.id, &workflow.epoch, &owner, &name, &attempt, &topic],
                )
                .await
        })?;
        if col::<i64>(&row, "fenced")? == 0 {
            return Err(self
                .refused(workflow, &format!("receiving a message on {topic:?}"))
                .await);
        }
        col(&row, "value")
    }

    /// A receiver of the ids of workflows sent a message from now on.
    pub fn messages_posted(&self) -> broadcast::Receiver<i64> {
        self.inner.events.messages()
    }

    /// Waits until `posted` names the workflow `id` (a message for it may
    /// have arrived), or at most `wait` (capped: a notification may be lost).
    pub async fn message_posted(&self, posted: &mut broadcast::Receiver<i64>, id: i64, wait: Duration) {
        wait_for(posted, id, wait.min(POLL)).await;
    }

    /// Publishes `value` as the event `key` of the running `workflow`, saved
    /// as its step `name` in the same statement.
    pub async fn set_event(
        &self,
        workflow: WorkflowId,
        name: &str,
        attempt: i32,
        key: &str,
        value: &JsonText,
    ) -> Result<(), EngineError> {
        validate_name("event key", key)?;
        self.check_open()?;
        let owner = self.owner_id();
        let schema = self.schema();
        let row = retrying!(self, &format!("setting event {key:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.set_event).await?;
            client
                .query_one(
                    &statement,
                    &[
                        &workflow.id,
                        &workflow.epoch,
                        &owner,
                        &name,
                        &attempt,
                        &key,
                        value,
                        &schema,
                    ],
                )
                .await
        })?;
        if col::<i64>(&row, "fenced")? == 0 {
            return Err(self.refused(workflow, &format!("setting event {key:?}")).await);
        }
        Ok(())
    }

    /// The latest value of the event `key` of the workflow at `path`,
    /// waiting up to `timeout` for one to be set.
    pub async fn get_event(&self, path: &[String], key: &str, timeout: Duration) -> Result<EventRead, EngineError> {
        validate_path(path)?;
        validate_name("event key", key)?;
        self.check_open()?;
        let until = Instant::now() + timeout;
        let mut set = self.inner.events.events();
        loop {
            let row = retrying!(
                self,
                &format!("reading event {key:?} of workflow {}", show_path(path)),
                |client| async {
                    let statement = client.prepare_cached(&self.inner.sql.get_event).await?;
                    client.query_opt(&statement, &[&path, &key]).await
                }
            )?;
            let Some(row) = row else {
                return Ok(EventRead::NoWorkflow);
            };
            if let Some(value) = col::<Option<JsonText>>(&row, "value")? {
                return Ok(EventRead::Value(value));
            }
            let id: i64 = col(&row, "id")?;
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(EventRead::NotYet);
            }
            wait_for(&mut set, id, left.min(POLL)).await;
        }
    }

    /// Why the lease of `workflow` was refused, as the error to raise.
    pub(super) async fn refused(&self, workflow: WorkflowId, what: &str) -> EngineError {
        let owner = self.owner_id();
        let ids = [workflow.id];
        let rows = retrying!(self, what, |client| async {
            let statement = client.prepare_cached(&self.inner.sql.diagnose).await?;
            client.query(&statement, &[&&ids[..], &owner]).await
        });
        let reason = match rows {
            Ok(rows) => match rows.first() {
                Some(row) => refusal(row, workflow.epoch, what).map(|(_, reason)| reason),
                None => Ok(None),
            },
            Err(err) => Err(err),
        };
        match reason {
            Ok(Some(reason)) => reason,
            Ok(None) => EngineError::LeaseLost {
                workflow_id: workflow.id,
            },
            Err(err) => err,
        }
    }
}

/// Waits until `receiver` names `id`, or `wait` ran out.
async fn wait_for(receiver: &mut broadcast::Receiver<i64>, id: i64, wait: Duration) {
    let named = async {
        loop {
            match receiver.recv().await {
                Ok(posted) if posted == id => return,
                // Fell behind: the caller looks again anyway.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(wait, named).await;
}
