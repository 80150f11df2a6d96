//! Forking a run from a step or a child workflow: a new root that keeps
//! what the source completed before that point and runs the rest
//! (`durable.fork`).

use crate::engine::error::EngineError;
use crate::engine::sql::Sql;
use crate::engine::values::jsonb::JsonText;
use crate::engine::workflow::col;
use crate::engine::{Engine, validate_name};

/// Copies the root `$1` as the new root `$2`, keeping the steps and child
/// trees that completed and first ran (lower id) before its step or child
/// workflow `$3` (NULL: keep nothing), with the input `$4` (NULL: the
/// source's). A
/// root run by a registered function is queued for an executor (`$5` the
/// schema, to wake them); one run by hand is left interrupted (`running`
/// with no holder), for `Ctx.start`. One statement: the copy is whole or
/// absent. A queued fork looks to the claim like a run that was suspended
/// (`lease_epoch` 1 and a `waiting` record): the claim then reads its
/// history (a run never claimed has none, so the claim skips reading it)
/// and keeps its attempt at 1. Children are copied with everything under them, each row keeping
/// its name, status, attempt, output, error and times, a step its `waiting`
/// record (a sleep's mark), and its past attempts (`task_attempt`).
pub(crate) const FORK: Sql = Sql::new(
    "
WITH RECURSIVE source AS (
    SELECT * FROM {schema}.task WHERE parent_id IS NULL AND name = $1
), cut AS (
    SELECT s.id FROM {schema}.task AS s, source
    WHERE s.parent_id = source.id AND s.name = $3
    UNION ALL
    SELECT 0 WHERE $3::text IS NULL
), kept AS (
    SELECT t.id FROM {schema}.task AS t, source, cut
    WHERE t.parent_id = source.id AND t.id < cut.id AND t.status = 'completed'
    UNION ALL
    SELECT t.id FROM {schema}.task AS t JOIN kept ON t.parent_id = kept.id
), fresh AS (
    SELECT nextval('{schema}.task_id_seq') AS id
), mapping AS (
    -- New ids in the order of the old ones: the copies keep the order in
    -- which their originals first ran.
    SELECT ordered.id AS old, nextval('{schema}.task_id_seq') AS new
    FROM (SELECT id FROM kept ORDER BY id) AS ordered
), forked AS (
    INSERT INTO {schema}.task (id, parent_id, root_id, kind, name, status, input, workflow, queue, priority,
                          concurrency_key, run_at, lease_epoch, waiting)
    SELECT fresh.id, NULL, fresh.id, 'workflow', $2,
           CASE WHEN source.workflow IS NOT NULL THEN 'queued' ELSE 'running' END,
           coalesce($4::jsonb, source.input),
           source.workflow, CASE WHEN source.workflow IS NOT NULL THEN source.queue END,
           source.priority, source.concurrency_key, CASE WHEN source.workflow IS NOT NULL THEN now() END,
           CASE WHEN source.workflow IS NOT NULL THEN 1 ELSE 0 END,
           CASE WHEN source.workflow IS NOT NULL THEN jsonb_build_object(
               'kind', 'fork', 'step', $3::text,
               'detail', format('forked from %s at %s', $1::text, coalesce($3::text, '(the start)'))) END
    FROM source, fresh, cut
    ON CONFLICT (name) WHERE parent_id IS NULL DO NOTHING
    RETURNING id, status, queue
), copied AS (
    INSERT INTO {schema}.task (id, parent_id, root_id, kind, name, status, input, output, error, attempt,
                          created_at, started_at, completed_at, waiting)
    SELECT m.new, coalesce(parent.new, forked.id), forked.id, t.kind, t.name, t.status, t.input, t.output,
           t.error, t.attempt, t.created_at, t.started_at, t.completed_at,
           CASE WHEN t.kind = 'step' THEN t.waiting END
    FROM mapping AS m
    JOIN {schema}.task AS t ON t.id = m.old
    LEFT JOIN mapping AS parent ON parent.old = t.parent_id
    CROSS JOIN forked
    RETURNING id
), history AS (
    -- (Its foreign key is checked at the statement's end, when the copies exist.)
    INSERT INTO {schema}.task_attempt (task_id, attempt, status, started_at, ended_at, replaced_at, error)
    SELECT m.new, a.attempt, a.status, a.started_at, a.ended_at, a.replaced_at, a.error
    FROM mapping AS m
    JOIN {schema}.task_attempt AS a ON a.task_id = m.old
    CROSS JOIN forked
)
SELECT EXISTS (SELECT 1 FROM source) AS found, EXISTS (SELECT 1 FROM cut) AS cut,
       (SELECT status FROM forked) AS status, (SELECT count(*) FROM copied) AS copied,
       (SELECT left(pg_notify('durable', $5::text || ' queued ' || coalesce(queue, ''))::text, 0)
        FROM forked WHERE status = 'queued') AS notified",
);

/// What `fork` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forked {
    /// The new run, its status (`queued`, or `running` with no holder) and
    /// how many rows (steps, children and theirs) it kept.
    Made {
        status: String,
        kept: i64,
    },
    NoSource,
    /// The source has no step or child workflow of that name.
    NoStep,
    NameTaken,
}

impl Engine {
    /// Forks the root `name` as the new root `new_name` from its step or
    /// child workflow `from_step` (None: from the start), with `input`
    /// (None: the source's).
    pub async fn fork(
        &self,
        name: &str,
        new_name: &str,
        from_step: Option<&str>,
        input: Option<&JsonText>,
    ) -> Result<Forked, EngineError> {
        validate_name("workflow", name)?;
        validate_name("workflow", new_name)?;
        if let Some(step) = from_step {
            validate_name("step", step)?;
        }
        self.check_open()?;
        let schema = self.schema();
        let row = retrying!(self, &format!("forking workflow {name:?}"), |client| async {
            let statement = client.prepare_cached(&self.inner.sql.fork).await?;
            client
                .query_one(&statement, &[&name, &new_name, &from_step, &input, &schema])
                .await
        })?;
        if !col::<bool>(&row, "found")? {
            return Ok(Forked::NoSource);
        }
        if !col::<bool>(&row, "cut")? {
            return Ok(Forked::NoStep);
        }
        let Some(status) = col::<Option<String>>(&row, "status")? else {
            return Ok(Forked::NameTaken);
        };
        if status == "queued" {
            self.inner.events.more_work();
        }
        Ok(Forked::Made {
            status,
            kept: col(&row, "copied")?,
        })
    }
}
