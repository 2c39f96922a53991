-- Figures the store keeps about itself, by name. `log_horizon`: the last log position
-- retention removed (entries at or below it are gone).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
