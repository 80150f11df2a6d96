-- durable schema, version 11: the history of attempts. A task row holds only
-- its latest attempt (a step's retry, a workflow's recovery or new claim
-- overwrite `attempt`, `started_at`, `completed_at`, `error`); before they
-- are overwritten, a trigger copies the attempt that ends into
-- `task_attempt`, so `durable ui` can draw each attempt. Applied like
-- version 1.

-- One row per finished or abandoned attempt of a task (never its current one).
CREATE TABLE task_attempt (
    task_id     bigint NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    -- completed, failed, cancelled, or interrupted (it was running, or its
    -- workflow was put back in its queue, when the next attempt began).
    status      text NOT NULL,
    -- When it began: for a workflow, when it was claimed (its row keeps
    -- only the first start).
    started_at  timestamptz,
    -- When it finished; NULL for an interrupted attempt (the moment is unknown).
    ended_at    timestamptz,
    -- When the next attempt began.
    replaced_at timestamptz NOT NULL DEFAULT now(),
    -- failed: its error record {type, module, message, traceback}.
    error       jsonb,
    PRIMARY KEY (task_id, attempt)
);

-- Fires only when `attempt` grows (a retry, a recovery, a new claim): every
-- other update of `task` (a step's marker or result under the same attempt,
-- a heartbeat, a status change) is turned away by the WHEN clause, one
-- integer comparison with no function call.
DO $migration$
BEGIN
EXECUTE format($function$
CREATE FUNCTION %1$I.keep_attempt() RETURNS trigger
LANGUAGE plpgsql
SET search_path = %1$I, pg_catalog
AS $body$
BEGIN
    INSERT INTO task_attempt (task_id, attempt, status, started_at, ended_at, error)
    SELECT OLD.id, OLD.attempt,
           CASE WHEN OLD.status IN ('completed', 'failed', 'cancelled') THEN OLD.status ELSE 'interrupted' END,
           -- A step's row records each attempt's start; a workflow's only its
           -- first: a later attempt began when the one before it was replaced.
           CASE WHEN OLD.kind = 'step' THEN OLD.started_at
                ELSE coalesce((SELECT p.replaced_at FROM task_attempt AS p
                               WHERE p.task_id = OLD.id AND p.attempt = OLD.attempt - 1),
                              OLD.started_at) END,
           CASE WHEN OLD.status IN ('completed', 'failed', 'cancelled') THEN OLD.completed_at END,
           CASE WHEN OLD.status = 'failed' THEN OLD.error END
    ON CONFLICT (task_id, attempt) DO NOTHING;
    RETURN NEW;
END
$body$
$function$, current_schema());
END
$migration$;

CREATE TRIGGER task_keep_attempt
    BEFORE UPDATE OF attempt ON task
    FOR EACH ROW
    WHEN (NEW.attempt > OLD.attempt)
    EXECUTE FUNCTION keep_attempt();
