//! The writes of one unit of work ([`Tx`]), split by aggregate as the backends split
//! their implementations: definitions, instances, history, timers, approvals, tasks, the
//! outbox and tokens.

mod approvals;
mod definitions;
mod history;
mod instances;
mod outbox;
mod tasks;
mod timers;
mod tokens;

pub use approvals::ApprovalsTx;
pub use definitions::DefinitionsTx;
pub use history::HistoryTx;
pub use instances::InstancesTx;
pub use outbox::OutboxTx;
pub use tasks::TasksTx;
pub use timers::TimersTx;
pub use tokens::TokensTx;

/// A part of a unit that can be undone alone: the unit goes on without it. One part is
/// open at a time (parts do not nest).
///
/// # Contract
/// - After [`PartsTx::begin_part`], [`PartsTx::undo_part`] removes every write made since
///   (figures included) and leaves the unit's earlier writes as they were;
///   [`PartsTx::keep_part`] keeps them. Either ends the part.
/// - A unit that commits with a part still open keeps the part's writes.
pub trait PartsTx {
    /// Opens a part (a savepoint).
    fn begin_part(&mut self) -> Result<(), crate::Error>;
    /// Keeps what the open part wrote.
    fn keep_part(&mut self) -> Result<(), crate::Error>;
    /// Undoes what the open part wrote.
    fn undo_part(&mut self) -> Result<(), crate::Error>;
}

/// Writes inside one unit of work. Every method sees the unit's own earlier writes.
///
/// # Contract
/// - Nothing written through a `Tx` is visible to readers until the unit commits, and a
///   unit whose closure returns an error leaves no trace: its writes are rolled back
///   alone, other units committed with it are unaffected.
/// - Insert methods refuse a duplicate key with [`Error::Conflict`].
pub trait Tx:
    DefinitionsTx
    + InstancesTx
    + HistoryTx
    + TimersTx
    + ApprovalsTx
    + TasksTx
    + OutboxTx
    + TokensTx
    + PartsTx
{
}

impl<T: ?Sized> Tx for T where
    T: PartsTx
        + DefinitionsTx
        + InstancesTx
        + HistoryTx
        + TimersTx
        + ApprovalsTx
        + TasksTx
        + OutboxTx
        + TokensTx
{
}
