-- Deleting an instance deletes its task attempts and the outbox entries addressed to it:
-- found by instance, not by a scan.
CREATE INDEX task_attempts_by_instance ON task_attempts (namespace, instance_id);
CREATE INDEX outbox_by_receiver ON outbox (namespace, instance_id, seq);
