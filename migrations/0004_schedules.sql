-- durable schema, version 4: recurring runs (cron and fixed intervals).
-- Applied like version 1 (one transaction, search_path set).

-- One row per scheduled workflow function: its schedule, and the next tick
-- to run. Executors advance next_tick with a compare-and-set, and each tick's
-- run has a name made of the function and the tick, so a tick runs once
-- whatever the number of executors, with no leader.
CREATE TABLE task_schedule (
    workflow    text PRIMARY KEY CHECK (octet_length(workflow) <= 255),
    spec        text NOT NULL,                 -- 'cron <expr> <timezone>' or 'every <seconds>'
    next_tick   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
