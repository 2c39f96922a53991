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

/// Writes inside one unit of work. Every method sees the unit's own earlier writes.
///
/// # Contract
/// - Nothing written through a `Tx` is visible to readers until the unit commits, and a
///   unit whose closure returns an error leaves no trace: its writes are rolled back
///   alone, other units committed with it are unaffected.
/// - Insert methods refuse a duplicate key with [`Error::Conflict`].
pub trait Tx:
    DefinitionsTx + InstancesTx + HistoryTx + TimersTx + ApprovalsTx + TasksTx + OutboxTx + TokensTx
{
}

impl<T: ?Sized> Tx for T where
    T: DefinitionsTx
        + InstancesTx
        + HistoryTx
        + TimersTx
        + ApprovalsTx
        + TasksTx
        + OutboxTx
        + TokensTx
{
}
