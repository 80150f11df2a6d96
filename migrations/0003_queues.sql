-- durable schema, version 3: queued, scheduled and recovered execution.
-- Applied like version 1 (one transaction, search_path set).

-- The registered identity of the function that runs a root workflow
-- (`module.qualname`, or `@durable.workflow(name=...)`): executors resume
-- and claim only what they know. NULL for workflows run by hand (Ctx.start).
ALTER TABLE task ADD COLUMN workflow text CHECK (octet_length(workflow) <= 255);
-- Queued roots: higher runs first; among equals, keys are served in turn.
ALTER TABLE task ADD COLUMN priority integer NOT NULL DEFAULT 0;
-- Queued roots: at most the queue's concurrency_per_key run at once per key.
ALTER TABLE task ADD COLUMN concurrency_key text CHECK (octet_length(concurrency_key) <= 255);
-- Roots: how often a dead holder's run was taken back to be run again.
ALTER TABLE task ADD COLUMN recoveries integer NOT NULL DEFAULT 0;
-- Roots: only executors of this version resume it (NULL: any).
ALTER TABLE task ADD COLUMN version text CHECK (octet_length(version) <= 255);

-- Rate limits move to a table of their own (a queue may have several) and
-- per-key concurrency joins the queue's limits. Nothing wrote the old columns.
ALTER TABLE task_queue DROP COLUMN rate_limit, DROP COLUMN rate_period;
ALTER TABLE task_queue ADD COLUMN concurrency_per_key integer CHECK (concurrency_per_key > 0);

-- At most max_starts runs of the queue start in any window of length period.
CREATE TABLE task_queue_rate (
    queue       text NOT NULL REFERENCES task_queue (name) ON DELETE CASCADE,
    max_starts  integer NOT NULL CHECK (max_starts > 0),
    period      interval NOT NULL CHECK (period > interval '0'),
    PRIMARY KEY (queue, period)
);

-- When runs of rate-limited queues started, for the sliding windows; rows
-- older than the queue's longest period are pruned by the claims.
CREATE TABLE task_queue_start (
    queue       text NOT NULL,
    started_at  timestamptz NOT NULL
);
CREATE INDEX task_queue_start_window ON task_queue_start (queue, started_at);

-- Roots waiting for an executor, in claim order: a claim reads only these.
CREATE INDEX task_waiting ON task (queue, priority DESC, run_at, id)
    WHERE status IN ('queued', 'scheduled') AND parent_id IS NULL;
-- Roots running from a queue: the concurrency counts.
CREATE INDEX task_running_queue ON task (queue, concurrency_key)
    WHERE status = 'running' AND queue IS NOT NULL AND parent_id IS NULL;
-- Running roots with a registered function: what recovery looks at.
CREATE INDEX task_running_workflow ON task (owner_id)
    WHERE status = 'running' AND workflow IS NOT NULL AND parent_id IS NULL;
