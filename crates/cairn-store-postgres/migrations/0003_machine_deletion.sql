-- Machine versions can be deleted (when no instance runs on them): the row stays, with
-- its definition dropped, so its version number is never given again.
ALTER TABLE machines ADD COLUMN deleted_at timestamptz;
