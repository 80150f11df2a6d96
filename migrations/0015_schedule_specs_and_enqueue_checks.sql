-- durable schema, version 15. Applied like version 1 (one transaction,
-- search_path set).

-- 1. Schedules by spec: one row per scheduled function *and* spec, where
--    task_schedule (version 4) kept one per function. Two executors with
--    different specs for one function (old and new code during a rolling
--    deploy) each advance the row of their own spec, so both specs' ticks
--    are queued meanwhile, each once (a tick's run is named after the
--    function and the tick). With one row, each found the other's spec,
--    put its own back, restarting it, and few ticks were queued. seen_at:
--    when an executor that serves the spec last registered, confirmed or
--    advanced it; executors remove the rows of their function's other
--    specs that no executor has seen for a while.
CREATE TABLE task_schedule_spec (
    workflow   text NOT NULL CHECK (workflow <> '' AND octet_length(workflow) <= 255),
    spec       text NOT NULL CHECK (spec <> ''),   -- 'cron <expr> <timezone>' or 'every <seconds>'
    next_tick  timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow, spec)
);

-- The schedules go on where they were. task_schedule is left as it was:
-- executors of earlier versions still running while this one is deployed
-- go on advancing it (their ticks' runs have the same names, so a tick
-- both tables produce runs once); this version neither reads nor writes it.
INSERT INTO task_schedule_spec (workflow, spec, next_tick) SELECT workflow, spec, next_tick FROM task_schedule;
COMMENT ON TABLE task_schedule IS
    'Schedules as earlier durable versions keep them (one row per function), left for their executors during an upgrade; see task_schedule_spec.';

-- 2. enqueue() from SQL (version 5), replaced:
--    * an SQL NULL input is stored as JSON null, as the Python API stores
--      None (a NULL input was accepted, and every executor that claimed
--      the run then failed reading it);
--    * workflow, name, queue and key are checked as the Python API checks
--      them (not empty, at most 255 bytes), with the same message (key ''
--      was accepted; other names failed on a table's CHECK that did not say
--      which argument was wrong).
-- Made as version 5 made it: with the schema's name spelled in, hence
-- format(), and %% for the percent signs of RAISE.

DO $migration$
BEGIN
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.enqueue(
    workflow text,
    name     text,
    input    jsonb DEFAULT 'null',
    queue    text DEFAULT 'default',
    delay    interval DEFAULT NULL,
    run_at   timestamptz DEFAULT NULL,
    priority integer DEFAULT 0,
    key      text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = %1$I, pg_catalog
AS $body$
#variable_conflict use_column
DECLARE
    due     timestamptz := coalesce(enqueue.run_at, now() + coalesce(enqueue.delay, interval '0'));
    stored  jsonb := coalesce(enqueue.input, 'null');
    checked record;
    found   record;
BEGIN
    IF enqueue.workflow IS NULL OR enqueue.name IS NULL OR enqueue.queue IS NULL THEN
        RAISE EXCEPTION 'durable.enqueue: workflow, name and queue must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- The rule of the Python API (validate_name in the engine): a text
    -- column cannot hold NUL, so empty and too long are what is left.
    FOR checked IN
        SELECT v.what, v.given FROM (VALUES ('registered workflow', enqueue.workflow), ('workflow', enqueue.name),
                                           ('queue', enqueue.queue), ('key', enqueue.key)) AS v(what, given)
        WHERE v.given = '' OR octet_length(v.given) > 255
    LOOP
        RAISE EXCEPTION 'durable.enqueue: invalid %% name %%: %%', checked.what, to_json(left(checked.given, 80)),
            CASE WHEN checked.given = '' THEN 'it is empty' ELSE 'it is longer than 255 bytes' END
            USING ERRCODE = 'invalid_parameter_value';
    END LOOP;
    IF enqueue.delay IS NOT NULL AND enqueue.run_at IS NOT NULL THEN
        RAISE EXCEPTION 'durable.enqueue: give delay or run_at, not both' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO task_queue (name) VALUES (enqueue.queue) ON CONFLICT DO NOTHING;
    INSERT INTO task AS t (id, parent_id, root_id, kind, name, status, input, workflow, queue,
                           run_at, priority, concurrency_key, lease_epoch)
    SELECT n.id, NULL, n.id, 'workflow', enqueue.name,
           CASE WHEN due > now() THEN 'scheduled' ELSE 'queued' END,
           stored, enqueue.workflow, enqueue.queue, due, enqueue.priority, enqueue.key, 0
    FROM (SELECT nextval('task_id_seq') AS id) AS n
    ON CONFLICT (name) WHERE parent_id IS NULL DO NOTHING;
    SELECT t.id, t.workflow, t.input INTO found FROM task AS t WHERE t.parent_id IS NULL AND t.name = enqueue.name;
    IF found.workflow IS DISTINCT FROM enqueue.workflow THEN
        RAISE EXCEPTION 'durable.enqueue: workflow %% already exists as a run of %%', enqueue.name, found.workflow
            USING ERRCODE = 'unique_violation';
    END IF;
    IF found.input::text IS DISTINCT FROM stored::text THEN
        RAISE EXCEPTION 'durable.enqueue: workflow %% already exists with a different input', enqueue.name
            USING ERRCODE = 'unique_violation';
    END IF;
    PERFORM pg_notify('durable', %2$L || ' queued ' || enqueue.queue);
    RETURN found.id;
END
$body$
$function$, current_schema(), current_schema());
END
$migration$;
