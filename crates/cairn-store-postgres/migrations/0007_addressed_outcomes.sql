-- An outcome (task.done, approve, child.done, ...) names the state that owns the work,
-- in history (replayed exactly) and in the inbox of a paused instance.
ALTER TABLE history ADD COLUMN addressed_to TEXT;
ALTER TABLE inbox ADD COLUMN addressed_to TEXT;
