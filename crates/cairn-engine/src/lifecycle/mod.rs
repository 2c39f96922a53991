//! The instance lifecycle on top of the write path: timers (firing the due ones; the
//! service that calls it is `cairn-runtime`'s), approvals, pause / resume / cancel,
//! checkpoints and fork, deletion and retention, and the statistics of `stats`.
//!
//! Every operation is one unit of work, so each is atomic and, once acknowledged, durable.
//! One file a concern: `approvals`, `fork` (checkpoints and forks), `report` (export,
//! stats), `retention` (deletion, retention, compaction, log trimming, vacuum), `timers`
//! and `status` (pause, resume, cancel), each importing only those before it.

mod approvals;
mod fork;
mod report;
mod retention;
mod timers;
mod status;

pub use approvals::{DecideRequest, Decided};
pub use fork::{ForkFrom, merge_patch};
pub use report::Stats;
pub use retention::{LOG_TRIM_STEP, RETENTION_STEP, Retention};
