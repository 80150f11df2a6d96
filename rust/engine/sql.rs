//! Every statement of the engine, written once with the schema spliced in.
//!
//! The schema name is validated by `config::validate_schema` (a plain
//! lowercase identifier) and spliced in quoted; every value is a parameter.

use super::admin::cancel::CancelStatements;
use super::admin::fork as fork_run;
use super::admin::gc::GC;
use super::connect::config::quote;
use super::queue::recovery::RECOVERY_PASS;
use super::queue::schedule::ScheduleStatements;
use super::queue::{BUSY, QueueStatements};
use super::read::queues::LIST_QUEUES;
use super::read::runs::InfoStatements;
use super::read::runs::READY;
use super::read::tree::tree_statement;
use super::read::ui::BrowseStatements;
use super::wait::messages::MessageStatements;
use super::wait::results::RUN_STATE;
use super::wait::suspend::WaitStatements;

/// Statement texts for one schema.
#[derive(Debug)]
pub(crate) struct Statements {
    pub start_root: String,
    pub start_roots: String,
    pub start_child: String,
    pub replay_child: String,
    pub holder: String,
    pub root_input: String,
    pub history: String,
    pub flush: String,
    pub diagnose: String,
    pub release: String,
    pub cancel: CancelStatements,
    pub cancelled: String,
    pub owner_register: String,
    pub owner_heartbeat: String,
    pub owner_release: String,
    pub run_state: String,
    pub queue: QueueStatements,
    pub recovery_pass: String,
    pub schedule: ScheduleStatements,
    pub info: InfoStatements,
    pub browse: BrowseStatements,
    pub waits: WaitStatements,
    pub tree: String,
    pub list_queues: String,
    pub gc: String,
    pub messages: MessageStatements,
    pub fork: String,
}

/// The channel of every notification durable sends (`LISTEN durable`). The
/// payload names the schema first, so engines of other schemas ignore it.
pub(crate) const CHANNEL: &str = "durable";

/// True while the owner of row `t` is alive: its row has not expired, and
/// its dedicated session still exists or has been gone for less than its
/// grace. A killed process's session is gone as soon as the server sees its
/// socket close; the grace (set from when a claimant first saw it gone, see
/// `HOLDER`) lets a live process whose session merely dropped re-register
/// first; the expiry covers hung processes and partitions. An owner without
/// grace (`session_grace` 0) is alive only while its session exists, so the
/// first claim after its crash takes over. (`backend_start`
/// is compared when visible, against pid reuse; other users' sessions show
/// it as NULL.)
const OWNER_ALIVE: &str = "EXISTS (
    SELECT 1 FROM {s}.owner AS o
    WHERE o.id = t.owner_id AND o.expires_at > now()
      AND ((o.session_grace > interval '0'
            AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace))
           OR {connected}))";

