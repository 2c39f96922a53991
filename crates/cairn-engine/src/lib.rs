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

mod auth;
mod children;
mod clock;
mod counters;
mod engine;
mod error;
mod executors;
mod lifecycle;
mod maps;
mod ready;
mod schedules;
mod start;
mod tasks;
mod triggers;
mod unit;
pub mod wire;

pub use auth::{Actor, Principal, Role, check_subject};
pub use clock::{Clock, ManualClock, SystemClock};
pub use counters::{COMMIT_BUCKETS, Counters, CountersSnapshot};
pub use engine::{Applied, Config, Engine, SendRequest, Sent, StartRequest, Verified};
pub use error::Error;
pub use executors::{Executors, Secrets};
pub use lifecycle::{
    DecideRequest, Decided, ForkFrom, LOG_TRIM_STEP, RETENTION_STEP, Retention, Stats, merge_patch,
};
pub use tasks::{Claimed, DEFAULT_LEASE, LEASE_RANGE, TaskOutcome, Usage, backoff, check_lease};
pub use triggers::MAX_HOPS as MAX_TRIGGER_HOPS;
