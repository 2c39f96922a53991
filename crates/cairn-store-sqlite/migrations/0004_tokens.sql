-- API tokens: only a SHA-256 hash of each secret is kept.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    namespaces  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
) WITHOUT ROWID;
