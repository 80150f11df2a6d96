-- Generated from the engine's statement registry (rust/engine/sql.rs): do not edit.
-- Regenerate with:
--   DURABLE_BLESS=1 .venv/bin/python tests/_testdb.py cargo test --test statements
--
-- Every statement the engine prepares, by its name in the registry, filled
-- for the schema "durable", with the const that holds its template (under
-- rust/engine/). A statement built per call is written in one of its forms,
-- which prepares as the others do; its note says which form.
--
-- Not listed: the migrations (migrations/) and the creation of the schema
-- and its migration table before them, transaction control and session
-- settings (BEGIN, COMMIT, ROLLBACK, SET ..., LISTEN), the probe for
-- transaction-mode poolers, and the statements of transaction steps, which
-- are the user's.

-- name: owner_register
-- from: lease::owner::REGISTER
INSERT INTO "durable".owner AS o (id, backend_pid, backend_start, host, pid, expires_at, session_grace,
                                 boot_id, pid_namespace, process_start)
SELECT coalesce($1::text::uuid, gen_random_uuid()), pg_backend_pid(),
       (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
       $2, $3, now() + make_interval(secs => $4::float8), make_interval(secs => $5::float8),
       $6::text, $7::text, $8::int8
ON CONFLICT (id) DO UPDATE SET
    backend_pid = EXCLUDED.backend_pid,
    backend_start = EXCLUDED.backend_start,
    expires_at = EXCLUDED.expires_at,
    session_grace = EXCLUDED.session_grace,
    session_lost_at = NULL,
    boot_id = EXCLUDED.boot_id,
    pid_namespace = EXCLUDED.pid_namespace,
    process_start = EXCLUDED.process_start
RETURNING id::text;

-- name: owner_heartbeat
-- from: lease::owner::HEARTBEAT
WITH renewed AS (
    UPDATE "durable".owner SET expires_at = now() + make_interval(secs => $2::float8), session_lost_at = NULL
    WHERE id = $1::text::uuid AND backend_pid = pg_backend_pid()
    RETURNING id
), lost AS (
    SELECT o.id, o.backend_pid FROM "durable".owner AS o
    WHERE o.id <> $1::text::uuid AND o.session_lost_at IS NULL AND o.session_grace > interval '0'
      AND o.expires_at > now() AND NOT EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start))
), marked AS (
    UPDATE "durable".owner AS o SET session_lost_at = now()
    FROM lost
    WHERE o.id = lost.id AND o.backend_pid = lost.backend_pid AND o.session_lost_at IS NULL
), purged AS (
    DELETE FROM "durable".owner WHERE expires_at < now() - interval '1 day'
)
SELECT count(*) AS renewed FROM renewed;

-- name: owner_release
-- from: lease::owner::RELEASE
UPDATE "durable".owner SET expires_at = now() WHERE id = $1::text::uuid;

-- name: owner_gone
-- from: lease::gone::OWNER_GONE
UPDATE "durable".owner AS o SET session_lost_at = least(coalesce(o.session_lost_at, now()), now() - o.session_grace)
WHERE o.id = $1::text::uuid AND o.backend_pid = $2 AND o.process_start = $3 AND NOT EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start));

-- name: owners_gone_here
-- from: lease::gone::OWNERS_GONE_HERE
SELECT o.id::text AS owner_id, o.backend_pid, o.boot_id, o.pid_namespace, o.pid, o.process_start
FROM "durable".owner AS o
WHERE o.boot_id = $1 AND o.pid_namespace = $2 AND o.id <> $3::text::uuid AND o.expires_at > now()
  AND o.session_grace > interval '0' AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace)
  AND NOT EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start));

-- name: cancelled
-- from: lease::owner::CANCELLED
SELECT id, root_id FROM "durable".task WHERE root_id = ANY($1) AND kind = 'workflow' AND status = 'cancelled';

-- name: release
-- from: lease::release::RELEASE
WITH root AS (
    SELECT id, workflow, queue, status FROM "durable".task
    WHERE id = $1 AND owner_id = $2::text::uuid AND lease_epoch = $3 AND status IN ('running', 'cancelled')
    FOR UPDATE
), released AS (
    UPDATE "durable".task AS t SET owner_id = NULL, updated_at = now(),
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
FROM released;

-- name: start_root
-- from: checkpoint::start::START_ROOT
INSERT INTO "durable".task AS t (id, parent_id, root_id, kind, name, status, input, started_at,
                                         owner_id, lease_epoch, deadline_at, workflow)
             SELECT n.id, NULL, n.id, 'workflow', $1, 'running', $2::jsonb, now(), $3::text::uuid, 1,
                    now() + make_interval(secs => $4::float8), $5
             FROM (SELECT nextval('"durable".task_id_seq') AS id) AS n
             ON CONFLICT (name) WHERE parent_id IS NULL DO UPDATE SET (status, attempt, error, owner_id, lease_epoch, workflow, started_at, updated_at,
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
        FROM (SELECT t.kind = 'workflow' AND t.status IN ('running', 'failed', 'queued', 'scheduled')
    AND t.input::text IS NOT DISTINCT FROM EXCLUDED.input::text
    AND (t.workflow IS NULL OR EXCLUDED.workflow IS NULL OR t.workflow = EXCLUDED.workflow)
    AND (t.status = 'failed' OR t.owner_id IS NULL OR t.owner_id = $3::text::uuid OR NOT EXISTS (
    SELECT 1 FROM "durable".owner AS o
    WHERE o.id = t.owner_id AND o.expires_at > now()
      AND ((o.session_grace > interval '0'
            AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace))
           OR EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start))))) AS claim) AS c)
             RETURNING t.id, t.root_id, t.kind, t.status, t.attempt, t.output, t.error, t.lease_epoch, t.workflow,
              (t.owner_id IS NOT DISTINCT FROM $3::text::uuid) AS owned,
              (t.xmax = 0) AS created,
              extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in, t.name, (t.input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches;

-- name: start_roots
-- from: checkpoint::start::START_ROOTS
WITH r AS (
                 SELECT * FROM unnest($1::text[], $2::jsonb[], $4::float8[], $5::text[])
                     AS r(name, input, deadline, workflow)
             ), started AS (
                 INSERT INTO "durable".task AS t (id, parent_id, root_id, kind, name, status, input, started_at,
                                             owner_id, lease_epoch, deadline_at, workflow)
                 SELECT n.id, NULL, n.id, 'workflow', n.name, 'running', n.input, now(), $3::text::uuid, 1,
                        now() + make_interval(secs => n.deadline), n.workflow
                 -- A subquery with a volatile output is not flattened: one id per row, for id and root_id.
                 FROM (SELECT nextval('"durable".task_id_seq') AS id, r.* FROM r) AS n
                 ON CONFLICT (name) WHERE parent_id IS NULL DO UPDATE SET (status, attempt, error, owner_id, lease_epoch, workflow, started_at, updated_at,
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
        FROM (SELECT t.kind = 'workflow' AND t.status IN ('running', 'failed', 'queued', 'scheduled')
    AND t.input::text IS NOT DISTINCT FROM EXCLUDED.input::text
    AND (t.workflow IS NULL OR EXCLUDED.workflow IS NULL OR t.workflow = EXCLUDED.workflow)
    AND (t.status = 'failed' OR t.owner_id IS NULL OR t.owner_id = $3::text::uuid OR NOT EXISTS (
    SELECT 1 FROM "durable".owner AS o
    WHERE o.id = t.owner_id AND o.expires_at > now()
      AND ((o.session_grace > interval '0'
            AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace))
           OR EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start))))) AS claim) AS c)
                 RETURNING t.id, t.root_id, t.kind, t.status, t.attempt, t.output, t.error, t.lease_epoch, t.workflow,
              (t.owner_id IS NOT DISTINCT FROM $3::text::uuid) AS owned,
              (t.xmax = 0) AS created,
              extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in, t.name, t.input::text AS saved_input
             )
             SELECT s.*, (s.saved_input IS NOT DISTINCT FROM r.input::text) AS input_matches
             FROM started AS s JOIN r ON r.name = s.name;

-- name: start_child
-- from: checkpoint::start::START_CHILD
WITH parent AS (
                 SELECT p.id, p.root_id, p.deadline_at FROM "durable".task AS p
                 WHERE p.id = $4 AND p.owner_id = $3::text::uuid AND p.lease_epoch = $5 AND p.status = 'running'
                 FOR SHARE
             )
             INSERT INTO "durable".task AS t (id, parent_id, root_id, kind, name, status, input, started_at,
                                         owner_id, lease_epoch, deadline_at)
             SELECT nextval('"durable".task_id_seq'), parent.id, parent.root_id, 'workflow', $1, 'running',
                    $2::jsonb, now(), $3::text::uuid, 1, parent.deadline_at
             FROM parent
             ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET (status, attempt, error, owner_id, lease_epoch, workflow, started_at, updated_at,
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
        FROM (SELECT t.kind = 'workflow' AND t.status IN ('running', 'failed')
    AND t.input::text IS NOT DISTINCT FROM EXCLUDED.input::text AS claim) AS c)
             RETURNING t.id, t.root_id, t.kind, t.status, t.attempt, t.output, t.error, t.lease_epoch, t.workflow,
              (t.owner_id IS NOT DISTINCT FROM $3::text::uuid) AS owned,
              (t.xmax = 0) AS created,
              extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in, (t.input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches;

-- name: replay_child
-- from: checkpoint::start::REPLAY_CHILD
SELECT t.id, t.root_id, t.kind, t.status, t.attempt, t.output, t.error, t.lease_epoch, t.workflow,
       false AS owned, false AS created,
       (t.input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches,
       extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in
FROM "durable".task AS t
WHERE t.parent_id = $3 AND t.name = $1;

-- name: holder
-- from: checkpoint::start::HOLDER
WITH h AS (
    SELECT o.id, o.backend_pid, o.session_lost_at, o.session_grace,
           o.boot_id, o.pid_namespace, o.pid, o.process_start,
           o.expires_at <= now() AS expired, EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start)) AS connected
    FROM "durable".task AS t JOIN "durable".owner AS o ON o.id = t.owner_id
    WHERE t.parent_id IS NULL AND t.name = $1 AND t.status = 'running' AND t.owner_id <> $2::text::uuid
), marked AS (
    UPDATE "durable".owner AS o SET session_lost_at = now()
    FROM h
    WHERE o.id = h.id AND o.backend_pid = h.backend_pid AND o.session_lost_at IS NULL
      AND NOT h.connected AND NOT h.expired
    RETURNING o.session_lost_at
)
SELECT h.connected, h.expired,
       extract(epoch FROM coalesce((SELECT session_lost_at FROM marked), h.session_lost_at)
                          + h.session_grace - now())::float8 AS grace_left,
       h.id::text AS owner_id, h.backend_pid, h.boot_id, h.pid_namespace, h.pid, h.process_start
FROM h;

-- name: root_input
-- from: checkpoint::start::ROOT_INPUT
SELECT (input::text IS NOT DISTINCT FROM $2::jsonb::text) AS input_matches
FROM "durable".task WHERE parent_id IS NULL AND name = $1;

-- name: history
-- from: checkpoint::start::HISTORY
SELECT name, kind, status, attempt,
       CASE WHEN kind = 'step' AND status = 'completed' THEN output END AS output,
       error ->> 'type' AS error_type
FROM "durable".task
WHERE parent_id = $1;

