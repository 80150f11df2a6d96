-- durable schema, version 8: messages to workflows, and the events they
-- publish. Applied like version 1.

-- A message sent to a workflow (root or child) on a topic. `recv` takes the
-- oldest one not yet received, in the same statement that saves the
-- receiving step (named `received_by` in the workflow), so a message is
-- received exactly once. Deleted with its workflow.
CREATE TABLE task_message (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id      bigint NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    topic        text NOT NULL CHECK (topic <> '' AND octet_length(topic) <= 255),
    -- Given, makes the send idempotent: one message per (workflow, key).
    key          text CHECK (octet_length(key) <= 255),
    value        jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    received_at  timestamptz,
    received_by  text
);
CREATE UNIQUE INDEX task_message_key ON task_message (task_id, key) WHERE key IS NOT NULL;
-- What recv looks for: the oldest message of a topic not yet received.
CREATE INDEX task_message_waiting ON task_message (task_id, topic, id) WHERE received_at IS NULL;

-- The latest value a workflow published under a key (`ctx.set_event`).
CREATE TABLE task_event (
    task_id     bigint NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    key         text NOT NULL CHECK (key <> '' AND octet_length(key) <= 255),
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, key)
);
