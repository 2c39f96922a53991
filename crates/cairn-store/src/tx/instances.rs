//! [`InstancesTx`]: instances and what hangs off one: labels, the inbox of a paused instance, children, map progress.

use crate::*;

/// Instances and what hangs off one: labels, the inbox of a paused instance, children, map progress. Part of [`Tx`], whose contract holds for every method.
pub trait InstancesTx {
    /// One instance, read inside the unit (without a lock; see `claim_instance`).
    fn instance(&mut self, namespace: &str, id: &str) -> Result<Option<InstanceRecord>, Error>;
    /// The instance for work that any node may do (firing its due timers): like
    /// [`Tx::instance`], but where several nodes write, one that another unit holds right
    /// now is skipped ([`Claim::Busy`], PostgreSQL's `SKIP LOCKED`) rather than waited for.
    fn claim_instance(&mut self, namespace: &str, id: &str) -> Result<Claim, Error> {
        Ok(match self.instance(namespace, id)? {
            Some(i) => Claim::Got(Box::new(i)),
            None => Claim::Missing,
        })
    }
    /// Records a new instance.
    fn insert_instance(&mut self, record: &InstanceRecord) -> Result<(), Error>;
    /// Replaces the instance row.
    ///
    /// # Contract
    /// Refused with [`Error::Conflict`] unless the stored version is `expected_version`
    /// (optimistic concurrency: two writers never both advance one version).
    fn update_instance(
        &mut self,
        record: &InstanceRecord,
        expected_version: u64,
    ) -> Result<(), Error>;

    /// Queues an event for a paused instance.
    fn push_inbox(&mut self, record: &InboxRecord) -> Result<(), Error>;
    /// The instance's queued events in order, removed from the inbox.
    ///
    /// # Contract
    /// Events come back in the order they were pushed; each exactly once.
    fn take_inbox(&mut self, namespace: &str, instance_id: &str)
    -> Result<Vec<InboxRecord>, Error>;
    /// The queued event with this idempotency key, if any.
    fn inbox_key(
        &mut self,
        namespace: &str,
        instance_id: &str,
        key: &str,
    ) -> Result<Option<InboxRecord>, Error>;

    /// Deletes an instance and everything recorded of it: its row and labels, history,
    /// idempotency keys, timers, approvals, checkpoints, inbox, map progress, tasks and
    /// their attempts, its links to its parent and children, and the outbox entries
    /// addressed to it; whether it existed.
    ///
    /// # Contract
    /// Entries it sent stay (they are delivered); its children are not deleted here (the
    /// engine deletes them first); the log keeps its entries. No other instance's rows
    /// change.
    fn delete_instance(&mut self, namespace: &str, instance_id: &str) -> Result<bool, Error>;

    /// Records that `child_id` was spawned by `parent_id`.
    fn insert_child(&mut self, child: &ChildRecord) -> Result<(), Error>;
    /// The children an instance spawned, oldest first.
    fn children(&mut self, namespace: &str, parent_id: &str) -> Result<Vec<ChildRecord>, Error>;

    /// Inserts or replaces the progress of an instance's map state.
    fn put_map(
        &mut self,
        namespace: &str,
        instance_id: &str,
        state: &str,
        progress: &serde_json::Value,
    ) -> Result<(), Error>;
    /// The progress of a map state, if it is running.
    fn map_progress(
        &mut self,
        namespace: &str,
        instance_id: &str,
        state: &str,
    ) -> Result<Option<serde_json::Value>, Error>;
    /// The instance's map states in progress, by state path.
    fn maps_of(
        &mut self,
        namespace: &str,
        instance_id: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, Error>;
    /// Forgets a map state; whether it was there.
    fn delete_map(
        &mut self,
        namespace: &str,
        instance_id: &str,
        state: &str,
    ) -> Result<bool, Error>;
}
