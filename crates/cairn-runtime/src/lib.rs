//! Cairn's runtime: the parts that run beside the engine. The engine (`cairn-engine`)
//! decides and writes; everything here asks it to, on threads of its own: the timer
//! service, in-process workers, the built-in `exec` and `http` executors, retention, and
//! the wiring of a node (`cairn serve`, or an embedding program).
//!
//! Every part has one shape ([`service`]): built from its options, run until its
//! [`Shutdown`] is triggered, held by a [`Running`] handle that stops it explicitly.
#![warn(missing_docs)]

pub mod executors;
pub mod node;
mod open;
pub mod retention;
pub mod service;
pub mod timers;
pub mod workers;

pub use executors::{Captured, ExecutorService, Finished, run_process};
pub use node::{Node, NodeOptions};
pub use open::{open, open_sqlite};
pub use retention::{RetentionOptions, RetentionService};
pub use service::{Periodic, Running, Service, Shutdown};
pub use timers::{TimerOptions, TimerService};
pub use workers::{Handler, TaskError, WorkerOptions, WorkerService};
