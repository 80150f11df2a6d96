-- durable schema, version 18: which workflow enqueued a run, so that a
-- cancel can reach the runs a workflow enqueued (durable.cancel(...,
-- enqueued=True)). Applied like version 1.

-- On a root enqueued by a workflow (from its own code or a step's body):
-- that workflow's id. NULL for runs enqueued from outside any workflow, by
-- the SQL function, by a schedule, and for runs enqueued before version 18.
-- No foreign key: the enqueuing workflow may be deleted (durable gc) before
-- the runs it enqueued, which keep the id of a row that no longer exists.
ALTER TABLE task ADD COLUMN enqueued_by bigint;

-- What a cancel with enqueued=True reads: the runs of each workflow it cancels.
CREATE INDEX task_enqueued_by ON task (enqueued_by) WHERE enqueued_by IS NOT NULL;
