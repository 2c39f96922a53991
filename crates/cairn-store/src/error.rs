//! `store::Error`: what can go wrong in storage, mapped from each driver's errors in
//! exactly one place per backend.

/// A storage failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A unique key already exists, or an optimistic version check failed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The data directory is held by another process.
    #[error("{0}")]
    Locked(String),
    /// Stored data could not be decoded (corruption or a newer schema).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The unit of work was refused by its own logic (carried through unchanged).
    #[error("{0}")]
    Refused(String),
    /// The database failed (IO, full disk, busy beyond the timeout...).
    #[error("database error: {0}")]
    Database(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}
