-- durable schema, version 6: which functions the live executors know, so
-- that a waiting run can say it waits for an executor that knows its
-- function. Applied like version 1.

-- The registered functions this owner's executor runs (NULL: not an
-- executor), and its version.
ALTER TABLE owner ADD COLUMN workflows text[];
ALTER TABLE owner ADD COLUMN version text;
