//! Starting (or resuming) a workflow: a root, through the starter's group
//! commit, or a child, under its parent's lease; taking over a root whose
//! holder is gone; reading the history a resumed workflow replays.

use std::time::Duration;

use crate::engine::lease::owner::{CONNECTED, OWNER_ALIVE};
use crate::engine::sql::Sql;
use crate::engine::workflow::{self, Access};
use crate::engine::{Engine, EngineError, JsonText, Parent, Started, Status, WorkflowId, validate_name};

/// How often a start that found its root busy looks again (after waiting
/// out the grace of an owner whose session is gone) before it reports it
/// busy: the owner kept coming back, or kept changing.
const MAX_BUSY_TRIES: u32 = 5;

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
    /// that owner's grace, then taken over unless the owner came back; at
    /// once if the owner ran on this machine and its process has ended.
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

    /// Who holds the busy root `name`, marking its session gone if it is;
    /// free at once if its process is proven ended (`lease::gone`).
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
        if left > 0.0 && self.holder_gone(&row).await? {
            return Ok(Holder::Free);
        }
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

// Inputs are compared as jsonb text, not with jsonb's `=`: that one calls
// 1 and 1.0 equal, yet the workflow function would see an int on one run
// and a float on another.

/// What the start of an existing workflow row changes (`$3` the owner, and
/// `EXCLUDED` the row the start would have inserted). `{claim}` says whether
/// this start takes the workflow: then it becomes `running` under the new
/// owner with the next lease epoch (fencing out the previous holder) and the
/// next attempt. Otherwise nothing changes: a completed workflow replays, a
/// busy or cancelled one and a different input are reported by the caller.
const TAKE: &str = "DO UPDATE SET (status, attempt, error, owner_id, lease_epoch, workflow, started_at, updated_at,
                      waiting, waiting_on) = (
        SELECT CASE WHEN c.claim THEN 'running' ELSE t.status END,
               CASE WHEN NOT c.claim THEN t.attempt WHEN t.lease_epoch = 0 THEN 1 ELSE t.attempt + 1 END,
               CASE WHEN c.claim THEN NULL ELSE t.error END,
               CASE WHEN c.claim THEN $3::text::uuid ELSE t.owner_id END,
               CASE WHEN c.claim THEN t.lease_epoch + 1 ELSE t.lease_epoch END,
               CASE WHEN c.claim THEN coalesce(t.workflow, EXCLUDED.workflow) ELSE t.workflow END,
               CASE WHEN c.claim THEN coalesce(t.started_at, now()) ELSE t.started_at END,
               now(),
               -- A suspended root taken by a direct run waits no more.
               CASE WHEN c.claim THEN NULL ELSE t.waiting END,
               CASE WHEN c.claim THEN NULL ELSE t.waiting_on END
        FROM (SELECT {claim} AS claim) AS c)";

/// What a start statement returns of the row it created or found (read by
/// `workflow::read_started`), `$3` being the owner; each statement adds
/// `input_matches`, comparing the saved input with its own.
const STARTED: &str = "t.id, t.root_id, t.kind, t.status, t.attempt, t.output, t.error, t.lease_epoch, t.workflow,
              (t.owner_id IS NOT DISTINCT FROM $3::text::uuid) AS owned,
              (t.xmax = 0) AS created,
              extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in";

/// A root may be taken when it is interrupted, failed or waiting in a queue
/// (a direct run takes it out of the queue), has the same input and, if
/// both name one, the same function, and no live holder has it: nobody
/// (released, or queued), this owner (a handle of this process that ended
/// without releasing it in the database; the engine keeps two live handles
/// of one process apart itself), or a dead owner.
const ROOT_CLAIM: &str = "t.kind = 'workflow' AND t.status IN ('running', 'failed', 'queued', 'scheduled')
    AND t.input::text IS NOT DISTINCT FROM EXCLUDED.input::text
    AND (t.workflow IS NULL OR EXCLUDED.workflow IS NULL OR t.workflow = EXCLUDED.workflow)
    AND (t.status = 'failed' OR t.owner_id IS NULL OR t.owner_id = $3::text::uuid OR NOT {alive})";

/// A child is started only by whoever holds its parent (fenced below), so
/// it may always be taken when interrupted or failed.
const CHILD_CLAIM: &str = "t.kind = 'workflow' AND t.status IN ('running', 'failed')
    AND t.input::text IS NOT DISTINCT FROM EXCLUDED.input::text";

/// One root (see `starter.rs`): $1 name, $2 input, $3 owner, $4
/// deadline (seconds from now, or NULL), $5 the registered function
/// (NULL: started by hand).
pub(crate) const START_ROOT: Sql = Sql::new(
    "INSERT INTO {schema}.task AS t (id, parent_id, root_id, kind, name, status, input, started_at,
                                         owner_id, lease_epoch, deadline_at, workflow)
             SELECT n.id, NULL, n.id, 'workflow', $1, 'running', $2::jsonb, now(), $3::text::uuid, 1,
                    now() + make_interval(secs => $4::float8), $5
             FROM (SELECT nextval('{schema}.task_id_seq') AS id) AS n
             ON CONFLICT (name) WHERE parent_id IS NULL {take}
             RETURNING {started}, t.name, (t.input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches",
)
.with(&[
    ("take", TAKE),
    ("claim", ROOT_CLAIM),
    ("alive", OWNER_ALIVE),
    ("connected", CONNECTED),
    ("started", STARTED),
]);

