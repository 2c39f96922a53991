-- Tasks for workers: enqueued by the state that declares them, claimed with a lease,
-- retried with backoff, and every attempt recorded.
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY NOT NULL,
    namespace        TEXT NOT NULL,
    instance_id      TEXT NOT NULL,
    state            TEXT NOT NULL,
    queue            TEXT NOT NULL,
    action           TEXT NOT NULL,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    retry            TEXT NOT NULL,
    timeout_ms       INTEGER,
    heartbeat_ms     INTEGER,
    available_at     TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    output           TEXT,
    error            TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX tasks_claimable ON tasks (queue, status, available_at);
CREATE INDEX tasks_leases ON tasks (status, lease_expires_at);
CREATE INDEX tasks_by_instance ON tasks (namespace, instance_id, status);

CREATE TABLE task_attempts (
    task_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    namespace   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    worker      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    outcome     TEXT,
    error       TEXT,
    tokens      INTEGER,
    cost        REAL,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
