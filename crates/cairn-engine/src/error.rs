//! `engine::Error`: every way an engine operation can fail, each mapping to one exit code
//! in the CLI and one problem type in the server.

use cairn_api::ProblemType;
use cairn_core::{LoadError, Rejection, Status};

/// Every way an engine operation can fail.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    /// The definition is not valid; every problem is listed.
    #[error("{0}")]
    Definition(#[from] LoadError),
    /// Malformed input: a bad id, label, payload or start input.
    #[error("{0}")]
    Invalid(String),
    /// A payload or input larger than the configured limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large (`payload`, `input`...).
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit it is over.
        limit: usize,
    },
    /// No such machine, version or instance.
    #[error("{0}")]
    NotFound(String),
    /// An instance with this id exists already.
    #[error("instance `{0}` already exists")]
    Exists(String),
    /// The step function refused the event; nothing changed.
    #[error("{0}")]
    Refused(Rejection),
    /// The instance is finished.
    #[error("instance `{id}` is {}; it takes no more events", .status.as_str())]
    Finished {
        /// The instance.
        id: String,
        /// How it finished.
        status: Status,
    },
    /// The instance is paused (for operations that need it running).
    #[error("instance `{0}` is paused; resume it first")]
    Paused(String),
    /// The operation does not fit the instance's state (e.g. resuming a running instance,
    /// deciding an approval that is not pending).
    #[error("{0}")]
    Conflict(String),
    /// The actor may not do this (e.g. decide an approval it is not an approver of).
    #[error("{0}")]
    NotAllowed(String),
    /// `expected_version` did not match.
    #[error("instance `{id}` is at version {current}, not {expected}")]
    VersionMismatch {
        /// The instance.
        id: String,
        /// The version the caller expected.
        expected: u64,
        /// The version it is at.
        current: u64,
    },
    /// The idempotency key was used with another event or payload.
    #[error(
        "idempotency key `{key}` was first used with a different event or payload (at version {version})"
    )]
    KeyReused {
        /// The key.
        key: String,
        /// The version its first use produced.
        version: u64,
    },
    /// Clients may not send events the engine delivers.
    #[error(
        "event `{0}` is reserved: {by}",
        by = cairn_core::delivered_by(.0).unwrap_or("the engine delivers it")
    )]
    Reserved(String),
    /// Storage failed.
    #[error("{0}")]
    Store(#[from] cairn_store::Error),
}

impl Error {
    /// Not found: no instance `id` in namespace `ns`.
    pub(crate) fn no_instance(ns: &str, id: &str) -> Error {
        Error::NotFound(format!("no instance `{id}` in namespace `{ns}`"))
    }

    /// Whether the error is a refusal of a well-formed request (exit code 4, HTTP 409/422).
    /// The API's problem type for this error: the HTTP status a server answers with and
    /// the exit code the CLI gives, decided here once.
    pub fn problem(&self) -> ProblemType {
        match self {
            Error::Definition(_) => ProblemType::InvalidDefinition,
            Error::Invalid(_) => ProblemType::InvalidRequest,
            Error::TooLarge { .. } => ProblemType::TooLarge,
            Error::NotFound(_) => ProblemType::NotFound,
            Error::Exists(_) => ProblemType::AlreadyExists,
            Error::Refused(cairn_core::Rejection::NotAccepted { .. }) => {
                ProblemType::EventNotAccepted
            }
            Error::Refused(_) => ProblemType::EventRefused,
            Error::Reserved(_) => ProblemType::ReservedEvent,
            Error::Finished { .. } => ProblemType::InstanceFinished,
            Error::Paused(_) => ProblemType::InstancePaused,
            Error::Conflict(_) => ProblemType::Conflict,
            Error::NotAllowed(_) => ProblemType::Forbidden,
            Error::VersionMismatch { .. } => ProblemType::VersionConflict,
            Error::KeyReused { .. } => ProblemType::IdempotencyKeyReused,
            Error::Store(cairn_store::Error::Locked(_)) => ProblemType::Unavailable,
            Error::Store(cairn_store::Error::Conflict(_)) => ProblemType::Conflict,
            Error::Store(_) => ProblemType::Internal,
        }
    }
}