-- name: flush
-- from: checkpoint::writer::FLUSH
WITH durability AS (
    SELECT set_config('synchronous_commit', $17, true)
), fenced AS (
    SELECT r.* FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::int4[],
                           $6::jsonb[], $7::jsonb[], $8::int8[], $9::int8[], $10::int8[])
                    AS r(parent_id, root_id, name, status, attempt, output, error, epoch, started_us, ended_us)
    JOIN "durable".task AS w ON w.id = r.parent_id
    WHERE w.owner_id = $16::text::uuid AND w.lease_epoch = r.epoch AND w.status = 'running'
    FOR SHARE OF w
), steps AS (
    INSERT INTO "durable".task AS t (parent_id, root_id, kind, name, status, attempt, output, error,
                               started_at, completed_at)
    SELECT r.parent_id, r.root_id, 'step', r.name, r.status, r.attempt, r.output, r.error,
           'epoch'::timestamptz + coalesce(r.started_us, r.ended_us) * interval '1 microsecond',
           CASE WHEN r.status <> 'running' THEN 'epoch'::timestamptz + r.ended_us * interval '1 microsecond' END
    FROM fenced AS r, durability
    ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET
        status = EXCLUDED.status,
        attempt = EXCLUDED.attempt,
        output = EXCLUDED.output,
        error = CASE WHEN EXCLUDED.status = 'running' THEN t.error ELSE EXCLUDED.error END,
        -- A new attempt starts, even when its marker was merged into its outcome.
        started_at = CASE WHEN EXCLUDED.status = 'running' OR t.attempt < EXCLUDED.attempt
                          THEN EXCLUDED.started_at ELSE t.started_at END,
        completed_at = EXCLUDED.completed_at,
        updated_at = now()
    WHERE t.kind = 'step'
      AND (EXCLUDED.status <> 'running' OR t.attempt < EXCLUDED.attempt)
    RETURNING t.parent_id, t.name
), workflows AS (
    UPDATE "durable".task AS t
    SET status = w.status, output = w.output, error = w.error,
        completed_at = now(), updated_at = now()
    FROM unnest($11::bigint[], $12::text[], $13::jsonb[], $14::jsonb[], $15::int8[])
             AS w(id, status, output, error, epoch),
         durability
    WHERE t.id = w.id AND t.kind = 'workflow'
      AND t.owner_id = $16::text::uuid AND t.lease_epoch = w.epoch
      AND (t.status = 'running' OR t.status = w.status)
    RETURNING t.id, t.parent_id IS NULL AS is_root
)
SELECT 's' AS kind, parent_id AS id, name FROM steps
UNION ALL
SELECT 'w', id, CASE WHEN is_root THEN left(pg_notify('durable', $18::text || ' done ' || id)::text, 0) END
FROM workflows;

-- name: diagnose
-- from: checkpoint::writer::DIAGNOSE
SELECT id, status, (owner_id IS NOT DISTINCT FROM $2::text::uuid) AS ours, lease_epoch
FROM "durable".task
WHERE id = ANY($1);

-- name: lock_waits
-- from: wait::suspend::LOCK_WAITS
SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text));

-- name: wait_on
-- from: wait::suspend::WAIT_ON
WITH RECURSIVE chain(id, name, waiting_on, depth) AS (
    SELECT t.id, t.name, t.waiting_on, 1 FROM "durable".task AS t
    WHERE t.parent_id IS NULL AND t.name = $4 AND t.status NOT IN ('completed', 'failed', 'cancelled')
    UNION ALL
    SELECT n.id, n.name, n.waiting_on, c.depth + 1 FROM chain AS c
    JOIN "durable".task AS n ON n.id = c.waiting_on
    WHERE c.id <> $1 AND c.depth < 10000 AND n.parent_id IS NULL
      AND n.status NOT IN ('completed', 'failed', 'cancelled')
), closing AS (
    SELECT min(depth) AS depth FROM chain WHERE id = $1
), recorded AS (
    UPDATE "durable".task AS t SET waiting_on = (SELECT id FROM chain WHERE depth = 1)
    WHERE t.id = $1 AND t.owner_id = $2::text::uuid AND t.lease_epoch = $3 AND t.status = 'running'
      AND (SELECT depth FROM closing) IS NULL
    RETURNING t.id
)
SELECT (SELECT array_agg(c.name ORDER BY c.depth) FROM chain AS c, closing
        WHERE c.depth <= closing.depth) AS cycle,
       (SELECT count(*) FROM recorded) AS recorded;

-- name: clear_wait
-- from: wait::suspend::CLEAR_WAIT
UPDATE "durable".task SET waiting_on = NULL
WHERE id = $1 AND owner_id = $2::text::uuid AND lease_epoch = $3 AND status = 'running' AND waiting_on IS NOT NULL;

-- name: db_now
-- from: wait::suspend::NOW
SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS now_us;

-- name: lock_target
-- from: wait::suspend::LOCK_TARGET
SELECT id, status IN ('completed', 'failed', 'cancelled') AS finished
FROM "durable".task WHERE parent_id IS NULL AND name = $1
FOR SHARE;

-- name: suspend
-- from: wait::suspend::SUSPEND
WITH root AS (
    SELECT id, queue,
           (wake_pending OR $7::bool
            OR EXISTS (SELECT 1 FROM "durable".task_message AS m
                       WHERE m.task_id = $9::int8 AND m.topic = $10::text AND m.received_at IS NULL)) AS woken,
           'epoch'::timestamptz + $4::int8 * interval '1 microsecond' AS due
    FROM "durable".task
    WHERE id = $1 AND parent_id IS NULL AND owner_id = $2::text::uuid AND lease_epoch = $3
      AND status = 'running' AND workflow IS NOT NULL
    FOR UPDATE
), cleared AS (
    UPDATE "durable".task AS t SET wake_pending = false
    FROM root WHERE t.id = root.id AND root.woken AND t.wake_pending
), released AS (
    UPDATE "durable".task AS t SET owner_id = NULL, updated_at = now(),
        status = CASE WHEN t.id <> root.id THEN t.status
                      WHEN root.due <= now() THEN 'queued' ELSE 'scheduled' END,
        run_at = CASE WHEN t.id = root.id THEN root.due ELSE t.run_at END,
        waiting = CASE WHEN t.id = root.id THEN $5::jsonb ELSE t.waiting END,
        waiting_on = CASE WHEN t.id = root.id THEN $6::int8 ELSE t.waiting_on END
    FROM root
    WHERE NOT root.woken AND t.root_id = root.id AND t.kind = 'workflow' AND t.status = 'running'
      AND t.owner_id = $2::text::uuid
    RETURNING t.id
)
SELECT root.woken,
       CASE WHEN NOT root.woken AND (root.due <= now() OR root.queue IS NOT NULL)
            THEN left(pg_notify('durable', $8::text || ' queued ' || coalesce(root.queue, ''))::text, 0) END
           AS notify
FROM root;

-- name: wake
-- from: wait::suspend::WAKE
WITH root AS (SELECT $1::int8 AS id), woken AS (
    UPDATE "durable".task AS t
    SET wake_pending = t.wake_pending OR t.status = 'running',
        status = CASE WHEN t.status IN ('queued', 'scheduled') AND t.waiting IS NOT NULL
                      THEN 'queued' ELSE t.status END,
        run_at = CASE WHEN t.status IN ('queued', 'scheduled') AND t.waiting IS NOT NULL
                      THEN now() ELSE t.run_at END,
        updated_at = now()
    FROM root
    WHERE t.id = root.id AND t.parent_id IS NULL AND t.status IN ('queued', 'scheduled', 'running')
    RETURNING t.queue, (t.status = 'queued' AND t.waiting IS NOT NULL) AS made_due, t.wake_pending AS pending
)
         SELECT CASE WHEN made_due
                     THEN left(pg_notify('durable', $2::text || ' queued ' || coalesce(queue, ''))::text, 0) END
                    AS notify
         FROM woken WHERE made_due OR pending;

-- name: note_wait
-- from: wait::suspend::NOTE
UPDATE "durable".task SET waiting = $4
WHERE id = $1 AND owner_id = $2::text::uuid AND lease_epoch = $3 AND status = 'running';

-- name: save_sleep
-- from: wait::suspend::SAVE_SLEEP
WITH fenced AS (
    SELECT w.id, w.root_id FROM "durable".task AS w
    WHERE w.id = $1 AND w.owner_id = $3::text::uuid AND w.lease_epoch = $2 AND w.status = 'running'
    FOR SHARE OF w
), step AS (
             INSERT INTO "durable".task AS t
                 (parent_id, root_id, kind, name, status, attempt, output, waiting, started_at, completed_at)
             SELECT fenced.id, fenced.root_id, 'step', $4, 'completed', $5, $6::jsonb,
                    jsonb_build_object('kind', 'sleep'), now(), now()
             FROM fenced
             ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET
                 status = 'completed', attempt = EXCLUDED.attempt, output = EXCLUDED.output,
                 waiting = EXCLUDED.waiting, error = NULL, completed_at = now(), updated_at = now()
             WHERE t.kind = 'step' AND t.status <> 'completed'
             RETURNING t.id
         )
         SELECT (SELECT count(*) FROM fenced) AS fenced;