/// Many roots at once, one row per element of the arrays: $1 names
/// (distinct, sorted, so that two processes lock rows in one order),
/// $2 inputs, $4 deadlines, $5 the registered functions; $3 the
/// owner. One row back per name. The inputs are compared in a join:
/// the upsert's RETURNING sees only the table's row.
pub(crate) const START_ROOTS: Sql = Sql::new(
    "WITH r AS (
                 SELECT * FROM unnest($1::text[], $2::jsonb[], $4::float8[], $5::text[])
                     AS r(name, input, deadline, workflow)
             ), started AS (
                 INSERT INTO {schema}.task AS t (id, parent_id, root_id, kind, name, status, input, started_at,
                                             owner_id, lease_epoch, deadline_at, workflow)
                 SELECT n.id, NULL, n.id, 'workflow', n.name, 'running', n.input, now(), $3::text::uuid, 1,
                        now() + make_interval(secs => n.deadline), n.workflow
                 -- A subquery with a volatile output is not flattened: one id per row, for id and root_id.
                 FROM (SELECT nextval('{schema}.task_id_seq') AS id, r.* FROM r) AS n
                 ON CONFLICT (name) WHERE parent_id IS NULL {take}
                 RETURNING {started}, t.name, t.input::text AS saved_input
             )
             SELECT s.*, (s.saved_input IS NOT DISTINCT FROM r.input::text) AS input_matches
             FROM started AS s JOIN r ON r.name = s.name",
)
.with(&[
    ("take", TAKE),
    ("claim", ROOT_CLAIM),
    ("alive", OWNER_ALIVE),
    ("connected", CONNECTED),
    ("started", STARTED),
]);

/// $1 name, $2 input, $3 owner, $4 parent id, $5 parent epoch. The
/// parent's lease is checked and share-locked in the same statement:
/// a parent taken over meanwhile yields no row.
pub(crate) const START_CHILD: Sql = Sql::new(
    "WITH parent AS (
                 SELECT p.id, p.root_id, p.deadline_at FROM {schema}.task AS p
                 WHERE p.id = $4 AND p.owner_id = $3::text::uuid AND p.lease_epoch = $5 AND p.status = 'running'
                 FOR SHARE
             )
             INSERT INTO {schema}.task AS t (id, parent_id, root_id, kind, name, status, input, started_at,
                                         owner_id, lease_epoch, deadline_at)
             SELECT nextval('{schema}.task_id_seq'), parent.id, parent.root_id, 'workflow', $1, 'running',
                    $2::jsonb, now(), $3::text::uuid, 1, parent.deadline_at
             FROM parent
             ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL {take}
             RETURNING {started}, (t.input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches",
)
.with(&[("take", TAKE), ("claim", CHILD_CLAIM), ("started", STARTED)]);

/// Who holds the running root `$1` that a start found busy, as seen now:
/// whether its session is connected, whether its row expired, how many
/// seconds of its grace are left, and which process it is (for
/// `lease::gone`). The first to find the session gone records when
/// (`session_lost_at`), so the grace runs from then; the mark is only set
/// on the very session seen gone (`backend_pid`), so an owner that
/// re-registered meanwhile keeps a clean row. No row: nobody live holds it
/// any more (released, finished, or its owner row is gone).
pub(crate) const HOLDER: Sql = Sql::new(
    "
WITH h AS (
    SELECT o.id, o.backend_pid, o.session_lost_at, o.session_grace,
           o.boot_id, o.pid_namespace, o.pid, o.process_start,
           o.expires_at <= now() AS expired, {connected} AS connected
    FROM {schema}.task AS t JOIN {schema}.owner AS o ON o.id = t.owner_id
    WHERE t.parent_id IS NULL AND t.name = $1 AND t.status = 'running' AND t.owner_id <> $2::text::uuid
), marked AS (
    UPDATE {schema}.owner AS o SET session_lost_at = now()
    FROM h
    WHERE o.id = h.id AND o.backend_pid = h.backend_pid AND o.session_lost_at IS NULL
      AND NOT h.connected AND NOT h.expired
    RETURNING o.session_lost_at
)
SELECT h.connected, h.expired,
       extract(epoch FROM coalesce((SELECT session_lost_at FROM marked), h.session_lost_at)
                          + h.session_grace - now())::float8 AS grace_left,
       h.id::text AS owner_id, h.backend_pid, h.boot_id, h.pid_namespace, h.pid, h.process_start
FROM h",
)
.with(&[("connected", CONNECTED)]);

/// A child of a finished parent, read as it is, to replay: nothing is taken.
/// Same columns as the start statements. `$1` name, `$2` input, `$3` parent.
pub(crate) const REPLAY_CHILD: Sql = Sql::new(
    "
SELECT t.id, t.root_id, t.kind, t.status, t.attempt, t.output, t.error, t.lease_epoch, t.workflow,
       false AS owned, false AS created,
       (t.input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches,
       extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in
FROM {schema}.task AS t
WHERE t.parent_id = $3 AND t.name = $1",
);

/// Whether the root `$1` has the input `$2` (for a start refused before its
/// claim: a different input is the error to report, not a busy holder).
pub(crate) const ROOT_INPUT: Sql = Sql::new(
    "
SELECT (input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches
FROM {schema}.task WHERE parent_id IS NULL AND name = $1",
);

/// Everything a workflow's previous runs recorded under it, in one query.
/// Outputs are sent for completed steps only. Run after the start statement
/// committed, so it sees every write of a previous holder that got in first.
pub(crate) const HISTORY: Sql = Sql::new(
    "
SELECT name, kind, status, attempt,
       CASE WHEN kind = 'step' AND status = 'completed' THEN output END AS output,
       error ->> 'type' AS error_type
FROM {schema}.task
WHERE parent_id = $1",
);
