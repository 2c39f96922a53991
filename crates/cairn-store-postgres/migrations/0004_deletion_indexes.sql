-- Deleting an instance deletes its task attempts: found by instance, not by a scan.
CREATE INDEX task_attempts_by_instance ON task_attempts (namespace, instance_id);
