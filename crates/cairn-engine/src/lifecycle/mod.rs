//! The instance lifecycle on top of the write path: timers (firing due ones, and a
//! background service), approvals, pause / resume / cancel, checkpoints and fork,
//! deletion and retention, and the statistics of `stats`.
//!
//! Every operation is one unit of work, so each is atomic and, once acknowledged, durable.
//! One file a concern: `status` (pause, resume, cancel), `timers`, `approvals`, `fork`
//! (checkpoints and forks), `retention` (deletion, retention, compaction, log trimming,
//! vacuum) and `report` (export, stats).

mod approvals;
mod fork;
mod report;
mod retention;
mod status;
mod timers;

pub use approvals::{DecideRequest, Decided};
pub use fork::{ForkFrom, merge_patch};
pub use report::Stats;
pub use retention::{LOG_TRIM_STEP, RETENTION_STEP, Retention};
pub(crate) use timers::fire_due_in_unit;

use cairn_store::{InstanceRecord, Store};

use crate::Error;
use crate::engine::Engine;
use crate::unit::Unit;

impl<S: Store> Engine<S> {
    /// The instance, read in the unit, or not found.
    fn load_instance(tx: &mut Unit<'_>, ns: &str, id: &str) -> Result<InstanceRecord, Error> {
        tx.instance(ns, id)?
            .ok_or_else(|| Error::NotFound(format!("no instance `{id}` in namespace `{ns}`")))
    }
}
