-- Cairn's schema on PostgreSQL: the same records as the SQLite backend, with native
-- types (timestamptz, bigint). JSON is `json`, not `jsonb`: it keeps the text as written,
-- key order included (a definition's state order is its document order).
--
-- Several nodes share one database. What keeps them correct is in the queries (a row
-- lock on the instance in every unit that changes it, SKIP LOCKED claims of tasks,
-- leases, timers, outbox entries and schedules) and in `log` positions, which follow
-- commit order (see `log` below).

CREATE TABLE machines (
    namespace   text NOT NULL,
    name        text NOT NULL,
    version     integer NOT NULL,
    digest      text NOT NULL,
    definition  json NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (namespace, name, version)
);

CREATE TABLE instances (
    seq             bigserial PRIMARY KEY,
    namespace       text NOT NULL,
    id              text NOT NULL,
    machine         text NOT NULL,
    machine_version integer NOT NULL,
    status          text NOT NULL,
    configuration   json NOT NULL,
    context         json NOT NULL,
    version         bigint NOT NULL,
    history_seq     bigint NOT NULL,
    labels          json NOT NULL,
    parent          text,
    last_error      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE UNIQUE INDEX instances_by_id ON instances (namespace, id);
CREATE INDEX instances_by_machine ON instances (namespace, machine, seq);
CREATE INDEX instances_by_status ON instances (namespace, status, seq);
CREATE INDEX instances_parent ON instances (namespace, parent, seq) WHERE parent IS NOT NULL;
CREATE INDEX instances_finished ON instances (namespace, updated_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

CREATE TABLE instance_labels (
    namespace   text NOT NULL,
    instance_id text NOT NULL,
    key         text NOT NULL,
    value       text NOT NULL,
    PRIMARY KEY (namespace, instance_id, key)
);
CREATE INDEX instance_labels_by_value ON instance_labels (namespace, key, value);

CREATE TABLE history (
    namespace          text NOT NULL,
    instance_id        text NOT NULL,
    seq                bigint NOT NULL,
    kind               text NOT NULL,
    version            bigint NOT NULL,
    event              text NOT NULL,
    payload            json NOT NULL,
    actor              text NOT NULL,
    reason             text NOT NULL,
    from_configuration json NOT NULL,
    to_configuration   json NOT NULL,
    context            json NOT NULL,
    status             text NOT NULL,
    idempotency_key    text,
    microsteps         json NOT NULL,
    effects            json NOT NULL,
    time_in_states_ms  bigint,
    created_at         timestamptz NOT NULL,
    PRIMARY KEY (namespace, instance_id, seq)
);
CREATE UNIQUE INDEX history_transitions ON history (namespace, instance_id, version)
    WHERE kind IN ('start', 'event');

CREATE TABLE idempotency (
    namespace   text NOT NULL,
    instance_id text NOT NULL,
    key         text NOT NULL,
    fingerprint text NOT NULL,
    version     bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (namespace, instance_id, key)
);

-- The commit-ordered log. A sequence is not commit-ordered (ids are taken in one order
-- and committed in another), so a position is made of the writing transaction's id
-- (`pg_current_xact_id()`) shifted left 20 bits, plus the entry's index within the
-- transaction. Readers only return positions below the oldest transaction still running
-- (`pg_snapshot_xmin`) shifted the same way: every transaction below it has ended, so no
-- entry can later appear below a position a reader has returned.
CREATE TABLE log (
    position    bigint PRIMARY KEY,
    namespace   text NOT NULL,
    instance_id text NOT NULL,
    kind        text NOT NULL,
    version     bigint NOT NULL,
    data        json NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE timers (
    namespace   text NOT NULL,
    instance_id text NOT NULL,
    event       text NOT NULL,
    state       text NOT NULL,
    due_at      timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (namespace, instance_id, event)
);
CREATE INDEX timers_by_due ON timers (due_at);

CREATE TABLE approvals (
    id          text PRIMARY KEY,
    namespace   text NOT NULL,
    instance_id text NOT NULL,
    state       text NOT NULL,
    prompt      text,
    approvers   json NOT NULL,
    quorum      integer NOT NULL,
    status      text NOT NULL,
    decisions   json NOT NULL,
    created_at  timestamptz NOT NULL,
    decided_at  timestamptz,
    decided_by  text,
    reason      text
);
CREATE INDEX approvals_by_instance ON approvals (namespace, instance_id, status);
CREATE INDEX approvals_by_status ON approvals (namespace, status, created_at);

CREATE TABLE checkpoints (
    namespace     text NOT NULL,
    instance_id   text NOT NULL,
    name          text NOT NULL,
    seq           bigint NOT NULL,
    version       bigint NOT NULL,
    configuration json NOT NULL,
    context       json NOT NULL,
    status        text NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (namespace, instance_id, name)
);

CREATE TABLE inbox (
    namespace       text NOT NULL,
    instance_id     text NOT NULL,
    seq             bigint NOT NULL,
    event           text NOT NULL,
    payload         json NOT NULL,
    actor           text NOT NULL,
    reason          text NOT NULL,
    idempotency_key text,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (namespace, instance_id, seq)
);

CREATE TABLE tasks (
    id               text PRIMARY KEY,
    namespace        text NOT NULL,
    instance_id      text NOT NULL,
    state            text NOT NULL,
    queue            text NOT NULL,
    action           text NOT NULL,
    input            json NOT NULL,
    status           text NOT NULL,
    attempt          integer NOT NULL,
    retry            json NOT NULL,
    timeout_ms       bigint,
    heartbeat_ms     bigint,
    available_at     timestamptz NOT NULL,
    lease_owner      text,
    lease_expires_at timestamptz,
    output           json,
    error            text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX tasks_claimable ON tasks (queue, available_at) WHERE status = 'pending';
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE status = 'leased';
CREATE INDEX tasks_by_instance ON tasks (namespace, instance_id, status);

CREATE TABLE task_attempts (
    task_id     text NOT NULL,
    attempt     integer NOT NULL,
    namespace   text NOT NULL,
    instance_id text NOT NULL,
    worker      text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    outcome     text,
    error       text,
    tokens      bigint,
    cost        double precision,
    PRIMARY KEY (task_id, attempt)
);

CREATE TABLE tokens (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    hash        text NOT NULL UNIQUE,
    role        text NOT NULL,
    namespaces  json NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

CREATE TABLE children (
    namespace   text NOT NULL,
    parent_id   text NOT NULL,
    child_id    text NOT NULL,
    state       text,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (namespace, parent_id, child_id)
);

CREATE TABLE outbox (
    seq         bigserial PRIMARY KEY,
    kind        text NOT NULL,
    hops        integer NOT NULL,
    namespace   text NOT NULL,
    instance_id text NOT NULL,
    event       text NOT NULL,
    payload     json NOT NULL,
    actor       text NOT NULL,
    reason      text NOT NULL,
    source      text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX outbox_by_receiver ON outbox (namespace, instance_id, seq);

CREATE TABLE triggers (
    namespace   text NOT NULL,
    name        text NOT NULL,
    machine     text NOT NULL,
    definition  json NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (namespace, name)
);

CREATE TABLE schedules (
    namespace   text NOT NULL,
    name        text NOT NULL,
    definition  json NOT NULL,
    next_at     timestamptz NOT NULL,
    last_at     timestamptz,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE INDEX schedules_due ON schedules (next_at);

CREATE TABLE maps (
    namespace   text NOT NULL,
    instance_id text NOT NULL,
    state       text NOT NULL,
    progress    json NOT NULL,
    PRIMARY KEY (namespace, instance_id, state)
);
