-- durable schema, version 16: who sent each message, so that a send made
-- again by the same sender (its step run again after a crash between the
-- send's commit and the step's, or its statement sent again after a lost
-- connection) finds its own message, and only another sender's use of a
-- key makes a send a duplicate. Applied like version 1.

-- The workflow whose step sent the message; NULL: sent from outside any workflow.
ALTER TABLE task_message ADD COLUMN sent_from bigint;
-- That step's name; for a send from outside a workflow, a token of the call
-- (unique per process and call). NULL for messages sent before version 16.
ALTER TABLE task_message ADD COLUMN sent_by text;