-- name: send
-- from: wait::messages::SEND
WITH RECURSIVE path(id, depth) AS (
    SELECT id, 1 FROM "durable".task WHERE parent_id IS NULL AND name = ($1::text[])[1]
    UNION ALL
    SELECT c.id, path.depth + 1 FROM path
    JOIN "durable".task AS c ON c.parent_id = path.id AND c.name = ($1::text[])[path.depth + 1]
    WHERE c.kind = 'workflow'
), target AS (
    SELECT id FROM path WHERE depth = cardinality($1::text[])
)
, sent AS (
    INSERT INTO "durable".task_message (task_id, topic, key, value, sent_from, sent_by)
    SELECT id, $2, $4, $3, $6, $7 FROM target
    ON CONFLICT (task_id, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING task_id
), root AS (
    SELECT w.root_id AS id FROM "durable".task AS w JOIN sent ON w.id = sent.task_id
), woken AS (
    UPDATE "durable".task AS t
    SET wake_pending = t.wake_pending OR t.status = 'running',
        status = CASE WHEN t.status IN ('queued', 'scheduled') AND t.waiting IS NOT NULL
                      THEN 'queued' ELSE t.status END,
        run_at = CASE WHEN t.status IN ('queued', 'scheduled') AND t.waiting IS NOT NULL
                      THEN now() ELSE t.run_at END,
        updated_at = now()
    FROM root
    WHERE t.id = root.id AND t.parent_id IS NULL AND t.status IN ('queued', 'scheduled', 'running')
    RETURNING t.queue, (t.status = 'queued' AND t.waiting IS NOT NULL) AS made_due, t.wake_pending AS pending
)
SELECT EXISTS (SELECT 1 FROM target) AS found, EXISTS (SELECT 1 FROM sent) AS sent,
       (SELECT left(pg_notify('durable', $5::text || ' message ' || task_id)::text, 0) FROM sent) AS notified,
       (SELECT left(pg_notify('durable', $5::text || ' queued ' || coalesce(queue, ''))::text, 0)
        FROM woken WHERE made_due) AS woken;

-- name: own_message
-- from: wait::messages::OWN_MESSAGE
WITH RECURSIVE path(id, depth) AS (
    SELECT id, 1 FROM "durable".task WHERE parent_id IS NULL AND name = ($1::text[])[1]
    UNION ALL
    SELECT c.id, path.depth + 1 FROM path
    JOIN "durable".task AS c ON c.parent_id = path.id AND c.name = ($1::text[])[path.depth + 1]
    WHERE c.kind = 'workflow'
), target AS (
    SELECT id FROM path WHERE depth = cardinality($1::text[])
)
SELECT EXISTS (
    SELECT 1 FROM "durable".task_message AS m JOIN target ON m.task_id = target.id
    WHERE m.key = $2 AND m.sent_from IS NOT DISTINCT FROM $3 AND m.sent_by = $4
) AS own;

-- name: take_message
-- from: wait::messages::TAKE
WITH fenced AS (
    SELECT w.id, w.root_id FROM "durable".task AS w
    WHERE w.id = $1 AND w.owner_id = $3::text::uuid AND w.lease_epoch = $2 AND w.status = 'running'
    FOR SHARE OF w
), message AS (
             SELECT m.id, m.value FROM "durable".task_message AS m, fenced
             WHERE m.task_id = fenced.id AND m.topic = $6 AND m.received_at IS NULL
             ORDER BY m.id
             LIMIT 1
             FOR UPDATE OF m SKIP LOCKED
         ), step AS (
    INSERT INTO "durable".task AS t (parent_id, root_id, kind, name, status, attempt, output, started_at, completed_at)
    SELECT fenced.id, fenced.root_id, 'step', $4, 'completed', $5, message.value, now(), now()
    FROM fenced, message
    ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET
        status = 'completed', attempt = EXCLUDED.attempt, output = EXCLUDED.output, error = NULL,
        completed_at = now(), updated_at = now()
    WHERE t.kind = 'step' AND t.status <> 'completed'
    RETURNING t.id
         ), received AS (
             UPDATE "durable".task_message AS m SET received_at = now(), received_by = $4
             FROM message, step
             WHERE m.id = message.id
             RETURNING m.value
         )
         SELECT (SELECT count(*) FROM fenced) AS fenced, (SELECT value FROM received) AS value;

-- name: set_event
-- from: wait::messages::SET_EVENT
WITH fenced AS (
    SELECT w.id, w.root_id FROM "durable".task AS w
    WHERE w.id = $1 AND w.owner_id = $3::text::uuid AND w.lease_epoch = $2 AND w.status = 'running'
    FOR SHARE OF w
), step AS (
    INSERT INTO "durable".task AS t (parent_id, root_id, kind, name, status, attempt, output, started_at, completed_at)
    SELECT fenced.id, fenced.root_id, 'step', $4, 'completed', $5, $7::jsonb, now(), now()
    FROM fenced
    ON CONFLICT (parent_id, name) WHERE parent_id IS NOT NULL DO UPDATE SET
        status = 'completed', attempt = EXCLUDED.attempt, output = EXCLUDED.output, error = NULL,
        completed_at = now(), updated_at = now()
    WHERE t.kind = 'step' AND t.status <> 'completed'
    RETURNING t.id
         ), event AS (
             INSERT INTO "durable".task_event (task_id, key, value)
             SELECT fenced.id, $6, $7 FROM fenced, step
             ON CONFLICT (task_id, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
             RETURNING task_id
         )
         SELECT (SELECT count(*) FROM fenced) AS fenced,
                (SELECT left(pg_notify('durable', $8::text || ' event ' || task_id)::text, 0) FROM event) AS notified;

-- name: get_event
-- from: wait::messages::GET_EVENT
WITH RECURSIVE path(id, depth) AS (
    SELECT id, 1 FROM "durable".task WHERE parent_id IS NULL AND name = ($1::text[])[1]
    UNION ALL
    SELECT c.id, path.depth + 1 FROM path
    JOIN "durable".task AS c ON c.parent_id = path.id AND c.name = ($1::text[])[path.depth + 1]
    WHERE c.kind = 'workflow'
), target AS (
    SELECT id FROM path WHERE depth = cardinality($1::text[])
)
SELECT target.id, e.value FROM target
LEFT JOIN "durable".task_event AS e ON e.task_id = target.id AND e.key = $2;

-- name: run_state
-- from: wait::results::RUN_STATE
SELECT id, status, output, error FROM "durable".task WHERE parent_id IS NULL AND name = $1;

-- name: create_queue
-- from: queue::CREATE_QUEUE
WITH queue AS (
    INSERT INTO "durable".task_queue AS q (name, max_concurrency, concurrency_per_key)
    VALUES ($1, $2, $3)
    ON CONFLICT (name) DO UPDATE SET
        max_concurrency = coalesce($2, q.max_concurrency),
        concurrency_per_key = coalesce($3, q.concurrency_per_key)
    RETURNING name
), rates AS (
    SELECT r.max_starts, make_interval(secs => r.secs) AS period
    FROM unnest($5::int4[], $6::float8[]) AS r(max_starts, secs)
), dropped AS (
    DELETE FROM "durable".task_queue_rate AS x
    WHERE $4 AND x.queue = $1 AND x.period NOT IN (SELECT period FROM rates)
), kept AS (
    INSERT INTO "durable".task_queue_rate (queue, max_starts, period)
    SELECT $1, max_starts, period FROM rates WHERE $4
    ON CONFLICT (queue, period) DO UPDATE SET max_starts = EXCLUDED.max_starts
)
SELECT name, left(pg_notify('durable', $7::text || ' queued ' || name)::text, 0) AS notify FROM queue;

-- name: pause_queue
-- from: queue::PAUSE_QUEUE
INSERT INTO "durable".task_queue AS q (name, paused) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused
RETURNING name, CASE WHEN NOT paused THEN left(pg_notify('durable', $3::text || ' queued ' || name)::text, 0) END;

-- name: enqueue
-- from: queue::ENQUEUE
WITH queue AS (
    INSERT INTO "durable".task_queue (name) VALUES ($4) ON CONFLICT (name) DO NOTHING RETURNING name
), due AS (
    SELECT coalesce($9::text::timestamptz, now() + make_interval(secs => $5::float8)) AS at
), asked AS (
    SELECT r.name, r.input FROM unnest($1::text[], $2::jsonb[]) AS r(name, input)
), made AS (
    INSERT INTO "durable".task AS t (id, parent_id, root_id, kind, name, status, input, workflow, queue,
                               run_at, priority, concurrency_key, lease_epoch, enqueued_by)
    SELECT n.id, NULL, n.id, 'workflow', n.name,
           CASE WHEN due.at > now() THEN 'scheduled' ELSE 'queued' END,
           n.input, $3, $4, due.at, $6, $7, 0, $10::int8
    FROM (SELECT nextval('"durable".task_id_seq') AS id, a.name, a.input FROM asked AS a ORDER BY a.name) AS n, due
    ORDER BY n.name
    ON CONFLICT (name) WHERE parent_id IS NULL DO UPDATE SET updated_at = t.updated_at
    RETURNING t.id, t.name, t.status, t.workflow, (t.xmax = 0) AS created, t.input
)
SELECT made.id, made.name, made.status, made.workflow, made.created,
       (made.input::text IS NOT DISTINCT FROM a.input::text) AS input_matches,
       (SELECT count(*) FROM queue) AS queue_created,
       (SELECT left(pg_notify('durable', $8::text || ' queued ' || $4)::text, 0)
        FROM made WHERE made.created LIMIT 1) AS woken
FROM made JOIN asked AS a ON a.name = made.name;

-- name: enqueue_rows
-- from: queue::enqueuer::ENQUEUE_ROWS
WITH asked AS (
    SELECT r.*, row_number() OVER (PARTITION BY r.queue ORDER BY r.name) AS nth_of_queue
    FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::int4[],
                $8::text[], $9::int8[])
         AS r(name, input, workflow, queue, delay, run_at, priority, key, enqueued_by)
), queue AS (
    INSERT INTO "durable".task_queue (name)
    SELECT DISTINCT a.queue FROM asked AS a ORDER BY a.queue
    ON CONFLICT (name) DO NOTHING RETURNING name
), made AS (
    INSERT INTO "durable".task AS t (id, parent_id, root_id, kind, name, status, input, workflow, queue,
                               run_at, priority, concurrency_key, lease_epoch, enqueued_by)
    SELECT n.id, NULL, n.id, 'workflow', n.name,
           CASE WHEN n.at > now() THEN 'scheduled' ELSE 'queued' END,
           n.input, n.workflow, n.queue, n.at, n.priority, n.key, 0, n.enqueued_by
    FROM (SELECT nextval('"durable".task_id_seq') AS id, a.*,
                 coalesce(a.run_at::timestamptz, now() + make_interval(secs => a.delay)) AS at
          FROM asked AS a ORDER BY a.name) AS n
    ORDER BY n.name
    ON CONFLICT (name) WHERE parent_id IS NULL DO UPDATE SET updated_at = t.updated_at
    RETURNING t.id, t.name, t.status, t.workflow, (t.xmax = 0) AS created, t.input
), woken AS (
    SELECT left(pg_notify('durable', $10::text || ' queued ' || q.queue)::text, 0) AS notified
    FROM (SELECT DISTINCT a.queue FROM made JOIN asked AS a ON a.name = made.name WHERE made.created) AS q
)
SELECT made.id, made.name, made.status, made.workflow, made.created,
       (made.input::text IS NOT DISTINCT FROM a.input::text) AS input_matches,
       (SELECT count(*) FROM queue WHERE queue.name = a.queue AND a.nth_of_queue = 1) AS queue_created,
       (SELECT count(*) FROM woken) AS woken
FROM made JOIN asked AS a ON a.name = made.name;

-- name: lock_queue
-- from: queue::LOCK_QUEUE
SELECT name FROM "durable".task_queue WHERE name = $1 FOR UPDATE;

-- name: claim
-- from: queue::CLAIM_QUEUED
WITH RECURSIVE clock AS (
    SELECT clock_timestamp() AS now
), queue AS (
    SELECT q.max_concurrency, q.concurrency_per_key, q.paused FROM "durable".task_queue AS q WHERE q.name = $1
), busy AS (
    SELECT t.concurrency_key AS key, count(*)::int AS n FROM "durable".task AS t
    WHERE t.queue = $1 AND (t.status = 'running' OR (t.status = 'cancelled' AND t.owner_id IS NOT NULL)) AND t.queue IS NOT NULL AND t.parent_id IS NULL
    GROUP BY t.concurrency_key
), rate AS (
    SELECT min(r.max_starts - (SELECT count(*) FROM "durable".task_queue_start AS s, clock
                               WHERE s.queue = $1 AND s.started_at > clock.now - r.period))::int AS left,
           max(r.period) AS longest
    FROM "durable".task_queue_rate AS r WHERE r.queue = $1
), budget AS (
    SELECT CASE WHEN $1::text IS NOT NULL AND NOT EXISTS (SELECT FROM queue WHERE NOT queue.paused) THEN 0
                ELSE greatest(0, least($2::int8,
                                       coalesce((SELECT max_concurrency FROM queue)
                                                - (SELECT coalesce(sum(n), 0) FROM busy), $2::int8),
                                       coalesce(rate.left, $2::int8))) END AS n
    FROM rate
), keys(key) AS (
    (SELECT t.concurrency_key FROM "durable".task AS t
     WHERE t.queue = $1 AND t.concurrency_key IS NOT NULL
       AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
     ORDER BY t.concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT t.concurrency_key FROM "durable".task AS t
            WHERE t.queue = $1 AND t.concurrency_key > keys.key
              AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
            ORDER BY t.concurrency_key LIMIT 1)
    FROM keys WHERE keys.key IS NOT NULL
), heads AS (
    SELECT h.* FROM keys AS k
    CROSS JOIN LATERAL (
        SELECT t.id, t.concurrency_key, t.priority, t.run_at FROM "durable".task AS t
        WHERE t.queue = $1 AND t.concurrency_key = k.key
          AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
          AND t.run_at <= (SELECT now FROM clock) AND t.workflow = ANY($3) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT greatest(0, least((SELECT n FROM budget),
                                coalesce((SELECT concurrency_per_key FROM queue)
                                         - coalesce((SELECT b.n FROM busy AS b WHERE b.key = k.key), 0),
                                         (SELECT n FROM budget))))
        FOR UPDATE OF t SKIP LOCKED
    ) AS h
    WHERE k.key IS NOT NULL
), unkeyed AS (
    SELECT t.id, t.priority, t.run_at FROM "durable".task AS t
    WHERE t.queue = $1 AND t.concurrency_key IS NULL
      AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
      AND t.run_at <= (SELECT now FROM clock) AND t.workflow = ANY($3) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT (SELECT n FROM budget)
    FOR UPDATE OF t SKIP LOCKED
), ranked AS (
    SELECT h.id, h.priority, h.run_at, turn.last_started,
           row_number() OVER (PARTITION BY h.concurrency_key ORDER BY h.priority DESC, h.run_at, h.id)
               + coalesce((SELECT b.n FROM busy AS b WHERE b.key = h.concurrency_key), 0) AS place
    FROM heads AS h
    LEFT JOIN "durable".task_queue_key AS turn ON turn.queue = $1 AND turn.key = h.concurrency_key
    UNION ALL
    SELECT u.id, u.priority, u.run_at, NULL, 1 FROM unkeyed AS u
), chosen AS (
    SELECT r.id FROM ranked AS r
    ORDER BY r.priority DESC, r.place, greatest(r.run_at, r.last_started), r.id
    LIMIT (SELECT n FROM budget)
), claimed AS (
    UPDATE "durable".task AS t
    SET status = 'running', owner_id = $4::text::uuid, lease_epoch = t.lease_epoch + 1,
        -- A run woken from a suspension goes on with the same attempt.
        attempt = CASE WHEN t.lease_epoch = 0 THEN 1 WHEN t.waiting IS NOT NULL THEN t.attempt ELSE t.attempt + 1 END,
        waiting = NULL, waiting_on = NULL, wake_pending = false,
        version = coalesce(t.version, $5), error = NULL,
        started_at = coalesce(t.started_at, (SELECT now FROM clock)), updated_at = now()
    FROM chosen AS c
    WHERE t.id = c.id
    RETURNING t.id, t.name, t.workflow, t.input, t.attempt, t.lease_epoch, (t.lease_epoch = 1) AS first,
              t.concurrency_key,
              extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in
), served AS (
    INSERT INTO "durable".task_queue_key AS turn (queue, key, last_started)
    SELECT DISTINCT $1, c.concurrency_key, clock.now FROM claimed AS c, clock
    WHERE $1::text IS NOT NULL AND c.concurrency_key IS NOT NULL
    ON CONFLICT (queue, key) DO UPDATE SET last_started = EXCLUDED.last_started
), started AS (
    INSERT INTO "durable".task_queue_start (queue, started_at)
    SELECT $1, clock.now FROM claimed, clock, rate WHERE rate.longest IS NOT NULL
), pruned AS (
    DELETE FROM "durable".task_queue_start AS s
    USING clock, rate
    WHERE s.queue = $1 AND s.started_at <= clock.now - coalesce(rate.longest, interval '0')
)
SELECT * FROM claimed;

-- name: claim_unqueued
-- from: queue::CLAIM_UNQUEUED
WITH RECURSIVE clock AS (
    SELECT clock_timestamp() AS now
), queue AS (
    SELECT q.max_concurrency, q.concurrency_per_key, q.paused FROM "durable".task_queue AS q WHERE q.name = $1
), busy AS (
    SELECT t.concurrency_key AS key, count(*)::int AS n FROM "durable".task AS t
    WHERE t.queue = $1 AND (t.status = 'running' OR (t.status = 'cancelled' AND t.owner_id IS NOT NULL)) AND t.queue IS NOT NULL AND t.parent_id IS NULL
    GROUP BY t.concurrency_key
), rate AS (
    SELECT min(r.max_starts - (SELECT count(*) FROM "durable".task_queue_start AS s, clock
                               WHERE s.queue = $1 AND s.started_at > clock.now - r.period))::int AS left,
           max(r.period) AS longest
    FROM "durable".task_queue_rate AS r WHERE r.queue = $1
), budget AS (
    SELECT CASE WHEN $1::text IS NOT NULL AND NOT EXISTS (SELECT FROM queue WHERE NOT queue.paused) THEN 0
                ELSE greatest(0, least($2::int8,
                                       coalesce((SELECT max_concurrency FROM queue)
                                                - (SELECT coalesce(sum(n), 0) FROM busy), $2::int8),
                                       coalesce(rate.left, $2::int8))) END AS n
    FROM rate
), keys(key) AS (
    (SELECT t.concurrency_key FROM "durable".task AS t
     WHERE t.queue = $1 AND t.concurrency_key IS NOT NULL
       AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
     ORDER BY t.concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT t.concurrency_key FROM "durable".task AS t
            WHERE t.queue = $1 AND t.concurrency_key > keys.key
              AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
            ORDER BY t.concurrency_key LIMIT 1)
    FROM keys WHERE keys.key IS NOT NULL
), heads AS (
    SELECT h.* FROM keys AS k
    CROSS JOIN LATERAL (
        SELECT t.id, t.concurrency_key, t.priority, t.run_at FROM "durable".task AS t
        WHERE t.queue = $1 AND t.concurrency_key = k.key
          AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
          AND t.run_at <= (SELECT now FROM clock) AND t.workflow = ANY($3) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT greatest(0, least((SELECT n FROM budget),
                                coalesce((SELECT concurrency_per_key FROM queue)
                                         - coalesce((SELECT b.n FROM busy AS b WHERE b.key = k.key), 0),
                                         (SELECT n FROM budget))))
        FOR UPDATE OF t SKIP LOCKED
    ) AS h
    WHERE k.key IS NOT NULL
), unkeyed AS (
    SELECT t.id, t.priority, t.run_at FROM "durable".task AS t
    WHERE t.queue IS NULL AND $1::text IS NULL AND t.concurrency_key IS NULL
      AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
      AND t.run_at <= (SELECT now FROM clock) AND t.workflow = ANY($3) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT (SELECT n FROM budget)
    FOR UPDATE OF t SKIP LOCKED
), ranked AS (
    SELECT h.id, h.priority, h.run_at, turn.last_started,
           row_number() OVER (PARTITION BY h.concurrency_key ORDER BY h.priority DESC, h.run_at, h.id)
               + coalesce((SELECT b.n FROM busy AS b WHERE b.key = h.concurrency_key), 0) AS place
    FROM heads AS h
    LEFT JOIN "durable".task_queue_key AS turn ON turn.queue = $1 AND turn.key = h.concurrency_key
    UNION ALL
    SELECT u.id, u.priority, u.run_at, NULL, 1 FROM unkeyed AS u
), chosen AS (
    SELECT r.id FROM ranked AS r
    ORDER BY r.priority DESC, r.place, greatest(r.run_at, r.last_started), r.id
    LIMIT (SELECT n FROM budget)
), claimed AS (
    UPDATE "durable".task AS t
    SET status = 'running', owner_id = $4::text::uuid, lease_epoch = t.lease_epoch + 1,
        -- A run woken from a suspension goes on with the same attempt.
        attempt = CASE WHEN t.lease_epoch = 0 THEN 1 WHEN t.waiting IS NOT NULL THEN t.attempt ELSE t.attempt + 1 END,
        waiting = NULL, waiting_on = NULL, wake_pending = false,
        version = coalesce(t.version, $5), error = NULL,
        started_at = coalesce(t.started_at, (SELECT now FROM clock)), updated_at = now()
    FROM chosen AS c
    WHERE t.id = c.id
    RETURNING t.id, t.name, t.workflow, t.input, t.attempt, t.lease_epoch, (t.lease_epoch = 1) AS first,
              t.concurrency_key,
              extract(epoch FROM t.deadline_at - now())::float8 AS deadline_in
), served AS (
    INSERT INTO "durable".task_queue_key AS turn (queue, key, last_started)
    SELECT DISTINCT $1, c.concurrency_key, clock.now FROM claimed AS c, clock
    WHERE $1::text IS NOT NULL AND c.concurrency_key IS NOT NULL
    ON CONFLICT (queue, key) DO UPDATE SET last_started = EXCLUDED.last_started
), started AS (
    INSERT INTO "durable".task_queue_start (queue, started_at)
    SELECT $1, clock.now FROM claimed, clock, rate WHERE rate.longest IS NOT NULL
), pruned AS (
    DELETE FROM "durable".task_queue_start AS s
    USING clock, rate
    WHERE s.queue = $1 AND s.started_at <= clock.now - coalesce(rate.longest, interval '0')
)
SELECT * FROM claimed;

-- name: fail_unstartable
-- from: queue::FAIL_UNSTARTABLE
UPDATE "durable".task AS t
SET status = 'failed', owner_id = NULL, completed_at = now(), updated_at = now(),
    error = jsonb_build_object('type', 'Unstartable', 'module', 'durable.errors',
                               'message', format('run %s cannot be started: %s', t.name, $4::text),
                               'traceback', '')
WHERE t.id = $1 AND t.owner_id = $2::text::uuid AND t.lease_epoch = $3 AND t.status = 'running'
RETURNING left(pg_notify('durable', $5::text || ' queued ' || coalesce(t.queue, ''))::text, 0) AS notify;

-- name: waiting_rank
-- from: queue::WAITING_RANK_QUEUED
WITH RECURSIVE served(fns) AS (
    SELECT coalesce(array_agg(DISTINCT f.name), $3::text[]) FROM "durable".executor AS e
    JOIN "durable".owner AS o ON o.id = e.owner_id
    CROSS JOIN LATERAL unnest(e.workflows) AS f(name)
    WHERE ($3::text[])[1] = ANY(e.workflows) AND o.expires_at > now()
      AND ($5::text IS NULL OR e.version IS NOT DISTINCT FROM $5)
), clock AS (
    SELECT clock_timestamp() AS now
), queue AS (
    SELECT q.max_concurrency, q.concurrency_per_key, q.paused FROM "durable".task_queue AS q WHERE q.name = $1
), busy AS (
    SELECT t.concurrency_key AS key, count(*)::int AS n FROM "durable".task AS t
    WHERE t.queue = $1 AND (t.status = 'running' OR (t.status = 'cancelled' AND t.owner_id IS NOT NULL)) AND t.queue IS NOT NULL AND t.parent_id IS NULL
    GROUP BY t.concurrency_key
), rate AS (
    SELECT min(r.max_starts - (SELECT count(*) FROM "durable".task_queue_start AS s, clock
                               WHERE s.queue = $1 AND s.started_at > clock.now - r.period))::int AS left,
           max(r.period) AS longest
    FROM "durable".task_queue_rate AS r WHERE r.queue = $1
), budget AS (
    SELECT CASE WHEN $1::text IS NOT NULL AND NOT EXISTS (SELECT FROM queue WHERE NOT queue.paused) THEN 0
                ELSE greatest(0, least($2::int8,
                                       coalesce((SELECT max_concurrency FROM queue)
                                                - (SELECT coalesce(sum(n), 0) FROM busy), $2::int8),
                                       coalesce(rate.left, $2::int8))) END AS n
    FROM rate
), keys(key) AS (
    (SELECT t.concurrency_key FROM "durable".task AS t
     WHERE t.queue = $1 AND t.concurrency_key IS NOT NULL
       AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
     ORDER BY t.concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT t.concurrency_key FROM "durable".task AS t
            WHERE t.queue = $1 AND t.concurrency_key > keys.key
              AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
            ORDER BY t.concurrency_key LIMIT 1)
    FROM keys WHERE keys.key IS NOT NULL
), heads AS (
    SELECT h.* FROM keys AS k
    CROSS JOIN LATERAL (
        SELECT t.id, t.concurrency_key, t.priority, t.run_at FROM "durable".task AS t
        WHERE t.queue = $1 AND t.concurrency_key = k.key
          AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
          AND t.run_at <= (SELECT now FROM clock) AND t.workflow = ANY((SELECT fns FROM served)::text[]) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT greatest(0, least($2::int8,
                                coalesce((SELECT concurrency_per_key FROM queue)
                                         - coalesce((SELECT b.n FROM busy AS b WHERE b.key = k.key), 0),
                                         $2::int8)))
        
    ) AS h
    WHERE k.key IS NOT NULL
), unkeyed AS (
    SELECT t.id, t.priority, t.run_at FROM "durable".task AS t
    WHERE t.queue = $1 AND t.concurrency_key IS NULL
      AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
      AND t.run_at <= (SELECT now FROM clock) AND t.workflow = ANY((SELECT fns FROM served)::text[]) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT $2::int8
    
), ranked AS (
    SELECT h.id, h.priority, h.run_at, turn.last_started,
           row_number() OVER (PARTITION BY h.concurrency_key ORDER BY h.priority DESC, h.run_at, h.id)
               + coalesce((SELECT b.n FROM busy AS b WHERE b.key = h.concurrency_key), 0) AS place
    FROM heads AS h
    LEFT JOIN "durable".task_queue_key AS turn ON turn.queue = $1 AND turn.key = h.concurrency_key
    UNION ALL
    SELECT u.id, u.priority, u.run_at, NULL, 1 FROM unkeyed AS u
)
SELECT ordered.place FROM (
    SELECT r.id, row_number() OVER (ORDER BY r.priority DESC, r.place, greatest(r.run_at, r.last_started), r.id)
               AS place
    FROM ranked AS r
) AS ordered
WHERE ordered.id = $4;

-- name: waiting_rank_unqueued
-- from: queue::WAITING_RANK_UNQUEUED
WITH RECURSIVE served(fns) AS (
    SELECT coalesce(array_agg(DISTINCT f.name), $3::text[]) FROM "durable".executor AS e
    JOIN "durable".owner AS o ON o.id = e.owner_id
    CROSS JOIN LATERAL unnest(e.workflows) AS f(name)
    WHERE ($3::text[])[1] = ANY(e.workflows) AND o.expires_at > now()
      AND ($5::text IS NULL OR e.version IS NOT DISTINCT FROM $5)
), clock AS (
    SELECT clock_timestamp() AS now
), queue AS (
    SELECT q.max_concurrency, q.concurrency_per_key, q.paused FROM "durable".task_queue AS q WHERE q.name = $1
), busy AS (
    SELECT t.concurrency_key AS key, count(*)::int AS n FROM "durable".task AS t
    WHERE t.queue = $1 AND (t.status = 'running' OR (t.status = 'cancelled' AND t.owner_id IS NOT NULL)) AND t.queue IS NOT NULL AND t.parent_id IS NULL
    GROUP BY t.concurrency_key
), rate AS (
    SELECT min(r.max_starts - (SELECT count(*) FROM "durable".task_queue_start AS s, clock
                               WHERE s.queue = $1 AND s.started_at > clock.now - r.period))::int AS left,
           max(r.period) AS longest
    FROM "durable".task_queue_rate AS r WHERE r.queue = $1
), budget AS (
    SELECT CASE WHEN $1::text IS NOT NULL AND NOT EXISTS (SELECT FROM queue WHERE NOT queue.paused) THEN 0
                ELSE greatest(0, least($2::int8,
                                       coalesce((SELECT max_concurrency FROM queue)
                                                - (SELECT coalesce(sum(n), 0) FROM busy), $2::int8),
                                       coalesce(rate.left, $2::int8))) END AS n
    FROM rate
), keys(key) AS (
    (SELECT t.concurrency_key FROM "durable".task AS t
     WHERE t.queue = $1 AND t.concurrency_key IS NOT NULL
       AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
     ORDER BY t.concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT t.concurrency_key FROM "durable".task AS t
            WHERE t.queue = $1 AND t.concurrency_key > keys.key
              AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
            ORDER BY t.concurrency_key LIMIT 1)
    FROM keys WHERE keys.key IS NOT NULL
), heads AS (
    SELECT h.* FROM keys AS k
    CROSS JOIN LATERAL (
        SELECT t.id, t.concurrency_key, t.priority, t.run_at FROM "durable".task AS t
        WHERE t.queue = $1 AND t.concurrency_key = k.key
          AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
          AND t.run_at <= (SELECT now FROM clock) AND t.workflow = ANY((SELECT fns FROM served)::text[]) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT greatest(0, least($2::int8,
                                coalesce((SELECT concurrency_per_key FROM queue)
                                         - coalesce((SELECT b.n FROM busy AS b WHERE b.key = k.key), 0),
                                         $2::int8)))
        
    ) AS h
    WHERE k.key IS NOT NULL
), unkeyed AS (
    SELECT t.id, t.priority, t.run_at FROM "durable".task AS t
    WHERE t.queue IS NULL AND $1::text IS NULL AND t.concurrency_key IS NULL
      AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
      AND t.run_at <= (SELECT now FROM clock) AND t.workflow = ANY((SELECT fns FROM served)::text[]) AND (t.version IS NULL OR t.version = $5) AND t.isolated = $6::bool
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT $2::int8
    
), ranked AS (
    SELECT h.id, h.priority, h.run_at, turn.last_started,
           row_number() OVER (PARTITION BY h.concurrency_key ORDER BY h.priority DESC, h.run_at, h.id)
               + coalesce((SELECT b.n FROM busy AS b WHERE b.key = h.concurrency_key), 0) AS place
    FROM heads AS h
    LEFT JOIN "durable".task_queue_key AS turn ON turn.queue = $1 AND turn.key = h.concurrency_key
    UNION ALL
    SELECT u.id, u.priority, u.run_at, NULL, 1 FROM unkeyed AS u
)
SELECT ordered.place FROM (
    SELECT r.id, row_number() OVER (ORDER BY r.priority DESC, r.place, greatest(r.run_at, r.last_started), r.id)
               AS place
    FROM ranked AS r
) AS ordered
WHERE ordered.id = $4;

-- name: next_due
-- from: queue::NEXT_DUE
SELECT extract(epoch FROM least(
    (SELECT min(t.run_at) FROM "durable".task AS t
     WHERE t.status = 'scheduled' AND t.parent_id IS NULL AND t.run_at > now() - make_interval(secs => $3)
       AND t.run_at < 'infinity'
       AND t.workflow = ANY($1) AND (t.version IS NULL OR t.version = $2)),
    (SELECT min(full_until.at) FROM (
        SELECT max(w.oldest + r.period) AS at
        FROM "durable".task_queue_rate AS r
        CROSS JOIN LATERAL (
            SELECT min(s.started_at) AS oldest, count(*) AS n FROM "durable".task_queue_start AS s
            WHERE s.queue = r.queue AND s.started_at > now() - r.period
        ) AS w
        WHERE w.n >= r.max_starts
          AND EXISTS (SELECT 1 FROM "durable".task AS t
                      WHERE t.queue = r.queue AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL
                        AND t.run_at <= now() AND t.workflow = ANY($1)
                        AND (t.version IS NULL OR t.version = $2))
        GROUP BY r.queue) AS full_until)
) - now())::float8 AS due_in;

-- name: resume
-- from: queue::RESUME
WITH root AS (
    UPDATE "durable".task AS t
    SET status = CASE WHEN t.workflow IS NOT NULL THEN 'queued' ELSE 'failed' END,
        owner_id = NULL, error = NULL, completed_at = NULL, recoveries = 0, isolated = false, run_at = now(),
        updated_at = now(), waiting = NULL, waiting_on = NULL
    WHERE t.parent_id IS NULL AND t.name = $1 AND t.status IN ('failed', 'cancelled')
    RETURNING t.id, t.queue, t.workflow
), children AS (
    UPDATE "durable".task AS t SET status = 'running', owner_id = NULL, completed_at = NULL, updated_at = now()
    FROM root
    WHERE t.root_id = root.id AND t.id <> root.id AND t.kind = 'workflow' AND t.status = 'cancelled'
)
SELECT id, CASE WHEN workflow IS NOT NULL
                THEN left(pg_notify('durable', $2::text || ' queued ' || coalesce(queue, ''))::text, 0) END
FROM root;

-- name: schedule_register
-- from: queue::schedule::REGISTER
WITH forgotten AS (
                 DELETE FROM "durable".task_schedule_spec
                 WHERE workflow = $1 AND spec <> $2 AND seen_at < now() - make_interval(secs => $4::float8)
                 RETURNING spec
             ), registered AS (
                 INSERT INTO "durable".task_schedule_spec AS x (workflow, spec, next_tick) VALUES ($1, $2, ('epoch'::timestamptz + $3::int8 * interval '1 microsecond'))
                 ON CONFLICT (workflow, spec) DO UPDATE SET seen_at = now()
                 RETURNING x.next_tick
             )
             SELECT (extract(epoch FROM next_tick) * 1000000)::int8 AS next_tick, (extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS now, ARRAY(SELECT spec FROM forgotten ORDER BY spec) AS forgotten
             FROM registered;

-- name: schedule_read
-- from: queue::schedule::READ
SELECT (extract(epoch FROM next_tick) * 1000000)::int8 AS next_tick, (extract(epoch FROM clock_timestamp()) * 1000000)::int8 AS now FROM "durable".task_schedule_spec WHERE workflow = $1 AND spec = $2;

-- name: schedule_advance
-- from: queue::schedule::ADVANCE
WITH advanced AS (
                 UPDATE "durable".task_schedule_spec SET next_tick = ('epoch'::timestamptz + $3::int8 * interval '1 microsecond'), seen_at = now()
                 WHERE workflow = $1 AND spec = $8 AND next_tick = ('epoch'::timestamptz + $2::int8 * interval '1 microsecond') AND next_tick <= clock_timestamp()
                 RETURNING workflow
             ), queue AS (
                 INSERT INTO "durable".task_queue (name) SELECT $6 FROM advanced ON CONFLICT (name) DO NOTHING
             ), runs AS (
                 INSERT INTO "durable".task AS t (id, parent_id, root_id, kind, name, status, input, workflow, queue,
                                             run_at, lease_epoch)
                 SELECT r.id, NULL, r.id, 'workflow', r.name, 'queued', r.input, $1, $6, now(), 0
                 FROM (SELECT nextval('"durable".task_id_seq') AS id, u.name, u.input
                       FROM unnest($4::text[], $5::jsonb[]) AS u(name, input)) AS r, advanced
                 ON CONFLICT (name) WHERE parent_id IS NULL DO NOTHING
                 RETURNING t.id
             )
             SELECT (SELECT count(*) FROM advanced) AS advanced,
                    (SELECT left(pg_notify('durable', $7::text || ' queued ' || $6)::text, 0)
                     WHERE EXISTS (SELECT 1 FROM runs)) AS notify;

-- name: recovery_pass
-- from: queue::recovery::RECOVERY_PASS
WITH RECURSIVE lost AS (
    SELECT o.id, o.backend_pid FROM "durable".owner AS o
    WHERE o.session_lost_at IS NULL AND o.expires_at > now() AND NOT EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start))
      AND EXISTS (SELECT 1 FROM "durable".task AS t
                  WHERE t.owner_id = o.id AND t.parent_id IS NULL
                    AND ((t.status = 'running' AND t.workflow = ANY($1))
                         OR (t.status = 'cancelled' AND t.queue IS NOT NULL)))
), marked AS (
    UPDATE "durable".owner AS o SET session_lost_at = now()
    FROM lost
    WHERE o.id = lost.id AND o.backend_pid = lost.backend_pid AND o.session_lost_at IS NULL
), dead AS (
    SELECT t.id,
           NOT EXISTS (SELECT 1 FROM "durable".task AS x
                       WHERE x.owner_id = t.owner_id AND x.status = 'running' AND x.workflow IS NOT NULL
                         AND x.parent_id IS NULL AND x.id <> t.id) AS alone
    FROM "durable".task AS t LEFT JOIN "durable".owner AS o ON o.id = t.owner_id
    WHERE t.status = 'running' AND t.parent_id IS NULL AND t.workflow = ANY($1)
      AND (o.id IS NULL OR o.expires_at <= now()
           OR (o.session_lost_at <= now() - o.session_grace AND NOT EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start))))
    ORDER BY t.id
    LIMIT 1000
    FOR UPDATE OF t SKIP LOCKED
), recovered AS (
    UPDATE "durable".task AS t
    SET status = CASE WHEN d.alone AND t.recoveries >= $2 THEN 'failed' ELSE 'queued' END,
        owner_id = NULL, run_at = now(), updated_at = now(), waiting = NULL, waiting_on = NULL,
        recoveries = t.recoveries + CASE WHEN d.alone THEN 1 ELSE 0 END,
        isolated = t.isolated OR NOT d.alone,
        completed_at = CASE WHEN d.alone AND t.recoveries >= $2 THEN now() END,
        error = CASE WHEN d.alone AND t.recoveries >= $2 THEN jsonb_build_object(
            'type', 'TooManyRecoveries', 'module', 'durable.errors',
            'message', format('workflow %s was running alone in an executor that died, %s times: it is failed '
                              'so that it stops taking executors down with it (max_recoveries=%s). Fix the '
                              'cause, then resume it', t.name, t.recoveries + 1, $2),
            'traceback', '') ELSE t.error END
    FROM dead AS d WHERE t.id = d.id
    RETURNING t.status, t.queue, t.isolated
), freed AS (
    UPDATE "durable".task AS t SET owner_id = NULL, updated_at = now()
    WHERE t.status = 'cancelled' AND t.owner_id IS NOT NULL AND t.queue IS NOT NULL AND t.parent_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM "durable".owner AS o
                      WHERE o.id = t.owner_id AND o.expires_at > now()
                        AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace
                             OR EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start))))
    RETURNING t.queue
), orphans AS (
    UPDATE "durable".task AS t
    SET status = 'queued', owner_id = NULL, run_at = now(), updated_at = now(), waiting = NULL, waiting_on = NULL
    WHERE t.owner_id = $4::text::uuid AND t.status = 'running' AND t.workflow IS NOT NULL AND t.parent_id IS NULL
      AND NOT t.name = ANY($5::text[])
    RETURNING t.id, t.queue
), orphan_children AS (
    UPDATE "durable".task AS t SET owner_id = NULL, updated_at = now()
    FROM orphans AS o
    WHERE t.root_id = o.id AND t.id <> o.id AND t.kind = 'workflow' AND t.status = 'running'
      AND t.owner_id = $4::text::uuid
), forgotten AS (
    DELETE FROM "durable".task_queue_key WHERE last_started < now() - interval '1 day'
), queues(name) AS (
    SELECT min(queue) FROM "durable".task WHERE status IN ('queued', 'scheduled') AND parent_id IS NULL
    UNION ALL
    SELECT (SELECT min(t.queue) FROM "durable".task AS t
            WHERE t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL AND t.queue > queues.name)
    FROM queues WHERE queues.name IS NOT NULL
), changed AS (
    SELECT status AS kind, queue FROM recovered
    UNION ALL SELECT 'freed', queue FROM freed
    UNION ALL SELECT 'orphan', queue FROM orphans
)
SELECT CASE WHEN kind = 'queued' THEN 'requeued' ELSE kind END AS kind,
       left(pg_notify('durable', $3::text || ' queued ' || coalesce(queue, ''))::text, 0) AS value
