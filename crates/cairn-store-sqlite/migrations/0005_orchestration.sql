-- Child instances: which instance spawned which, and from which of its states (NULL when
-- an action spawned it), so leaving that state cancels its children and pause, resume
-- and cancel cascade down the tree.
CREATE TABLE children (
    namespace   TEXT NOT NULL,
    parent_id   TEXT NOT NULL,
    child_id    TEXT NOT NULL,
    state       TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (namespace, parent_id, child_id)
) WITHOUT ROWID;

CREATE INDEX instances_parent ON instances (namespace, parent, seq) WHERE parent IS NOT NULL;

-- The transactional outbox: events for other instances and instances to start written with the transition that
-- caused them (a child finishing tells its parent), delivered after commit and deleted in
-- the unit that applies them, so each is applied once.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    hops        INTEGER NOT NULL,
    namespace   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    event       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- Triggers between machines: the definition as JSON, keyed by name per namespace.
CREATE TABLE triggers (
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    machine     TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;

-- Cron schedules: the definition as JSON, and the next tick, which moves in the same unit
-- that starts the tick's instance.
CREATE TABLE schedules (
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    next_at     TEXT NOT NULL,
    last_at     TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;

CREATE INDEX schedules_due ON schedules (next_at);

-- Map states in progress: each item's key, input, dependencies, status and child.
CREATE TABLE maps (
    namespace   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    state       TEXT NOT NULL,
    progress    TEXT NOT NULL,
    PRIMARY KEY (namespace, instance_id, state)
) WITHOUT ROWID;