/// True while the dedicated session of owner `o` exists.
const CONNECTED: &str = "EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start))";

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

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let alive = OWNER_ALIVE.replace("{connected}", CONNECTED);
        let take_root = TAKE.replace("{claim}", &ROOT_CLAIM.replace("{alive}", &alive));
        let take_child = TAKE.replace("{claim}", CHILD_CLAIM);
        // One root (see `starter.rs`): $1 name, $2 input, $3 owner, $4
        // deadline (seconds from now, or NULL), $5 the registered function
        // (NULL: started by hand).
        let start_root = format!(
            "INSERT INTO {{s}}.task AS t (id, parent_id, root_id, kind, name, status, input, started_at,
                                         owner_id, lease_epoch, deadline_at, workflow)
             SELECT n.id, NULL, n.id, 'workflow', $1, 'running', $2::jsonb, now(), $3::text::uuid, 1,
                    now() + make_interval(secs => $4::float8), $5
             FROM (SELECT nextval('{{s}}.task_id_seq') AS id) AS n
             ON CONFLICT (name) WHERE parent_id IS NULL {take_root}
             RETURNING {STARTED}, t.name, (t.input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches"
        );
        // Many roots at once, one row per element of the arrays: $1 names
        // (distinct, sorted, so that two processes lock rows in one order),
        // $2 inputs, $4 deadlines, $5 the registered functions; $3 the
        // owner. One row back per name. The inputs are compared in a join:
        // the upsert's RETURNING sees only the table's row.
        let start_roots = format!(
            "WITH r AS (
                 SELECT * FROM unnest($1::text[], $2::jsonb[], $4::float8[], $5::text[])
                     AS r(name, input, deadline, workflow)
             ), started AS (
                 INSERT INTO {{s}}.task AS t (id, parent_id, root_id, kind, name, status, input, started_at,
                                             owner_id, lease_epoch, deadline_at, workflow)
                 SELECT n.id, NULL, n.id, 'workflow', n.name, 'running', n.input, now(), $3::text::uuid, 1,
                        now() + make_interval(secs => n.deadline), n.workflow
                 -- A subquery with a volatile output is not flattened: one id per row, for id and root_id.
                 FROM (SELECT nextval('{{s}}.task_id_seq') AS id, r.* FROM r) AS n
                 ON CONFLICT (name) WHERE parent_id IS NULL {take_root}
                 RETURNING {STARTED}, t.name, t.input::text AS saved_input
             )
             SELECT s.*, (s.saved_input IS NOT DISTINCT FROM r.input::text) AS input_matches
             FROM started AS s JOIN r ON r.name = s.name"
        );
        // $1 name, $2 input, $3 owner, $4 parent id, $5 parent epoch. The
        // parent's lease is checked and share-locked in the same statement:
        // a parent taken over meanwhile yields no row.
        let start_child = format!(
            "WITH parent AS (
                 SELECT p.id, p.root_id, p.deadline_at FROM {{s}}.task AS p
                 WHERE p.id = $4 AND p.owner_id = $3::text::uuid AND p.lease_epoch = $5 AND p.status = 'running'
                 FOR SHARE
             )
             INSERT INTO {{s}}.task AS t (id, parent_id, root_id, kind, name, status, input, started_at,
                                         owner_id, lease_epoch, deadline_at)
             SELECT nextval('{{s}}.task_id_seq'), parent.id, parent.root_id, 'workflow', $1, 'running',
                    $2::jsonb, now(), $3::text::uuid, 1, parent.deadline_at
             FROM parent
             ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL {take_child}
             RETURNING {STARTED}, (t.input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches"
        );
        let quoted = quote(schema);
        let busy_r = BUSY.replace("t.", "r.");
        let fill = |sql: &str| {
            sql.replace("{s}", &quoted)
                .replace("{connected}", CONNECTED)
                .replace("{busy_r}", &busy_r)
                .replace("{ready}", READY)
        };
        Statements {
            start_root: fill(&start_root),
            start_roots: fill(&start_roots),
            start_child: fill(&start_child),
            replay_child: fill(REPLAY_CHILD),
            holder: fill(HOLDER),
            root_input: fill(ROOT_INPUT),
            history: fill(HISTORY),
            flush: fill(FLUSH),
            diagnose: fill(DIAGNOSE),
            release: fill(RELEASE),
            cancel: CancelStatements::new(fill),
            cancelled: fill(CANCELLED),
            owner_register: fill(OWNER_REGISTER),
            owner_heartbeat: fill(OWNER_HEARTBEAT),
            owner_release: fill(OWNER_RELEASE),
            run_state: fill(RUN_STATE),
            queue: QueueStatements::new(fill),
            recovery_pass: fill(RECOVERY_PASS),
            schedule: ScheduleStatements::new(fill),
            info: InfoStatements::new(fill),
            browse: BrowseStatements::new(fill),
            messages: MessageStatements::new(fill),
            fork: fork_run::statement(fill),
            waits: WaitStatements::new(fill),
            tree: fill(&tree_statement()),
            list_queues: fill(LIST_QUEUES),
            gc: fill(GC),
        }
    }
}

/// Who holds the running root `$1` that a start found busy, as seen now:
/// whether its session is connected, whether its row expired, and how many
/// seconds of its grace are left. The first claimant to find the session
/// gone records when (`session_lost_at`), so the grace runs from then; the
/// mark is only set on the very session seen gone (`backend_pid`), so an
/// owner that re-registered meanwhile keeps a clean row. No row: nobody
/// live holds it any more (released, finished, or its owner row is gone).
const HOLDER: &str = "
WITH h AS (
    SELECT o.id, o.backend_pid, o.session_lost_at, o.session_grace,
           o.expires_at <= now() AS expired, {connected} AS connected
    FROM {s}.task AS t JOIN {s}.owner AS o ON o.id = t.owner_id
    WHERE t.parent_id IS NULL AND t.name = $1 AND t.status = 'running' AND t.owner_id <> $2::text::uuid
), marked AS (
    UPDATE {s}.owner AS o SET session_lost_at = now()
    FROM h
    WHERE o.id = h.id AND o.backend_pid = h.backend_pid AND o.session_lost_at IS NULL
      AND NOT h.connected AND NOT h.expired
    RETURNING o.session_lost_at
)
SELECT h.connected, h.expired,
       extract(epoch FROM coalesce((SELECT session_lost_at FROM marked), h.session_lost_at)
                          + h.session_grace - now())::float8 AS grace_left
