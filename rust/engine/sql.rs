//! Every statement of the hot path, written once with the schema spliced in.
//!
//! The schema name is validated by `config::validate_schema` (a plain
//! lowercase identifier), so splicing it is safe; every value is a parameter.

/// Statement texts for one schema.
#[derive(Debug)]
pub(crate) struct Statements {
    pub start_root: String,
    pub start_child: String,
    pub flush: String,
}

/// The history columns appended to a started workflow's row: every direct
/// child (steps and child workflows) in one aggregate, so a resume costs one
/// round trip whatever its length. Outputs are sent for completed steps only.
const HISTORY: &str = "
SELECT u.*, h.names, h.kinds, h.statuses, h.attempts, h.outputs
FROM upsert AS u
LEFT JOIN LATERAL (
    SELECT array_agg(c.name) AS names,
           array_agg(c.kind) AS kinds,
           array_agg(c.status) AS statuses,
           array_agg(c.attempt) AS attempts,
           array_agg(CASE WHEN c.kind = 'step' AND c.status = 'completed' THEN c.output END) AS outputs
    FROM {s}.task AS c
    WHERE c.parent_id = u.id
) AS h ON true";

/// What happens to an existing workflow row when it is started again:
/// an interrupted (`running`) or `failed` run resumes as a new attempt;
/// `completed` stays as it is (it replays); a different input changes nothing.
const RESUME: &str = "
    status = CASE WHEN t.kind = 'workflow' AND t.status IN ('running', 'failed')
                   AND t.input IS NOT DISTINCT FROM EXCLUDED.input
                  THEN 'running' ELSE t.status END,
    attempt = CASE WHEN t.kind = 'workflow' AND t.status IN ('running', 'failed')
                    AND t.input IS NOT DISTINCT FROM EXCLUDED.input
                   THEN t.attempt + 1 ELSE t.attempt END,
    error = CASE WHEN t.kind = 'workflow' AND t.status = 'failed'
                  AND t.input IS NOT DISTINCT FROM EXCLUDED.input
                 THEN NULL ELSE t.error END,
    updated_at = now()
RETURNING t.id, t.root_id, t.kind, t.status, t.attempt, t.output, t.error,
          (t.xmax = 0) AS created,
          (t.input IS NOT DISTINCT FROM $2::jsonb) AS input_matches";

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let start_root = format!(
            "WITH upsert AS (
                INSERT INTO {{s}}.task AS t (id, parent_id, root_id, kind, name, status, input, started_at)
                SELECT n.id, NULL, n.id, 'workflow', $1, 'running', $2::jsonb, now()
                FROM (SELECT nextval('{{s}}.task_id_seq') AS id) AS n
                ON CONFLICT (name) WHERE parent_id IS NULL DO UPDATE SET {RESUME}
            ) {HISTORY}"
        );
        let start_child = format!(
            "WITH upsert AS (
                INSERT INTO {{s}}.task AS t (id, parent_id, root_id, kind, name, status, input, started_at)
                SELECT nextval('{{s}}.task_id_seq'), $3, $4, 'workflow', $1, 'running', $2::jsonb, now()
                ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET {RESUME}
            ) {HISTORY}"
        );
        Statements {
            start_root: start_root.replace("{s}", schema),
            start_child: start_child.replace("{s}", schema),
            flush: FLUSH.replace("{s}", schema),
        }
    }
}

/// One group commit: every queued step record and workflow result in one
/// statement, hence one transaction and one WAL flush.
///
/// * `$1..$7` step rows (parent, root, name, status, attempt, output, error).
///   A `running` row (the marker written before a step's body runs) never
///   overwrites a finished row of the same or a later attempt, so markers and
///   results commute.
/// * `$8..$11` workflow results (id, status, output, error), applied only to
///   a workflow that is still running.
/// * `$12` the `synchronous_commit` setting for this transaction: `off` when
///   the batch holds only markers. A marker then costs no fsync of its own; it
///   becomes durable with the next synchronous commit (WAL is flushed in
///   order), and losing it in a crash only loses the knowledge that a step had
///   started, which a re-run tolerates by design.
///
/// Returns one row per applied record: ('s', parent, name) or ('w', id, NULL).
const FLUSH: &str = "
WITH durability AS (
    SELECT set_config('synchronous_commit', $12, true)
), steps AS (
    INSERT INTO {s}.task AS t (parent_id, root_id, kind, name, status, attempt, output, error,
                               started_at, completed_at)
    SELECT r.parent_id, r.root_id, 'step', r.name, r.status, r.attempt, r.output, r.error,
           now(), CASE WHEN r.status <> 'running' THEN now() END
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::int4[], $6::jsonb[], $7::jsonb[])
         AS r(parent_id, root_id, name, status, attempt, output, error),
         durability
    ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET
        status = EXCLUDED.status,
        attempt = EXCLUDED.attempt,
        output = EXCLUDED.output,
        error = EXCLUDED.error,
        started_at = CASE WHEN EXCLUDED.status = 'running' THEN now() ELSE t.started_at END,
        completed_at = EXCLUDED.completed_at,
        updated_at = now()
    WHERE t.kind = 'step'
      AND (EXCLUDED.status <> 'running' OR t.attempt < EXCLUDED.attempt)
    RETURNING t.parent_id, t.name
), workflows AS (
    UPDATE {s}.task AS t
    SET status = w.status, output = w.output, error = w.error,
        completed_at = now(), updated_at = now()
    FROM unnest($8::bigint[], $9::text[], $10::jsonb[], $11::jsonb[]) AS w(id, status, output, error),
         durability
    WHERE t.id = w.id AND t.kind = 'workflow' AND t.status = 'running'
    RETURNING t.id
)
SELECT 's' AS kind, parent_id AS id, name FROM steps
UNION ALL
SELECT 'w', id, NULL FROM workflows";
