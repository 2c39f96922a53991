//! The engine: applies events atomically through a store and keeps history the source of
//! truth. One event is one unit of work: read the instance, run `cairn_core::step`, write
//! the instance row (version + 1), append history, the idempotency key and the log entry,
//! commit, then acknowledge.
//!
//! It decides and writes, nothing else: it starts no thread, spawns no process, speaks no
//! HTTP (that is `cairn-server`) and names no store backend (any `cairn_store::Store`
//! will do). The services that run beside it (timers, workers, the built-in executors,
//! retention) are `cairn-runtime`'s. Time comes through a [`Clock`].
//! Everything that runs inside one transaction takes the unit (`unit::Unit`): the store's
//! transaction and what the caller acts on once it commits (counters, claims to wake,
//! outbox entries to deliver). A step's effects (timers, approvals, tasks, children,
//! maps, sends) are carried out in the unit that records the step.
#![warn(missing_docs)]

// The files in layers, each importing only those above it in this list (ARCHITECTURE.md
// says how that is checked). Leaves first:
mod error;
mod auth;
mod clock;
mod counters;
mod executors;
mod ids;
mod ready;
pub mod wire;
// Compiled definitions:
mod armed;
mod machines;
// Inside one unit of work, lowest first: the unit, the triggers that fire in it, a step's
// effects, applying an event, starting an instance, children, maps, and the two that
// close the recursion (the family a unit carries, the outbox deliveries).
mod unit;
mod triggers;
mod effects;
mod apply;
mod start;
mod children;
mod maps;
mod family;
mod outbox;
// The engine and its operations, each an `impl Engine` block:
mod engine;
mod definitions;
mod lifecycle;
mod schedules;
mod tasks;
mod tokens;
mod verify;

pub use armed::MAX_HOPS as MAX_TRIGGER_HOPS;
pub use auth::{Actor, Principal, Role, check_subject};
pub use clock::{Clock, ManualClock, SystemClock};
pub use counters::{COMMIT_BUCKETS, Counters, CountersSnapshot};
pub use definitions::Applied;
pub use engine::{Config, Engine, SendRequest, Sent, StartRequest};
pub use error::Error;
pub use executors::{Executors, Secrets};
pub use lifecycle::{
    DecideRequest, Decided, ForkFrom, LOG_TRIM_STEP, RETENTION_STEP, Retention, Stats, merge_patch,
};
pub use tasks::{
    Batch, Claimed, DEFAULT_LEASE, LEASE_RANGE, MAX_CLAIM, MAX_OUTCOMES, NextClaim, Outcome,
    OutcomeResult, Report, Reported, TaskOutcome, Usage, backoff, check_lease,
};
