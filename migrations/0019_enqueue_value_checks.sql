-- durable schema, version 19: enqueue() from SQL (versions 5, 15 and 17)
-- checks its input as the Python API checks a value, before anything is
-- stored. It accepted an input nested deeper than any reader goes, or
-- holding a number beyond any float (1e400): stored, such a run broke
-- list_workflows, get, `durable list` and the ui's runs page for everyone.
-- Now an input nested more than 100 levels (the Python API's limit) or
-- holding a number outside a 64-bit float's range is refused with SQLSTATE
-- 22023 (invalid_parameter_value). The rest is version 17's function,
-- unchanged; made as it was made (the schema's name spelled in, hence
-- format(), and %% for RAISE's percent signs).

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
    due     timestamptz;
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
    -- As the Python API's moment(): a time the readers can show.
    IF NOT (enqueue.run_at >= '0001-01-01 00:00:00+00' AND enqueue.run_at < '10000-01-01 00:00:00+00') THEN
        RAISE EXCEPTION 'durable.enqueue: run_at must fall within the years 1 to 9999 in UTC, and %% does not',
            enqueue.run_at USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- As the Python API's delay: from 0 to a century.
    IF NOT (enqueue.delay >= interval '0' AND enqueue.delay <= interval '36500 days') THEN
        RAISE EXCEPTION 'durable.enqueue: delay must be from 0 to 36500 days (a century), not %%', enqueue.delay
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- As the Python API's JSON check: what a Python reader can read back.
    IF jsonb_path_exists(stored, 'strict $.**{101}') THEN
        RAISE EXCEPTION 'durable.enqueue: the input is nested more than 100 levels deep, which durable cannot read back'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_path_exists(stored, 'strict $.** ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))') THEN
        RAISE EXCEPTION 'durable.enqueue: the input holds a number beyond any float (a 64-bit double), which durable cannot read back'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    due := coalesce(enqueue.run_at, now() + coalesce(enqueue.delay, interval '0'));
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
