-- Cairn's first schema. Never edit an applied migration: add the next file instead.
CREATE TABLE machines (
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (namespace, name, version)
) WITHOUT ROWID;

CREATE TABLE instances (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace       TEXT NOT NULL,
    id              TEXT NOT NULL,
    machine         TEXT NOT NULL,
    machine_version INTEGER NOT NULL,
    status          TEXT NOT NULL,
    configuration   TEXT NOT NULL,
    context         TEXT NOT NULL,
    version         INTEGER NOT NULL,
    history_seq     INTEGER NOT NULL,
    labels          TEXT NOT NULL,
    parent          TEXT,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX instances_by_id ON instances (namespace, id);
CREATE INDEX instances_by_machine ON instances (namespace, machine, seq);
CREATE INDEX instances_by_status ON instances (namespace, status, seq);

CREATE TABLE instance_labels (
    namespace   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (namespace, instance_id, key)
) WITHOUT ROWID;
CREATE INDEX instance_labels_by_value ON instance_labels (namespace, key, value);

-- One row per durable change of an instance, in order (`seq`): the start, every applied
-- event, and lifecycle records (pause, resume, cancel...). `version` is the instance's
-- version after the row; only starts and events advance it.
CREATE TABLE history (
    namespace          TEXT NOT NULL,
    instance_id        TEXT NOT NULL,
    seq                INTEGER NOT NULL,
    kind               TEXT NOT NULL,
    version            INTEGER NOT NULL,
    event              TEXT NOT NULL,
    payload            TEXT NOT NULL,
    actor              TEXT NOT NULL,
    reason             TEXT NOT NULL,
    from_configuration TEXT NOT NULL,
    to_configuration   TEXT NOT NULL,
    context            TEXT NOT NULL,
    status             TEXT NOT NULL,
    idempotency_key    TEXT,
    microsteps         TEXT NOT NULL,
    effects            TEXT NOT NULL,
    time_in_states_ms  INTEGER,
    created_at         TEXT NOT NULL,
    PRIMARY KEY (namespace, instance_id, seq)
) WITHOUT ROWID;
-- No version is ever applied twice.
CREATE UNIQUE INDEX history_transitions ON history (namespace, instance_id, version)
    WHERE kind IN ('start', 'event');

CREATE TABLE idempotency (
    namespace   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (namespace, instance_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_time ON idempotency (created_at);

-- The commit-ordered log: one writer, so rowid order is commit order.
CREATE TABLE log (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    data        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
