-- durable schema, version 1.
--
-- Applied by durable.init() inside one transaction, under an advisory lock,
-- with search_path set to the target schema (default "durable"): names here
-- are unqualified on purpose. Never edit a released migration; add a new file.

-- Processes that hold workflows. A lease is live while its owner's row has
-- not expired (renewed by one heartbeat per process) and its dedicated
-- session (backend_pid, backend_start) still exists: a killed process's
-- session closes at once, so its workflows can be taken over at once.
CREATE TABLE owner (
    id            uuid PRIMARY KEY,
    backend_pid   integer NOT NULL,
    backend_start timestamptz,
    host          text NOT NULL,
    pid           integer NOT NULL,              -- the process id on host
    started_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);

-- Named queues for executor-driven work.
CREATE TABLE task_queue (
    name            text PRIMARY KEY CHECK (name <> '' AND octet_length(name) <= 255),
    max_concurrency integer CHECK (max_concurrency > 0),          -- NULL: unlimited
    rate_limit      integer CHECK (rate_limit > 0),               -- starts allowed per rate_period
    rate_period     interval CHECK (rate_period > interval '0'),
    paused          boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_limit IS NULL) = (rate_period IS NULL))
);

CREATE SEQUENCE task_id_seq AS bigint;

-- One row per workflow, child workflow and step.
CREATE TABLE task (
    id               bigint PRIMARY KEY DEFAULT nextval('task_id_seq'),
    parent_id        bigint REFERENCES task (id) ON DELETE CASCADE,   -- NULL for a root workflow
    root_id          bigint NOT NULL,                                 -- id of the tree's root (itself for a root)
    kind             text NOT NULL CHECK (kind IN ('workflow', 'step')),
    name             text NOT NULL CHECK (name <> '' AND octet_length(name) <= 255),
    status           text NOT NULL CHECK (status IN
                         ('pending', 'queued', 'scheduled', 'running', 'completed', 'failed', 'cancelled')),
    input            jsonb,                 -- workflows: the input they were started with
    output           jsonb,                 -- completed: the saved result
    error            jsonb,                 -- failed: {type, module, message, traceback}
    attempt          integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    owner_id         uuid,                  -- workflows: the owner (process) holding the lease
    lease_epoch      bigint NOT NULL DEFAULT 0,  -- workflows: +1 at every claim; writes are fenced on it
    deadline_at      timestamptz,           -- workflows: fail when not completed by then
    queue            text REFERENCES task_queue (name),
    run_at           timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    CONSTRAINT task_root_is_own_root CHECK ((parent_id IS NULL) = (id = root_id)),
    CONSTRAINT task_step_has_parent CHECK (kind = 'workflow' OR parent_id IS NOT NULL)
);

ALTER SEQUENCE task_id_seq OWNED BY task.id;

-- Identity: a root is unique by name, anything else by (parent, name).
-- Two partial indexes instead of one NULLS NOT DISTINCT index, which needs Postgres 15.
CREATE UNIQUE INDEX task_root_name ON task (name) WHERE parent_id IS NULL;
CREATE UNIQUE INDEX task_child_name ON task (parent_id, name) WHERE parent_id IS NOT NULL;
-- Whole-tree queries (and the future sharding key).
CREATE INDEX task_root ON task (root_id);
