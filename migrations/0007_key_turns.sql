-- durable schema, version 7: keys of a queue take turns. When runs of
-- several keys wait with the same priority, the key served least recently
-- goes first. Applied like version 1.

-- When a run of each key of a queue last started. Rows of keys not served
-- for a day are dropped by the recovery passes (such a key is simply served
-- first again).
CREATE TABLE task_queue_key (
    queue         text NOT NULL,
    key           text NOT NULL,
    last_started  timestamptz NOT NULL,
    PRIMARY KEY (queue, key)
);
CREATE INDEX task_queue_key_age ON task_queue_key (last_started);
