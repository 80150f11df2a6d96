-- durable schema, version 9: waiting workflows (durable sleep, waiting on
-- another run) leave their process: a suspended root goes back to waiting
-- for an executor (`scheduled` until its wake-up time, or with no `run_at`
-- while it waits for something else) and says why. Applied like version 1.

-- Roots, while suspended: why, as {"kind", "step", "detail"} (kind `sleep`,
-- `result`, ...; step: the step that waits; detail: for humans). Cleared
-- when an executor claims the run again.
ALTER TABLE task ADD COLUMN waiting jsonb;
-- Roots, while suspended waiting for another root to finish: that root's id.
ALTER TABLE task ADD COLUMN waiting_on bigint;
-- Roots: a wake (`Engine::wake`) came while the root was running: its next
-- suspension is refused (the waiter looks again), so no wake is lost
-- between a waiter's look and its suspension.
ALTER TABLE task ADD COLUMN wake_pending boolean NOT NULL DEFAULT false;

CREATE INDEX task_waiting_on ON task (waiting_on) WHERE waiting_on IS NOT NULL;

-- When a root finishes (by any path: its own result, a cancel, a recovery
-- that fails it), the roots suspended waiting for it become due now, and
-- executors are told. The WHEN clause keeps the cost for every other row
-- to one comparison.
DO $migration$
BEGIN
EXECUTE format($function$
CREATE FUNCTION %1$I.wake_waiters() RETURNS trigger
LANGUAGE plpgsql
SET search_path = %1$I, pg_catalog
AS $body$
DECLARE
    woken record;
BEGIN
    FOR woken IN
        UPDATE task AS t SET status = 'queued', run_at = now(), updated_at = now()
        WHERE t.waiting_on = NEW.id AND t.parent_id IS NULL AND t.status IN ('queued', 'scheduled')
        RETURNING t.queue
    LOOP
        PERFORM pg_notify('durable', %2$L || ' queued ' || coalesce(woken.queue, ''));
    END LOOP;
    RETURN NULL;
END
$body$
$function$, current_schema(), current_schema());
END
$migration$;

CREATE TRIGGER task_wake_waiters
    AFTER UPDATE OF status ON task
    FOR EACH ROW
    WHEN (NEW.parent_id IS NULL AND NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION wake_waiters();