FROM changed
UNION ALL
SELECT 'queue', name FROM queues WHERE name IS NOT NULL
UNION ALL
SELECT 'isolated', NULL WHERE EXISTS (SELECT 1 FROM recovered WHERE isolated AND status = 'queued') OR EXISTS (
    SELECT 1 FROM "durable".task AS t
    WHERE t.isolated AND t.status IN ('queued', 'scheduled') AND t.parent_id IS NULL AND t.run_at <= now()
      AND t.workflow = ANY($1) AND (t.version IS NULL OR t.version = $6)
      AND NOT EXISTS (SELECT 1 FROM "durable".task_queue AS q WHERE q.name = t.queue AND q.paused));

-- name: register_executor
-- from: queue::executors::REGISTER_EXECUTOR
INSERT INTO "durable".executor (owner_id, id, workflows, version) VALUES ($1::text::uuid, $2, $3, $4)
ON CONFLICT (owner_id, id) DO UPDATE SET workflows = EXCLUDED.workflows, version = EXCLUDED.version;

-- name: unregister_executor
-- from: queue::executors::UNREGISTER_EXECUTOR
DELETE FROM "durable".executor WHERE owner_id = $1::text::uuid AND id = $2;

-- name: cancel
-- from: admin::cancel::CANCEL
WITH RECURSIVE path(id, depth) AS (
    SELECT id, 1 FROM "durable".task WHERE parent_id IS NULL AND name = ($1::text[])[1]
    UNION ALL
    SELECT c.id, path.depth + 1 FROM path
    JOIN "durable".task AS c ON c.parent_id = path.id AND c.name = ($1::text[])[path.depth + 1]
    WHERE c.kind = 'workflow'
), scope(id) AS (
    SELECT id FROM path WHERE depth = cardinality($1::text[])
    UNION
    SELECT reached.id FROM scope, LATERAL (
        SELECT c.id FROM "durable".task AS c
        WHERE $3::bool AND c.parent_id = scope.id AND c.kind = 'workflow'
        UNION ALL
        SELECT e.id FROM "durable".task AS e
        WHERE $4::bool AND e.enqueued_by = scope.id AND e.parent_id IS NULL
    ) AS reached
), cancelled AS (
    UPDATE "durable".task AS t
    SET status = 'cancelled', completed_at = now(), updated_at = now()
    FROM scope
    WHERE t.id = scope.id AND t.kind = 'workflow'
      AND t.status IN ('pending', 'queued', 'scheduled', 'running', 'failed')
    RETURNING t.id, t.root_id, (t.parent_id IS NULL) AS is_root
), trees AS (
    SELECT root_id, bool_or(is_root) AND $3::bool AS whole FROM cancelled GROUP BY root_id
), root AS (
    -- The roots that go on while part of their tree was cancelled (not
    -- one updated above: a row is updated once per statement).
    SELECT DISTINCT c.root_id AS id FROM cancelled AS c
    WHERE NOT EXISTS (SELECT 1 FROM cancelled AS r WHERE r.id = c.root_id)
), woken AS (
    UPDATE "durable".task AS t
    SET wake_pending = t.wake_pending OR t.status = 'running',
        status = CASE WHEN t.status IN ('queued', 'scheduled') AND t.waiting IS NOT NULL
                      THEN 'queued' ELSE t.status END,
        run_at = CASE WHEN t.status IN ('queued', 'scheduled') AND t.waiting IS NOT NULL
                      THEN now() ELSE t.run_at END,
        updated_at = now()
    FROM root
    WHERE t.id = root.id AND t.parent_id IS NULL AND t.status IN ('queued', 'scheduled', 'running')
    RETURNING t.queue, (t.status = 'queued' AND t.waiting IS NOT NULL) AS made_due, t.wake_pending AS pending
)
SELECT c.id, c.root_id, trees.whole,
       pg_notify('durable', $2::text || CASE WHEN trees.whole THEN ' cancel ' ELSE ' cancel-part ' END
                            || c.root_id) IS NULL AS notify,  -- evaluated for its effect
       (SELECT count(pg_notify('durable', $2::text || ' queued ' || coalesce(queue, '')))
        FROM woken WHERE made_due) AS woken
