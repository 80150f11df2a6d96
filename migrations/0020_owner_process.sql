-- durable schema, version 20: which process an owner is, precisely enough
-- for another process on the same machine to prove it gone. A claimant that
-- finds an owner's session gone gives it its grace (version 2), in case the
-- process lives on and is getting a new session; a claimant on the same
-- machine and in the same pid namespace that finds no such process (or
-- another process under its pid) takes its workflows over without waiting.
-- Applied like version 1. Rows of earlier versions' owners keep these NULL,
-- and NULL means "cannot tell": the grace applies, as before.

-- The machine, until it reboots: /proc/sys/kernel/random/boot_id.
ALTER TABLE owner ADD COLUMN boot_id text;
-- The pid (and time) namespaces of the process, as /proc/self/ns names
-- them: a pid means the same process only within one pid namespace, and a
-- start time reads the same only within one time namespace.
ALTER TABLE owner ADD COLUMN pid_namespace text;
-- When the process started, in clock ticks after boot (field 22 of
-- /proc/<pid>/stat): the same pid with another start time is another process.
ALTER TABLE owner ADD COLUMN process_start bigint;