FROM h";

/// A child of a finished parent, read as it is, to replay: nothing is taken.
/// Same columns as the start statements. `$1` name, `$2` input, `$3` parent.
const REPLAY_CHILD: &str = "
SELECT t.id, t.root_id, t.kind, t.status, t.attempt, t.output, t.error, t.lease_epoch, t.workflow,
       false AS owned, false AS created,
       (t.input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches,
       extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in
FROM {s}.task AS t
WHERE t.parent_id = $3 AND t.name = $1";

/// Whether the root `$1` has the input `$2` (for a start refused before its
/// claim: a different input is the error to report, not a busy holder).
const ROOT_INPUT: &str = "
SELECT (input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches
FROM {s}.task WHERE parent_id IS NULL AND name = $1";

/// Everything a workflow's previous runs recorded under it, in one query.
/// Outputs are sent for completed steps only. Run after the start statement
/// committed, so it sees every write of a previous holder that got in first.
const HISTORY: &str = "
SELECT name, kind, status, attempt,
       CASE WHEN kind = 'step' AND status = 'completed' THEN output END AS output,
       error ->> 'type' AS error_type
FROM {s}.task
WHERE parent_id = $1";

/// One group commit: every queued step record and workflow result in one
/// statement, hence one transaction and one WAL flush.
///
/// * `$1..$8` step rows (parent, root, name, status, attempt, output, error,
///   parent's lease epoch). A row is written only if its workflow is still
///   running under this owner and epoch (the fence); the workflow row is
///   share-locked until commit, so a takeover waits for this write or this
///   write sees the takeover. A `running` row (the marker written before a
///   step's body runs) never overwrites a finished row of the same or a later
///   attempt, so markers and results commute.
/// * `$9..$13` workflow results (id, status, output, error, epoch), fenced the
///   same way. Writing the same status again under the same epoch succeeds,
///   so a batch retried after a lost connection is idempotent.
/// * A root that finishes is announced (`<schema> done <id>`, `$16` the
///   schema) to executors and to whoever waits for its result.
/// * `$14` the owner. `$15` the `synchronous_commit` setting for this
///   transaction: `off` when the batch holds only markers nobody waits for.
///   Such a marker costs no fsync of its own; it becomes durable with the next
///   synchronous commit (WAL is flushed in order), and losing it in a crash
///   only loses the knowledge that a step had started, which a re-run
///   tolerates by design.
///
/// Returns one row per applied record: ('s', parent, name) or ('w', id, NULL).
const FLUSH: &str = "
WITH durability AS (
    SELECT set_config('synchronous_commit', $15, true)
), fenced AS (
    SELECT r.* FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::int4[],
                           $6::jsonb[], $7::jsonb[], $8::int8[])
                    AS r(parent_id, root_id, name, status, attempt, output, error, epoch)
    JOIN {s}.task AS w ON w.id = r.parent_id
    WHERE w.owner_id = $14::text::uuid AND w.lease_epoch = r.epoch AND w.status = 'running'
    FOR SHARE OF w
), steps AS (
    INSERT INTO {s}.task AS t (parent_id, root_id, kind, name, status, attempt, output, error,
                               started_at, completed_at)
    SELECT r.parent_id, r.root_id, 'step', r.name, r.status, r.attempt, r.output, r.error,
           now(), CASE WHEN r.status <> 'running' THEN now() END
    FROM fenced AS r, durability
    ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET
        status = EXCLUDED.status,
        attempt = EXCLUDED.attempt,
        output = EXCLUDED.output,
        error = CASE WHEN EXCLUDED.status = 'running' THEN t.error ELSE EXCLUDED.error END,
        -- A new attempt starts now, even when its marker was merged into its outcome.
        started_at = CASE WHEN EXCLUDED.status = 'running' OR t.attempt < EXCLUDED.attempt
                          THEN now() ELSE t.started_at END,
        completed_at = EXCLUDED.completed_at,
        updated_at = now()
    WHERE t.kind = 'step'
      AND (EXCLUDED.status <> 'running' OR t.attempt < EXCLUDED.attempt)
    RETURNING t.parent_id, t.name
), workflows AS (
    UPDATE {s}.task AS t
    SET status = w.status, output = w.output, error = w.error,
        completed_at = now(), updated_at = now()
    FROM unnest($9::bigint[], $10::text[], $11::jsonb[], $12::jsonb[], $13::int8[])
             AS w(id, status, output, error, epoch),
         durability
    WHERE t.id = w.id AND t.kind = 'workflow'
      AND t.owner_id = $14::text::uuid AND t.lease_epoch = w.epoch
      AND (t.status = 'running' OR t.status = w.status)
    RETURNING t.id, t.parent_id IS NULL AS is_root
)
SELECT 's' AS kind, parent_id AS id, name FROM steps
UNION ALL
SELECT 'w', id, CASE WHEN is_root THEN left(pg_notify('durable', $16::text || ' done ' || id)::text, 0) END
FROM workflows";

/// Why writes to these workflows were refused: their status and holder.
const DIAGNOSE: &str = "
SELECT id, status, (owner_id IS NOT DISTINCT FROM $2::text::uuid) AS ours, lease_epoch
FROM {s}.task
WHERE id = ANY($1)";

/// Gives up the root `$1` that this owner `$2` holds under epoch `$3`, and
/// every workflow of its tree this owner holds, so that anyone may take the
/// tree over at once. A running root with a registered function goes back
/// to waiting (`queued`), for an executor that knows it. A cancelled root
/// (its holder stopped its body) stops counting in its queue. A no-op once
/// the root was taken again (a later epoch), so a late release never undoes
/// a newer claim. Wakes the executors (`$4` the schema).
const RELEASE: &str = "
WITH root AS (
    SELECT id, workflow, queue, status FROM {s}.task
    WHERE id = $1 AND owner_id = $2::text::uuid AND lease_epoch = $3 AND status IN ('running', 'cancelled')
    FOR UPDATE
), released AS (
    UPDATE {s}.task AS t SET owner_id = NULL, updated_at = now(),
        status = CASE WHEN t.id = root.id AND root.status = 'running' AND root.workflow IS NOT NULL
                      THEN 'queued' ELSE t.status END,
        run_at = CASE WHEN t.id = root.id AND root.status = 'running' AND root.workflow IS NOT NULL
                      THEN now() ELSE t.run_at END,
        waiting = NULL, waiting_on = NULL
    FROM root
    WHERE t.root_id = root.id AND t.kind = 'workflow' AND t.status IN ('running', 'cancelled')
      AND t.owner_id = $2::text::uuid
    RETURNING t.id
)
SELECT count(*) AS released,
       (SELECT left(pg_notify('durable', $4::text || ' queued ' || coalesce(queue, ''))::text, 0)
        FROM root WHERE workflow IS NOT NULL) AS notify
FROM released";

/// The cancelled workflows of the trees of the roots `$1`: for a holder
/// that was away from its session when the notifications went out (their
/// handles stop; see `holds`).
const CANCELLED: &str = "
SELECT id, root_id FROM {s}.task WHERE root_id = ANY($1) AND kind = 'workflow' AND status = 'cancelled'";

/// Registers this process as an owner (`$1` NULL: a new id), or re-registers
/// it after its session was replaced, clearing any mark of the old session
/// being gone. Runs on the owner's dedicated session. `$2` host, `$3`
/// process id, `$4` lease seconds, `$5` grace seconds.
const OWNER_REGISTER: &str = "
INSERT INTO {s}.owner AS o (id, backend_pid, backend_start, host, pid, expires_at, session_grace)
SELECT coalesce($1::text::uuid, gen_random_uuid()), pg_backend_pid(),
       (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
       $2, $3, now() + make_interval(secs => $4::float8), make_interval(secs => $5::float8)
ON CONFLICT (id) DO UPDATE SET
    backend_pid = EXCLUDED.backend_pid,
    backend_start = EXCLUDED.backend_start,
    expires_at = EXCLUDED.expires_at,
    session_grace = EXCLUDED.session_grace,
    session_lost_at = NULL
RETURNING id::text";

/// The heartbeat: extends every lease of the owner `$1` by `$2` seconds at
/// once (run on its own session, it also proves that session alive, so any
/// mark of it being gone is cleared). Also removes owners expired for a
/// day, so the table stays small.
const OWNER_HEARTBEAT: &str = "
WITH renewed AS (
    UPDATE {s}.owner SET expires_at = now() + make_interval(secs => $2::float8), session_lost_at = NULL
    WHERE id = $1::text::uuid AND backend_pid = pg_backend_pid()
    RETURNING id
), purged AS (
    DELETE FROM {s}.owner WHERE expires_at < now() - interval '1 day'
)
SELECT count(*) AS renewed FROM renewed";

/// Gives up every lease of owner `$1` at once (a clean shutdown).
const OWNER_RELEASE: &str = "UPDATE {s}.owner SET expires_at = now() WHERE id = $1::text::uuid";