FROM cancelled AS c JOIN trees ON trees.root_id = c.root_id;

-- name: cancelled_in_tree
-- from: admin::cancel::CANCELLED_IN_TREE
SELECT id FROM "durable".task WHERE root_id = $1 AND kind = 'workflow' AND status = 'cancelled';

-- name: fork
-- from: admin::fork::FORK
WITH RECURSIVE source AS (
    SELECT * FROM "durable".task WHERE parent_id IS NULL AND name = $1
), cut AS (
    SELECT s.id FROM "durable".task AS s, source
    WHERE s.parent_id = source.id AND s.name = $3
    UNION ALL
    SELECT 0 WHERE $3::text IS NULL
), kept AS (
    SELECT t.id FROM "durable".task AS t, source, cut
    WHERE t.parent_id = source.id AND t.id < cut.id AND t.status = 'completed'
    UNION ALL
    SELECT t.id FROM "durable".task AS t JOIN kept ON t.parent_id = kept.id
), fresh AS (
    SELECT nextval('"durable".task_id_seq') AS id
), mapping AS (
    -- New ids in the order of the old ones: the copies keep the order in
    -- which their originals first ran.
    SELECT ordered.id AS old, nextval('"durable".task_id_seq') AS new
    FROM (SELECT id FROM kept ORDER BY id) AS ordered
), forked AS (
    INSERT INTO "durable".task (id, parent_id, root_id, kind, name, status, input, workflow, queue, priority,
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
    INSERT INTO "durable".task (id, parent_id, root_id, kind, name, status, input, output, error, attempt,
                          created_at, started_at, completed_at, waiting)
    SELECT m.new, coalesce(parent.new, forked.id), forked.id, t.kind, t.name, t.status, t.input, t.output,
           t.error, t.attempt, t.created_at, t.started_at, t.completed_at,
           CASE WHEN t.kind = 'step' THEN t.waiting END
    FROM mapping AS m
    JOIN "durable".task AS t ON t.id = m.old
    LEFT JOIN mapping AS parent ON parent.old = t.parent_id
    CROSS JOIN forked
    RETURNING id
), history AS (
    -- (Its foreign key is checked at the statement's end, when the copies exist.)
    INSERT INTO "durable".task_attempt (task_id, attempt, status, started_at, ended_at, replaced_at, error)
    SELECT m.new, a.attempt, a.status, a.started_at, a.ended_at, a.replaced_at, a.error
    FROM mapping AS m
    JOIN "durable".task_attempt AS a ON a.task_id = m.old
    CROSS JOIN forked
)
SELECT EXISTS (SELECT 1 FROM source) AS found, EXISTS (SELECT 1 FROM cut) AS cut,
       (SELECT status FROM forked) AS status, (SELECT count(*) FROM copied) AS copied,
       (SELECT left(pg_notify('durable', $5::text || ' queued ' || coalesce(queue, ''))::text, 0)
        FROM forked WHERE status = 'queued') AS notified;

-- name: gc
-- from: admin::gc::GC
WITH doomed AS (
    SELECT id FROM "durable".task
    WHERE parent_id IS NULL AND status IN ('completed', 'failed', 'cancelled')
      AND completed_at < now() - make_interval(secs => $1::float8)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM "durable".task AS t USING doomed WHERE t.root_id = doomed.id
    RETURNING t.parent_id IS NULL AS is_root
)
SELECT count(*) FILTER (WHERE is_root) AS roots FROM deleted;

-- name: list_runs
-- from: read::runs::LIST
SELECT t.id, t.parent_id, t.kind, t.name, t.status, t.workflow, t.queue, t.input, t.output, t.error, t.attempt, t.recoveries,
       t.priority, t.concurrency_key, t.version, t.created_at, t.started_at, t.completed_at, t.run_at,
       CASE
       WHEN t.status = 'running' THEN t.waiting ->> 'detail'
       WHEN t.status NOT IN ('queued', 'scheduled') THEN NULL
       WHEN t.waiting IS NOT NULL AND (t.run_at IS NULL OR t.run_at > now()) THEN t.waiting ->> 'detail'
       WHEN t.run_at > now() THEN
           'delayed until ' || CASE WHEN isfinite(t.run_at)
                                    THEN to_char(t.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                                    ELSE 'infinity' END
       WHEN (SELECT paused FROM "durable".task_queue WHERE name = t.queue) THEN format('queue %s is paused', t.queue)
       WHEN NOT EXISTS (
           SELECT 1 FROM "durable".executor AS e JOIN "durable".owner AS o ON o.id = e.owner_id
           WHERE t.workflow = ANY(e.workflows) AND o.expires_at > now()
             AND (t.version IS NULL OR t.version IS NOT DISTINCT FROM e.version)
             AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace OR EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start)))) THEN
           format('no live executor has registered its function %s%s', coalesce(t.workflow, '(none: started by hand)'),
                  CASE WHEN t.version IS NOT NULL THEN ' at version ' || t.version ELSE '' END)
       WHEN t.isolated THEN
           'waiting to run alone on an executor that holds no other run: it was recovered from an executor that '
           'died while running it with others'
       WHEN rate.until IS NOT NULL THEN
           'rate limit until ' || to_char(rate.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
       WHEN q.max_concurrency IS NOT NULL AND running.n >= q.max_concurrency THEN
           format('concurrency full (%s running)', running.n)
       WHEN t.concurrency_key IS NOT NULL AND q.concurrency_per_key IS NOT NULL
            AND keyed.n + keyed.before >= q.concurrency_per_key THEN
           format('key limit: %s runs of key %s running', keyed.n, t.concurrency_key)
           || CASE WHEN keyed.before > 0 THEN format(' and %s due before it', keyed.before) ELSE '' END
       ELSE 'ready: waiting for its turn'
       END AS waiting_for
FROM "durable".task AS t
LEFT JOIN "durable".task_queue AS q ON q.name = t.queue
LEFT JOIN LATERAL (
    SELECT count(*)::int AS n FROM "durable".task AS r
    WHERE r.queue = t.queue AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL)) AND r.queue IS NOT NULL AND r.parent_id IS NULL
) AS running ON t.status IN ('queued', 'scheduled')
LEFT JOIN LATERAL (
    SELECT (SELECT count(*)::int FROM "durable".task AS r
            WHERE r.queue = t.queue AND r.concurrency_key = t.concurrency_key AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL))
              AND r.queue IS NOT NULL AND r.parent_id IS NULL) AS n,
           (SELECT count(*)::int FROM (
                SELECT 1 FROM "durable".task AS w
                WHERE w.queue = t.queue AND w.concurrency_key = t.concurrency_key
                  AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
                  AND w.run_at <= now() AND NOT w.isolated
                  AND (w.priority > t.priority OR (w.priority = t.priority AND (w.run_at, w.id) < (t.run_at, t.id)))
                LIMIT q.concurrency_per_key) AS earlier) AS before
) AS keyed ON t.status IN ('queued', 'scheduled') AND t.concurrency_key IS NOT NULL
LEFT JOIN LATERAL (
    SELECT max(w.oldest + w.period) AS until FROM (
        SELECT r.period, min(s.started_at) AS oldest, count(s.*) AS starts, r.max_starts
        FROM "durable".task_queue_rate AS r
        LEFT JOIN "durable".task_queue_start AS s ON s.queue = r.queue AND s.started_at > now() - r.period
        WHERE r.queue = t.queue
        GROUP BY r.period, r.max_starts
    ) AS w
    WHERE w.starts >= w.max_starts
) AS rate ON t.status IN ('queued', 'scheduled')
                 WHERE t.parent_id IS NULL
                   AND ($1::text IS NULL OR t.status = $1) AND ($2::text IS NULL OR t.queue = $2)
                   AND ($3::text IS NULL OR starts_with(t.name, $3))
                   AND ($4::int8 IS NULL OR t.created_at >= 'epoch'::timestamptz + $4 * interval '1 microsecond')
                 ORDER BY t.id DESC
                 LIMIT $5;

