#![doc = include_str!("../../../docs/semantics.md")]
#![warn(missing_docs)]
//!
//! ## Where to look
//!
//! - `source`: YAML, TOML and JSON read into one tree that keeps line and column.
//! - `definition`: the definition model and its error-collecting reader.
//! - `machine`: validation and compilation into an arena in document order.
//! - `expr`: CEL compilation, variable checks, JSON <-> CEL conversion.
//! - `limits`: bounds on definitions and expressions, checked before anything recursive.
//! - `step`: `start`, `step`, `replay`, `accepts`: the semantics above.
//! - `diagram`: Mermaid and Graphviz output.
pub mod definition;
pub mod diagram;
pub mod error;
pub mod expr;
pub mod limits;
pub mod machine;
pub mod source;
pub mod step;

pub use definition::MachineDef;
pub use error::{Diagnostic, DiagnosticKind, LoadError, Severity, did_you_mean, suggest};
pub use limits::Limits;
pub use machine::{MAX_MICROSTEPS, Machine};
pub use source::Format;
pub use step::{
    Effect, Env, Event, Microstep, MicrostepKind, Outcome, Rejection, Snapshot, Status, accepts,
    delivered_by, guarded, is_reserved_event, replay, resources, start, step,
};
