-- The instance lifecycle: durable timers, approvals, named checkpoints, and the inbox of
-- events sent to a paused instance.

CREATE TABLE timers (
    namespace   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    event       TEXT NOT NULL,
    state       TEXT NOT NULL,
    due_at      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (namespace, instance_id, event)
) WITHOUT ROWID;
CREATE INDEX timers_by_due ON timers (due_at);

CREATE TABLE approvals (
    id          TEXT PRIMARY KEY NOT NULL,
    namespace   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    state       TEXT NOT NULL,
    prompt      TEXT,
    approvers   TEXT NOT NULL,
    quorum      INTEGER NOT NULL,
    status      TEXT NOT NULL,
    decisions   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    decided_at  TEXT,
    decided_by  TEXT,
    reason      TEXT
) WITHOUT ROWID;
CREATE INDEX approvals_by_instance ON approvals (namespace, instance_id, status);
CREATE INDEX approvals_by_status ON approvals (namespace, status, created_at);

CREATE TABLE checkpoints (
    namespace     TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    configuration TEXT NOT NULL,
    context       TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (namespace, instance_id, name)
) WITHOUT ROWID;

CREATE TABLE inbox (
    namespace       TEXT NOT NULL,
    instance_id     TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    actor           TEXT NOT NULL,
    reason          TEXT NOT NULL,
    idempotency_key TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (namespace, instance_id, seq)
) WITHOUT ROWID;