-- name: run_info
-- from: read::runs::GET
WITH RECURSIVE path(id, depth) AS (
    SELECT id, 1 FROM "durable".task WHERE parent_id IS NULL AND name = ($1::text[])[1]
    UNION ALL
    SELECT c.id, path.depth + 1 FROM path
    JOIN "durable".task AS c ON c.parent_id = path.id AND c.name = ($1::text[])[path.depth + 1]
    WHERE c.kind = 'workflow'
)
                 
SELECT t.id, t.parent_id, t.kind, t.name, t.status, t.workflow, t.queue, t.input, t.output, t.error, t.attempt, t.recoveries,
       t.priority, t.concurrency_key, t.version, t.created_at, t.started_at, t.completed_at, t.run_at,
       CASE
       WHEN t.status = 'running' THEN t.waiting ->> 'detail'
       WHEN t.status NOT IN ('queued', 'scheduled') THEN NULL
       WHEN t.waiting IS NOT NULL AND (t.run_at IS NULL OR t.run_at > now()) THEN t.waiting ->> 'detail'
       WHEN t.run_at > now() THEN
           'delayed until ' || CASE WHEN isfinite(t.run_at)
                                    THEN to_char(t.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                                    ELSE 'infinity' END
       WHEN (SELECT paused FROM "durable".task_queue WHERE name = t.queue) THEN format('queue %s is paused', t.queue)
       WHEN NOT EXISTS (
           SELECT 1 FROM "durable".executor AS e JOIN "durable".owner AS o ON o.id = e.owner_id
           WHERE t.workflow = ANY(e.workflows) AND o.expires_at > now()
             AND (t.version IS NULL OR t.version IS NOT DISTINCT FROM e.version)
             AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace OR EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start)))) THEN
           format('no live executor has registered its function %s%s', coalesce(t.workflow, '(none: started by hand)'),
                  CASE WHEN t.version IS NOT NULL THEN ' at version ' || t.version ELSE '' END)
       WHEN t.isolated THEN
           'waiting to run alone on an executor that holds no other run: it was recovered from an executor that '
           'died while running it with others'
       WHEN rate.until IS NOT NULL THEN
           'rate limit until ' || to_char(rate.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
       WHEN q.max_concurrency IS NOT NULL AND running.n >= q.max_concurrency THEN
           format('concurrency full (%s running)', running.n)
       WHEN t.concurrency_key IS NOT NULL AND q.concurrency_per_key IS NOT NULL
            AND keyed.n + keyed.before >= q.concurrency_per_key THEN
           format('key limit: %s runs of key %s running', keyed.n, t.concurrency_key)
           || CASE WHEN keyed.before > 0 THEN format(' and %s due before it', keyed.before) ELSE '' END
       ELSE 'ready: waiting for its turn'
       END AS waiting_for
FROM "durable".task AS t
LEFT JOIN "durable".task_queue AS q ON q.name = t.queue
LEFT JOIN LATERAL (
    SELECT count(*)::int AS n FROM "durable".task AS r
    WHERE r.queue = t.queue AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL)) AND r.queue IS NOT NULL AND r.parent_id IS NULL
) AS running ON t.status IN ('queued', 'scheduled')
LEFT JOIN LATERAL (
    SELECT (SELECT count(*)::int FROM "durable".task AS r
            WHERE r.queue = t.queue AND r.concurrency_key = t.concurrency_key AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL))
              AND r.queue IS NOT NULL AND r.parent_id IS NULL) AS n,
           (SELECT count(*)::int FROM (
                SELECT 1 FROM "durable".task AS w
                WHERE w.queue = t.queue AND w.concurrency_key = t.concurrency_key
                  AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
                  AND w.run_at <= now() AND NOT w.isolated
                  AND (w.priority > t.priority OR (w.priority = t.priority AND (w.run_at, w.id) < (t.run_at, t.id)))
                LIMIT q.concurrency_per_key) AS earlier) AS before
) AS keyed ON t.status IN ('queued', 'scheduled') AND t.concurrency_key IS NOT NULL
LEFT JOIN LATERAL (
    SELECT max(w.oldest + w.period) AS until FROM (
        SELECT r.period, min(s.started_at) AS oldest, count(s.*) AS starts, r.max_starts
        FROM "durable".task_queue_rate AS r
        LEFT JOIN "durable".task_queue_start AS s ON s.queue = r.queue AND s.started_at > now() - r.period
        WHERE r.queue = t.queue
        GROUP BY r.period, r.max_starts
    ) AS w
    WHERE w.starts >= w.max_starts
) AS rate ON t.status IN ('queued', 'scheduled')
                 WHERE t.id = (SELECT id FROM path WHERE depth = cardinality($1::text[]));

