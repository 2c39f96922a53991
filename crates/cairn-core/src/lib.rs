//! Cairn's statechart core (placeholder docs; replaced below).
pub mod definition;
pub mod diagram;
pub mod error;
pub mod expr;
pub mod machine;
pub mod source;
pub mod step;

pub use definition::MachineDef;
pub use error::{Diagnostic, DiagnosticKind, LoadError};
pub use machine::{MAX_MICROSTEPS, Machine};
pub use source::Format;
pub use step::{
    Effect, Env, Event, Microstep, MicrostepKind, Outcome, Rejection, Snapshot, Status, accepts,
    is_reserved_event, replay, start, step,
};
