//! Storage traits and record types: machines (immutable versions), instances, history,
//! idempotency keys and the commit-ordered log, each with a written `# Contract`.
//!
//! Owns `store::Error`. Must not depend on a database driver: backends live in
//! `cairn-store-sqlite` and `cairn-store-postgres`, and `cairn-store-tests` holds the one
//! behaviour suite every backend passes. Not yet built: see the write-path issue.