-- name: tree
-- from: read::tree::TREE
WITH RECURSIVE path(id, depth) AS (
    SELECT id, 1 FROM "durable".task WHERE parent_id IS NULL AND name = ($1::text[])[1]
    UNION ALL
    SELECT c.id, path.depth + 1 FROM path
    JOIN "durable".task AS c ON c.parent_id = path.id AND c.name = ($1::text[])[path.depth + 1]
    WHERE c.kind = 'workflow'
), sub(id) AS (
             SELECT id FROM path WHERE depth = cardinality($1::text[])
             UNION ALL
             SELECT c.id FROM sub JOIN "durable".task AS c ON c.parent_id = sub.id
         )
         
SELECT t.id, t.parent_id, t.kind, t.name, t.status, t.workflow, t.queue, t.input, t.output, t.error, t.attempt, t.recoveries,
       t.priority, t.concurrency_key, t.version, t.created_at, t.started_at, t.completed_at, t.run_at,
       CASE
       WHEN t.status = 'running' THEN t.waiting ->> 'detail'
       WHEN t.status NOT IN ('queued', 'scheduled') THEN NULL
       WHEN t.waiting IS NOT NULL AND (t.run_at IS NULL OR t.run_at > now()) THEN t.waiting ->> 'detail'
       WHEN t.run_at > now() THEN
           'delayed until ' || CASE WHEN isfinite(t.run_at)
                                    THEN to_char(t.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                                    ELSE 'infinity' END
       WHEN (SELECT paused FROM "durable".task_queue WHERE name = t.queue) THEN format('queue %s is paused', t.queue)
       WHEN NOT EXISTS (
           SELECT 1 FROM "durable".executor AS e JOIN "durable".owner AS o ON o.id = e.owner_id
           WHERE t.workflow = ANY(e.workflows) AND o.expires_at > now()
             AND (t.version IS NULL OR t.version IS NOT DISTINCT FROM e.version)
             AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace OR EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start)))) THEN
           format('no live executor has registered its function %s%s', coalesce(t.workflow, '(none: started by hand)'),
                  CASE WHEN t.version IS NOT NULL THEN ' at version ' || t.version ELSE '' END)
       WHEN t.isolated THEN
           'waiting to run alone on an executor that holds no other run: it was recovered from an executor that '
           'died while running it with others'
       WHEN rate.until IS NOT NULL THEN
           'rate limit until ' || to_char(rate.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
       WHEN q.max_concurrency IS NOT NULL AND running.n >= q.max_concurrency THEN
           format('concurrency full (%s running)', running.n)
       WHEN t.concurrency_key IS NOT NULL AND q.concurrency_per_key IS NOT NULL
            AND keyed.n + keyed.before >= q.concurrency_per_key THEN
           format('key limit: %s runs of key %s running', keyed.n, t.concurrency_key)
           || CASE WHEN keyed.before > 0 THEN format(' and %s due before it', keyed.before) ELSE '' END
       ELSE 'ready: waiting for its turn'
       END AS waiting_for
FROM "durable".task AS t
LEFT JOIN "durable".task_queue AS q ON q.name = t.queue
LEFT JOIN LATERAL (
    SELECT count(*)::int AS n FROM "durable".task AS r
    WHERE r.queue = t.queue AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL)) AND r.queue IS NOT NULL AND r.parent_id IS NULL
) AS running ON t.status IN ('queued', 'scheduled')
LEFT JOIN LATERAL (
    SELECT (SELECT count(*)::int FROM "durable".task AS r
            WHERE r.queue = t.queue AND r.concurrency_key = t.concurrency_key AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL))
              AND r.queue IS NOT NULL AND r.parent_id IS NULL) AS n,
           (SELECT count(*)::int FROM (
                SELECT 1 FROM "durable".task AS w
                WHERE w.queue = t.queue AND w.concurrency_key = t.concurrency_key
                  AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
                  AND w.run_at <= now() AND NOT w.isolated
                  AND (w.priority > t.priority OR (w.priority = t.priority AND (w.run_at, w.id) < (t.run_at, t.id)))
                LIMIT q.concurrency_per_key) AS earlier) AS before
) AS keyed ON t.status IN ('queued', 'scheduled') AND t.concurrency_key IS NOT NULL
LEFT JOIN LATERAL (
    SELECT max(w.oldest + w.period) AS until FROM (
        SELECT r.period, min(s.started_at) AS oldest, count(s.*) AS starts, r.max_starts
        FROM "durable".task_queue_rate AS r
        LEFT JOIN "durable".task_queue_start AS s ON s.queue = r.queue AND s.started_at > now() - r.period
        WHERE r.queue = t.queue
        GROUP BY r.period, r.max_starts
    ) AS w
    WHERE w.starts >= w.max_starts
) AS rate ON t.status IN ('queued', 'scheduled')
         JOIN sub ON sub.id = t.id
         ORDER BY t.id;

-- name: list_queues
-- from: read::queues::LIST_QUEUES
SELECT q.name, q.paused, q.max_concurrency, q.concurrency_per_key,
       (SELECT count(*) FROM "durable".task AS r
        WHERE r.queue = q.name AND r.status = 'running' AND r.parent_id IS NULL) AS running,
       (SELECT count(*) FROM "durable".task AS w
        WHERE w.queue = q.name AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
          AND coalesce(w.run_at <= now(), true)) AS queued,
       (SELECT count(*) FROM "durable".task AS w
        WHERE w.queue = q.name AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
          AND w.run_at > now()) AS delayed,
       (SELECT min(coalesce(w.run_at, w.created_at)) FROM "durable".task AS w
        WHERE w.queue = q.name AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
          AND coalesce(w.run_at <= now(), true)) AS oldest_due,
       ARRAY(SELECT r.max_starts FROM "durable".task_queue_rate AS r WHERE r.queue = q.name ORDER BY r.period)
           AS rate_max,
       ARRAY(SELECT extract(epoch FROM r.period)::float8 FROM "durable".task_queue_rate AS r
             WHERE r.queue = q.name ORDER BY r.period) AS rate_period,
       ARRAY(SELECT (SELECT count(*) FROM "durable".task_queue_start AS s
                     WHERE s.queue = r.queue AND s.started_at > now() - r.period)
             FROM "durable".task_queue_rate AS r WHERE r.queue = q.name ORDER BY r.period) AS rate_used
FROM "durable".task_queue AS q
ORDER BY q.name;

-- name: ui_page
-- from: read::ui::PAGE
SELECT t.id, t.parent_id, t.kind, t.name, t.status, t.workflow, t.queue, t.input, t.output, t.error, t.attempt, t.recoveries,
       t.priority, t.concurrency_key, t.version, t.created_at, t.started_at, t.completed_at, t.run_at,
       CASE
       WHEN t.status = 'running' THEN t.waiting ->> 'detail'
       WHEN t.status NOT IN ('queued', 'scheduled') THEN NULL
       WHEN t.waiting IS NOT NULL AND (t.run_at IS NULL OR t.run_at > now()) THEN t.waiting ->> 'detail'
       WHEN t.run_at > now() THEN
           'delayed until ' || CASE WHEN isfinite(t.run_at)
                                    THEN to_char(t.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                                    ELSE 'infinity' END
       WHEN (SELECT paused FROM "durable".task_queue WHERE name = t.queue) THEN format('queue %s is paused', t.queue)
       WHEN NOT EXISTS (
           SELECT 1 FROM "durable".executor AS e JOIN "durable".owner AS o ON o.id = e.owner_id
           WHERE t.workflow = ANY(e.workflows) AND o.expires_at > now()
             AND (t.version IS NULL OR t.version IS NOT DISTINCT FROM e.version)
             AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace OR EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start)))) THEN
           format('no live executor has registered its function %s%s', coalesce(t.workflow, '(none: started by hand)'),
                  CASE WHEN t.version IS NOT NULL THEN ' at version ' || t.version ELSE '' END)
       WHEN t.isolated THEN
           'waiting to run alone on an executor that holds no other run: it was recovered from an executor that '
           'died while running it with others'
       WHEN rate.until IS NOT NULL THEN
           'rate limit until ' || to_char(rate.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
       WHEN q.max_concurrency IS NOT NULL AND running.n >= q.max_concurrency THEN
           format('concurrency full (%s running)', running.n)
       WHEN t.concurrency_key IS NOT NULL AND q.concurrency_per_key IS NOT NULL
            AND keyed.n + keyed.before >= q.concurrency_per_key THEN
           format('key limit: %s runs of key %s running', keyed.n, t.concurrency_key)
           || CASE WHEN keyed.before > 0 THEN format(' and %s due before it', keyed.before) ELSE '' END
       ELSE 'ready: waiting for its turn'
       END AS waiting_for
FROM "durable".task AS t
LEFT JOIN "durable".task_queue AS q ON q.name = t.queue
LEFT JOIN LATERAL (
    SELECT count(*)::int AS n FROM "durable".task AS r
    WHERE r.queue = t.queue AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL)) AND r.queue IS NOT NULL AND r.parent_id IS NULL
) AS running ON t.status IN ('queued', 'scheduled')
LEFT JOIN LATERAL (
    SELECT (SELECT count(*)::int FROM "durable".task AS r
            WHERE r.queue = t.queue AND r.concurrency_key = t.concurrency_key AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL))
              AND r.queue IS NOT NULL AND r.parent_id IS NULL) AS n,
           (SELECT count(*)::int FROM (
                SELECT 1 FROM "durable".task AS w
                WHERE w.queue = t.queue AND w.concurrency_key = t.concurrency_key
                  AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
                  AND w.run_at <= now() AND NOT w.isolated
                  AND (w.priority > t.priority OR (w.priority = t.priority AND (w.run_at, w.id) < (t.run_at, t.id)))
                LIMIT q.concurrency_per_key) AS earlier) AS before
) AS keyed ON t.status IN ('queued', 'scheduled') AND t.concurrency_key IS NOT NULL
LEFT JOIN LATERAL (
    SELECT max(w.oldest + w.period) AS until FROM (
        SELECT r.period, min(s.started_at) AS oldest, count(s.*) AS starts, r.max_starts
        FROM "durable".task_queue_rate AS r
        LEFT JOIN "durable".task_queue_start AS s ON s.queue = r.queue AND s.started_at > now() - r.period
        WHERE r.queue = t.queue
        GROUP BY r.period, r.max_starts
    ) AS w
    WHERE w.starts >= w.max_starts
) AS rate ON t.status IN ('queued', 'scheduled')
                 WHERE (CASE WHEN $9::int8 IS NULL THEN t.parent_id IS NULL
         ELSE t.parent_id = $9 AND t.kind = 'workflow' END)
   AND ($8::int8 IS NULL OR t.id < $8)
   AND ($10::int8 IS NULL OR t.created_at < 'epoch'::timestamptz + $10 * interval '1 microsecond')
   AND ($2::text IS NULL OR t.queue = $2)
   AND ($6::text IS NULL OR t.workflow = $6)
   AND ($7::text IS NULL OR coalesce(t.input @@ $7::text::jsonpath, false))
   AND ($3::text IS NULL OR starts_with(t.name, $3))
   AND ($4::int8 IS NULL OR t.created_at >= 'epoch'::timestamptz + $4 * interval '1 microsecond') AND ($1::text IS NULL OR t.status = $1)
                 ORDER BY t.id DESC
                 LIMIT $5;

