//! [`TasksTx`]: tasks, their leases and attempts.

use crate::*;

/// Tasks, their leases and attempts. Part of [`Tx`], whose contract holds for every method.
pub trait TasksTx {
    /// Records a pending task.
    fn insert_task(&mut self, task: &TaskRecord) -> Result<(), Error>;
    /// One task by id.
    fn task(&mut self, id: &str) -> Result<Option<TaskRecord>, Error>;
    /// The namespace and instance of each of these tasks that exists, as
    /// `(id, namespace, instance_id)`, in one read (a batch of outcomes orders itself by
    /// instance with it).
    fn task_instances(&mut self, ids: &[String]) -> Result<Vec<(String, String, String)>, Error>;
    /// Replaces a task's mutable fields (status, attempt, lease, availability, result).
    fn update_task(&mut self, task: &TaskRecord) -> Result<(), Error>;
    /// The instance's open (pending or leased) tasks.
    fn open_tasks(&mut self, namespace: &str, instance_id: &str) -> Result<Vec<TaskRecord>, Error>;
    /// Pending tasks of these queues available at `now`, oldest first; only of these
    /// namespaces when given.
    ///
    /// # Contract
    /// Within one unit, a task returned here and then leased by `update_task` is never
    /// returned to another unit: units are serialised (and PostgreSQL claims with
    /// `FOR UPDATE SKIP LOCKED`).
    fn claimable_tasks(
        &mut self,
        queues: &[String],
        namespaces: Option<&[String]>,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, Error>;
    /// Leased tasks whose lease expired before `now`.
    fn expired_leases(
        &mut self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, Error>;
    /// Inserts or replaces one attempt record.
    fn put_attempt(&mut self, attempt: &AttemptRecord) -> Result<(), Error>;
    /// A task's attempts, in order (what an outcome reported before is compared with).
    fn attempts(&mut self, task_id: &str) -> Result<Vec<AttemptRecord>, Error>;
}
