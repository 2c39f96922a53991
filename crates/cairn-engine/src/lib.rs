//! The engine: applies events atomically through a store and keeps history the source of
//! truth. One event is one unit of work: read the instance, run `cairn_core::step`, write
//! the instance row (version + 1), append history, the idempotency key and the log entry,
//! commit, then acknowledge.
//!
//! Must not speak HTTP (that is `cairn-server`). Time comes through a [`Clock`].
//! Everything that runs inside one transaction takes the unit (`unit::Unit`): the store's
//! transaction and what the caller acts on once it commits (counters, claims to wake,
//! outbox entries to deliver). A step's effects (timers, approvals, tasks, children,
//! maps, sends) are carried out in the unit that records the step.

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
pub use clock::{Background, Clock, ManualClock, SystemClock};
pub use counters::{COMMIT_BUCKETS, Counters, CountersSnapshot};
pub use engine::{Applied, Config, Engine, SendRequest, Sent, StartRequest, Verified};
pub use error::Error;
pub use executors::{Captured, ExecutorService, Executors, Finished, Secrets, run_process};
pub use lifecycle::{
    DecideRequest, Decided, ForkFrom, LOG_TRIM_STEP, RETENTION_STEP, Retention, Stats,
    TimerService, merge_patch,
};
pub use tasks::{
    Claimed, DEFAULT_LEASE, Handler, LEASE_RANGE, TaskError, TaskOutcome, Usage, WorkerService,
    backoff, check_lease,
};
pub use triggers::MAX_HOPS as MAX_TRIGGER_HOPS;

use std::path::Path;
use std::sync::Arc;

use cairn_store_sqlite::{Options, SqliteStore};

/// Opens an engine on the embedded SQLite store of a data directory.
pub fn open_sqlite(
    dir: &Path,
    options: Options,
    config: Config,
) -> Result<Engine<SqliteStore>, Error> {
    let store = SqliteStore::open(dir, options)?;
    Ok(Engine::new(store, Arc::new(SystemClock), config))
}
