-- durable schema, version 10: indexes of the roots alone, for the views
-- that list and count runs (`durable ui`, `durable list`). Steps are most of
-- the table: without these, a list newest first read past every step row
-- newer than its runs, and a rare status (cancelled, running) was counted
-- by reading every root. On a million runs (bench/ui.py): the list's first
-- page 210 -> 13 ms, the seven status tabs 1.5 s -> about 1 ms. A root's row
-- changes status about three times in its life; steps never enter these.
-- Applied like version 1.
CREATE INDEX task_root_id ON task (id) WHERE parent_id IS NULL;
CREATE INDEX task_root_status ON task (status, id) WHERE parent_id IS NULL;