-- name: ui_resolve
-- from: read::ui::RESOLVE
WITH RECURSIVE path(id, depth) AS (
    SELECT id, 1 FROM "durable".task WHERE parent_id IS NULL AND name = ($1::text[])[1]
    UNION ALL
    SELECT c.id, path.depth + 1 FROM path
    JOIN "durable".task AS c ON c.parent_id = path.id AND c.name = ($1::text[])[path.depth + 1]
    WHERE c.kind = 'workflow'
) SELECT id FROM path WHERE depth = cardinality($1::text[]);

-- name: ui_named
-- from: read::ui::NAMED
SELECT t.id, t.parent_id, t.kind, t.name, t.status, t.workflow, t.queue, t.input, t.output, t.error, t.attempt, t.recoveries,
       t.priority, t.concurrency_key, t.version, t.created_at, t.started_at, t.completed_at, t.run_at,
       CASE
       WHEN t.status = 'running' THEN t.waiting ->> 'detail'
       WHEN t.status NOT IN ('queued', 'scheduled') THEN NULL
       WHEN t.waiting IS NOT NULL AND (t.run_at IS NULL OR t.run_at > now()) THEN t.waiting ->> 'detail'
       WHEN t.run_at > now() THEN
           'delayed until ' || CASE WHEN isfinite(t.run_at)
                                    THEN to_char(t.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                                    ELSE 'infinity' END
       WHEN (SELECT paused FROM "durable".task_queue WHERE name = t.queue) THEN format('queue %s is paused', t.queue)
       WHEN NOT EXISTS (
           SELECT 1 FROM "durable".executor AS e JOIN "durable".owner AS o ON o.id = e.owner_id
           WHERE t.workflow = ANY(e.workflows) AND o.expires_at > now()
             AND (t.version IS NULL OR t.version IS NOT DISTINCT FROM e.version)
             AND (o.session_lost_at IS NULL OR o.session_lost_at > now() - o.session_grace OR EXISTS (
    SELECT 1 FROM pg_stat_activity AS a
    WHERE a.pid = o.backend_pid
      AND (a.backend_start IS NULL OR o.backend_start IS NULL OR a.backend_start = o.backend_start)))) THEN
           format('no live executor has registered its function %s%s', coalesce(t.workflow, '(none: started by hand)'),
                  CASE WHEN t.version IS NOT NULL THEN ' at version ' || t.version ELSE '' END)
       WHEN t.isolated THEN
           'waiting to run alone on an executor that holds no other run: it was recovered from an executor that '
           'died while running it with others'
       WHEN rate.until IS NOT NULL THEN
           'rate limit until ' || to_char(rate.until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
       WHEN q.max_concurrency IS NOT NULL AND running.n >= q.max_concurrency THEN
           format('concurrency full (%s running)', running.n)
       WHEN t.concurrency_key IS NOT NULL AND q.concurrency_per_key IS NOT NULL
            AND keyed.n + keyed.before >= q.concurrency_per_key THEN
           format('key limit: %s runs of key %s running', keyed.n, t.concurrency_key)
           || CASE WHEN keyed.before > 0 THEN format(' and %s due before it', keyed.before) ELSE '' END
       ELSE 'ready: waiting for its turn'
       END AS waiting_for
FROM "durable".task AS t
LEFT JOIN "durable".task_queue AS q ON q.name = t.queue
LEFT JOIN LATERAL (
    SELECT count(*)::int AS n FROM "durable".task AS r
    WHERE r.queue = t.queue AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL)) AND r.queue IS NOT NULL AND r.parent_id IS NULL
) AS running ON t.status IN ('queued', 'scheduled')
LEFT JOIN LATERAL (
    SELECT (SELECT count(*)::int FROM "durable".task AS r
            WHERE r.queue = t.queue AND r.concurrency_key = t.concurrency_key AND (r.status = 'running' OR (r.status = 'cancelled' AND r.owner_id IS NOT NULL))
              AND r.queue IS NOT NULL AND r.parent_id IS NULL) AS n,
           (SELECT count(*)::int FROM (
                SELECT 1 FROM "durable".task AS w
                WHERE w.queue = t.queue AND w.concurrency_key = t.concurrency_key
                  AND w.status IN ('queued', 'scheduled') AND w.parent_id IS NULL
                  AND w.run_at <= now() AND NOT w.isolated
                  AND (w.priority > t.priority OR (w.priority = t.priority AND (w.run_at, w.id) < (t.run_at, t.id)))
                LIMIT q.concurrency_per_key) AS earlier) AS before
) AS keyed ON t.status IN ('queued', 'scheduled') AND t.concurrency_key IS NOT NULL
LEFT JOIN LATERAL (
    SELECT max(w.oldest + w.period) AS until FROM (
        SELECT r.period, min(s.started_at) AS oldest, count(s.*) AS starts, r.max_starts
        FROM "durable".task_queue_rate AS r
        LEFT JOIN "durable".task_queue_start AS s ON s.queue = r.queue AND s.started_at > now() - r.period
        WHERE r.queue = t.queue
        GROUP BY r.period, r.max_starts
    ) AS w
    WHERE w.starts >= w.max_starts
) AS rate ON t.status IN ('queued', 'scheduled') WHERE t.parent_id IS NULL AND t.name = ANY($1::text[]) ORDER BY t.id DESC;

-- name: ui_schedules
-- from: read::ui::SCHEDULES
SELECT workflow, spec, next_tick, seen_at FROM "durable".task_schedule_spec ORDER BY workflow, spec;

-- name: ui_ahead
-- from: read::ui::AHEAD
SELECT (SELECT count(*) FROM (
                             SELECT 1 FROM "durable".task AS w
                             WHERE w.queue = me.queue AND w.status IN ('queued', 'scheduled')
                               AND w.parent_id IS NULL AND w.run_at <= now()
                               AND (w.priority > me.priority
                                    OR w.priority = me.priority AND (w.run_at, w.id) < (me.run_at, me.id))
                             LIMIT $2) AS before)::int8 AS n
                 FROM "durable".task AS me
                 WHERE me.id = $1 AND me.parent_id IS NULL AND me.queue IS NOT NULL
                   AND me.status IN ('queued', 'scheduled');

-- name: ui_estimate
-- from: read::ui::ESTIMATE
SELECT greatest(c.reltuples, 0)::int8 AS n FROM pg_class AS c
                 WHERE c.oid = to_regclass('"durable".task_root_name');

-- name: ui_workflows
-- from: read::ui::WORKFLOWS
SELECT known.workflow FROM (
                     SELECT workflow FROM "durable".task_schedule_spec
                     UNION SELECT unnest(workflows) FROM "durable".executor
                     UNION SELECT recent.workflow FROM (
                         SELECT t.workflow FROM "durable".task AS t
                         WHERE t.parent_id IS NULL ORDER BY t.id DESC LIMIT $1) AS recent
                 ) AS known
                 WHERE known.workflow IS NOT NULL
                 ORDER BY known.workflow
                 LIMIT 1000;

-- name: ui_page_version
-- from: read::ui::PAGE_VERSION
SELECT md5(coalesce(string_agg(shown.id::text || ':' || shown.xmin::text, ',' ORDER BY shown.id), '')) AS digest FROM (
                    SELECT t.id, t.xmin FROM "durable".task AS t
                    WHERE (CASE WHEN $9::int8 IS NULL THEN t.parent_id IS NULL
         ELSE t.parent_id = $9 AND t.kind = 'workflow' END)
   AND ($8::int8 IS NULL OR t.id < $8)
   AND ($10::int8 IS NULL OR t.created_at < 'epoch'::timestamptz + $10 * interval '1 microsecond')
   AND ($2::text IS NULL OR t.queue = $2)
   AND ($6::text IS NULL OR t.workflow = $6)
   AND ($7::text IS NULL OR coalesce(t.input @@ $7::text::jsonpath, false))
   AND ($3::text IS NULL OR starts_with(t.name, $3))
   AND ($4::int8 IS NULL OR t.created_at >= 'epoch'::timestamptz + $4 * interval '1 microsecond') AND ($1::text IS NULL OR t.status = $1)
                    ORDER BY t.id DESC
                    LIMIT $5) AS shown;

-- name: ui_tree_version
-- from: read::ui::TREE_VERSION
SELECT count(*)::int8 AS n, md5(coalesce(string_agg(shown.id::text || ':' || shown.xmin::text, ',' ORDER BY shown.id), '')) AS digest FROM (
                    SELECT t.id, t.xmin FROM "durable".task AS t
                    WHERE t.root_id = (SELECT r.id FROM "durable".task AS r WHERE r.parent_id IS NULL AND r.name = $1)
                 ) AS shown;

-- name: ui_attempts
-- from: read::ui::ATTEMPTS
SELECT a.task_id, a.attempt, a.status, a.started_at, a.ended_at, a.replaced_at, a.error
                 FROM "durable".task_attempt AS a
                 WHERE a.task_id = ANY($1::int8[])
                 ORDER BY a.task_id, a.attempt;

-- name: ui_messages
-- from: read::ui::MESSAGES
SELECT m.task_id, m.topic, m.created_at AS sent_at, m.received_at, m.received_by
                 FROM "durable".task_message AS m
                 WHERE m.task_id = ANY($1::int8[])
                 ORDER BY m.id
                 LIMIT 1000;

-- name: ui_sleeps
-- from: read::ui::SLEEPS
SELECT t.id FROM "durable".task AS t
                 WHERE t.id = ANY($1::int8[]) AND t.kind = 'step' AND t.waiting ->> 'kind' = 'sleep'
                 ORDER BY t.id;

-- name: ui_value
-- from: read::ui::VALUE
SELECT CASE $2::text WHEN 'input' THEN t.input::text WHEN 'output' THEN t.output::text
                                      WHEN 'error' THEN t.error::text END AS value
                 FROM "durable".task AS t WHERE t.id = $1;

-- name: migration_lock
-- from: connect::migrate::LOCK
SELECT pg_advisory_xact_lock($1, hashtext($2));

-- name: migration_present
-- from: connect::migrate::PRESENT
SELECT to_regclass(format('%I.migration', $1::text)) IS NOT NULL AS present;

-- name: migration_version
-- from: connect::migrate::VERSION
SELECT coalesce(max(version), 0) AS version FROM "durable".migration;

-- name: migration_record
-- from: connect::migrate::RECORD
INSERT INTO "durable".migration (version, name) VALUES ($1, $2);

-- name: ui_counts
-- from: read::ui::COUNTS
-- note: one status of the status tabs; the ui sends one `COUNT` per status, `{i}` its place in `$1`
SELECT ARRAY[(SELECT count(*) FROM (
                     SELECT 1 FROM "durable".task AS t
                     WHERE (CASE WHEN $9::int8 IS NULL THEN t.parent_id IS NULL
         ELSE t.parent_id = $9 AND t.kind = 'workflow' END)
   AND ($8::int8 IS NULL OR t.id < $8)
   AND ($10::int8 IS NULL OR t.created_at < 'epoch'::timestamptz + $10 * interval '1 microsecond')
   AND ($2::text IS NULL OR t.queue = $2)
   AND ($6::text IS NULL OR t.workflow = $6)
   AND ($7::text IS NULL OR coalesce(t.input @@ $7::text::jsonpath, false))
   AND ($3::text IS NULL OR starts_with(t.name, $3))
   AND ($4::int8 IS NULL OR t.created_at >= 'epoch'::timestamptz + $4 * interval '1 microsecond') AND (($1::text[])[1] IS NULL OR t.status = ($1::text[])[1])
                     LIMIT $5) AS capped)]::int8[] AS n;
