-- cairn: outside a transaction
-- Space freed by deletions is given back to the file system in bounded steps (`cairn
-- vacuum`, `PRAGMA incremental_vacuum`). `auto_vacuum` takes effect on a database that
-- holds tables only through a VACUUM, which rewrites the file once, atomically; it cannot
-- run in a transaction, so this migration runs on its own (run again if interrupted: it
-- changes nothing twice).
PRAGMA auto_vacuum = INCREMENTAL;
VACUUM;
