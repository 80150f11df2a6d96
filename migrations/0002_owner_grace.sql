-- durable schema, version 2: a live process keeps its workflows when its
-- liveness session drops for a moment (an idle timeout, a terminated
-- backend). Applied like version 1 (one transaction, search_path set).

-- When a claimant first saw this owner's session gone; NULL while it is
-- connected. The owner clears it when it registers its new session.
ALTER TABLE owner ADD COLUMN session_lost_at timestamptz;

-- How long after session_lost_at the owner may still come back: claimants
-- take its workflows over only once this has passed without it re-registering.
ALTER TABLE owner ADD COLUMN session_grace interval NOT NULL DEFAULT interval '0.5 seconds';
