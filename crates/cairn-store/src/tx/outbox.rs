//! [`OutboxTx`]: the transactional outbox: events and starts for other instances, delivered after commit.

use crate::*;

/// The transactional outbox: events and starts for other instances, delivered after commit. Part of [`Tx`], whose contract holds for every method.
pub trait OutboxTx {
    /// Appends to the outbox; `seq` is assigned.
    ///
    /// # Contract
    /// Entries come back from [`Tx::outbox`] in the order they were pushed.
    fn push_outbox(&mut self, entry: &OutboxRecord) -> Result<i64, Error>;
    /// The oldest `limit` outbox entries.
    fn outbox(&mut self, limit: usize) -> Result<Vec<OutboxRecord>, Error>;
    /// Removes a delivered entry; whether it was there.
    fn delete_outbox(&mut self, seq: i64) -> Result<bool, Error>;
}
