//! [`HistoryTx`]: history and what is written with it: idempotency keys, checkpoints, the log, figures.

use crate::*;

/// History and what is written with it: idempotency keys, checkpoints, the log, figures. Part of [`Tx`], whose contract holds for every method.
pub trait HistoryTx {
    /// Appends one history record.
    ///
    /// # Contract
    /// `(namespace, instance_id, seq)` is unique, and so is `(namespace, instance_id,
    /// version)` among records whose kind is a transition (start, event): a second one is
    /// refused with [`Error::Conflict`], so no transition is ever recorded twice.
    fn append_history(&mut self, record: &HistoryRecord) -> Result<(), Error>;

    /// The first use of an idempotency key on an instance, if any.
    fn idempotency(
        &mut self,
        namespace: &str,
        instance_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, Error>;
    /// Records an idempotency key's first use.
    fn insert_idempotency(&mut self, record: &IdempotencyRecord) -> Result<(), Error>;

    /// Records a checkpoint.
    fn insert_checkpoint(&mut self, checkpoint: &CheckpointRecord) -> Result<(), Error>;
    /// One checkpoint of an instance by name.
    fn checkpoint(
        &mut self,
        namespace: &str,
        instance_id: &str,
        name: &str,
    ) -> Result<Option<CheckpointRecord>, Error>;
    /// The history record of `seq`.
    fn history_at(
        &mut self,
        namespace: &str,
        instance_id: &str,
        seq: u64,
    ) -> Result<Option<HistoryRecord>, Error>;
    /// Deletes the instance's history records with `seq` below `before_seq`.
    fn delete_history_before(
        &mut self,
        namespace: &str,
        instance_id: &str,
        before_seq: u64,
    ) -> Result<u64, Error>;
    /// Replaces one history record (compaction turns the oldest kept record into a base).
    fn replace_history(&mut self, record: &HistoryRecord) -> Result<(), Error>;

    /// Appends to the commit-ordered log and returns the entry's position.
    ///
    /// # Contract
    /// Positions increase in commit order: once a reader has seen position `p`, no entry
    /// with a position below `p` commits later. An entry may become visible to
    /// [`Reader::log`] only some time after its unit committed (PostgreSQL shows it once
    /// every older unit has ended), never out of order.
    fn append_log(&mut self, entry: &NewLogEntry) -> Result<i64, Error>;
    /// Removes the oldest log entries, at most `limit` of them, oldest first: those
    /// created before `before` and those beyond the newest `keep`. Moves the log's
    /// horizon ([`Reader::log_horizon`]) to the last position removed, and returns how
    /// many were removed.
    ///
    /// # Contract
    /// Never removes an entry a reader could not yet see (on PostgreSQL, one above the
    /// oldest running transaction), so no entry ever commits below the horizon. Entries
    /// at or below the horizon are gone; every entry above it is kept.
    fn trim_log(
        &mut self,
        before: Option<chrono::DateTime<chrono::Utc>>,
        keep: Option<u64>,
        limit: usize,
    ) -> Result<u64, Error>;

    /// Adds `figure.value` to a figure the engine keeps (the time spent in states); the
    /// counts of stored rows are kept by the store itself. The addition commits with the
    /// unit (and not if it rolls back); a backend may write it when the unit commits, so
    /// reading figures inside the unit need not see it.
    fn add_figure(&mut self, figure: &Figure) -> Result<(), Error>;
}
