-- durable schema, version 10: the roots by status, newest first, for the
-- views that filter or count by status (`durable ui`'s tabs, `durable list
-- --status`). Without it, a rare status (cancelled, running) is counted by
-- reading every root: on a million runs, 1.5 s for the ui's seven tabs;
-- with it, an index range each (about 1 ms). Applied like version 1.
CREATE INDEX task_root_status ON task (status, id) WHERE parent_id IS NULL;
