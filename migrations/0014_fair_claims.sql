-- durable schema, version 14: queued execution that survives deploys,
-- crashes and bad neighbours. Applied like version 1.

-- Each executor of a process registers itself: several executors in one
-- process (one owner) keep their own functions and version. Gone with the
-- owner row. Replaces owner.workflows and owner.version, which one
-- executor's registration overwrote for the others.
CREATE TABLE executor (
    owner_id   uuid NOT NULL REFERENCES owner (id) ON DELETE CASCADE,
    id         bigint NOT NULL,                 -- the executor's number within its process
    workflows  text[] NOT NULL,                 -- the registered functions it runs
    version    text,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, id)
);
ALTER TABLE owner DROP COLUMN workflows, DROP COLUMN version;

-- Roots: recovered from a holder that died while other runs shared it, so
-- the crash may not be this run's: it runs alone (on an executor holding
-- nothing else) until it finishes, so that a crash is charged to the run
-- that causes it (`recoveries` counts only crashes of runs that ran alone).
ALTER TABLE task ADD COLUMN isolated boolean NOT NULL DEFAULT false;

-- A cancelled root keeps its queue slot while its holder still runs its
-- body (it clears owner_id when it stops), so the concurrency counts read
-- running roots and those.
DROP INDEX task_running_queue;
CREATE INDEX task_busy_queue ON task (queue, concurrency_key)
    WHERE (status = 'running' OR (status = 'cancelled' AND owner_id IS NOT NULL))
      AND queue IS NOT NULL AND parent_id IS NULL;

-- Waiting roots by key, in claim order within each key: a claim reads the
-- first runs of every key (a skip scan over the keys), so a key with a long
-- backlog cannot hide the others. Runs without a key sort last (NULL).
CREATE INDEX task_waiting_key ON task (queue, concurrency_key, priority DESC, run_at, id)
    WHERE status IN ('queued', 'scheduled') AND parent_id IS NULL;

-- Delayed roots by due time: when an executor's next run comes due. A
-- `scheduled` root stays so once due, until it is claimed.
CREATE INDEX task_scheduled ON task (run_at) WHERE status = 'scheduled' AND parent_id IS NULL;

-- Isolated roots waiting (rare): whether an executor should make room to
-- run one alone.
CREATE INDEX task_isolated ON task (run_at) WHERE isolated AND status IN ('queued', 'scheduled') AND parent_id IS NULL;
