-- durable schema, version 5: enqueue from SQL, inside the application's own
-- transaction, so that a run exists if and only if the business write
-- commits (executors are woken at that commit):
--
--   SELECT durable.enqueue('app.ingest', 'ingest-7', '"s3://b"'::jsonb,
--                          queue => 'etl', delay => interval '5 min');
--
-- Made with the schema's name spelled in (it is the first of search_path
-- while migrations run), for the notification's payload and the tables;
-- hence format(), and %% for the percent signs of RAISE.

DO $migration$
BEGIN
EXECUTE format($function$
CREATE FUNCTION %1$I.enqueue(
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
    due   timestamptz := coalesce(enqueue.run_at, now() + coalesce(enqueue.delay, interval '0'));
    found record;
BEGIN
    IF enqueue.workflow IS NULL OR enqueue.name IS NULL OR enqueue.queue IS NULL THEN
        RAISE EXCEPTION 'durable.enqueue: workflow, name and queue must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF enqueue.delay IS NOT NULL AND enqueue.run_at IS NOT NULL THEN
        RAISE EXCEPTION 'durable.enqueue: give delay or run_at, not both' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO task_queue (name) VALUES (enqueue.queue) ON CONFLICT DO NOTHING;
    INSERT INTO task AS t (id, parent_id, root_id, kind, name, status, input, workflow, queue,
                           run_at, priority, concurrency_key, lease_epoch)
    SELECT n.id, NULL, n.id, 'workflow', enqueue.name,
           CASE WHEN due > now() THEN 'scheduled' ELSE 'queued' END,
           enqueue.input, enqueue.workflow, enqueue.queue, due, enqueue.priority, enqueue.key, 0
    FROM (SELECT nextval('task_id_seq') AS id) AS n
    ON CONFLICT (name) WHERE parent_id IS NULL DO NOTHING;
    SELECT t.id, t.workflow, t.input INTO found FROM task AS t WHERE t.parent_id IS NULL AND t.name = enqueue.name;
    IF found.workflow IS DISTINCT FROM enqueue.workflow THEN
        RAISE EXCEPTION 'durable.enqueue: workflow %% already exists as a run of %%', enqueue.name, found.workflow
            USING ERRCODE = 'unique_violation';
    END IF;
    IF found.input::text IS DISTINCT FROM enqueue.input::text THEN
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
