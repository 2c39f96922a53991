//! Storage traits and record types: machines (immutable versions), instances, history,
//! idempotency keys and the commit-ordered log, every record in a namespace.
//!
//! One event is one unit of work across all of these, so writes go through
//! [`Store::write`]: a closure over a [`Tx`] that the backend runs atomically. Reads go
//! through [`Reader`]. Each promise is written as a `# Contract` and tested, against
//! every backend, by `cairn-store-tests`. This crate knows no database driver; backends
//! are `cairn-store-sqlite` and `cairn-store-postgres`. It knows no statechart
//! logic either: that is `cairn-core`, driven by `cairn-engine`.
#![warn(missing_docs)]

mod copy;
mod error;
mod record;
mod tx;

pub use copy::{Export, Import, Row, RowSink, TABLES, table};
pub use error::Error;
pub use tx::{
    ApprovalsTx, DefinitionsTx, HistoryTx, InstancesTx, OutboxTx, PartsTx, TasksTx, TimersTx,
    TokensTx, Tx,
};

pub use record::{
    ApprovalRecord, ApprovalStatus, AttemptRecord, CheckpointRecord, ChildRecord, Decision, Figure,
    HistoryKind, HistoryRecord, IdempotencyRecord, InboxRecord, InstanceFilter, InstanceRecord,
    LogEntry, MachineRecord, NewLogEntry, OutboxRecord, Page, ScheduleRecord, TaskRecord,
    TaskStatus, TimerRecord, TokenRecord, TriggerRecord, dwell,
};

/// The answer to [`Tx::claim_instance`].
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// Locked for this unit.
    Got(Box<InstanceRecord>),
    /// Another unit holds it now.
    Busy,
    /// No such instance.
    Missing,
}

/// Reads of committed data.
///
/// # Contract
/// Readers see only committed units, never part of one.
pub trait Reader: Send + Sync {
    /// One version of a machine (the latest when `version` is `None`).
    fn machine(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<MachineRecord>, Error>;
    /// The latest version of every machine in the namespace, by name (deleted versions
    /// left out; as [`Tx::machine`], one that cannot be read back has a null definition).
    fn machines(&self, namespace: &str) -> Result<Vec<MachineRecord>, Error>;
    /// Every stored machine version whose definition cannot be read back, in any
    /// namespace: what `cairn repair` looks for.
    fn unreadable_machines(&self) -> Result<Vec<MachineRecord>, Error>;
    /// One instance, as committed.
    fn instance(&self, namespace: &str, id: &str) -> Result<Option<InstanceRecord>, Error>;
    /// Instances matching the filter in creation order, after the filter's cursor.
    ///
    /// # Contract
    /// Paging with the returned `next` cursor visits every matching instance exactly once
    /// while no instance is created or deleted.
    fn instances(&self, filter: &InstanceFilter) -> Result<Page<InstanceRecord>, Error>;
    /// Every namespace and id, for `verify` of all.
    fn instance_ids(&self, namespace: Option<&str>) -> Result<Vec<(String, String)>, Error>;
    /// The instance's history after `after_seq` (exclusive), in `seq` order.
    fn history(
        &self,
        namespace: &str,
        instance_id: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, Error>;
    /// The newest `limit` history records with a `seq` below `before_seq`, oldest first.
    fn history_before(
        &self,
        namespace: &str,
        instance_id: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, Error>;
    /// The transition (start or event) that produced `version`.
    fn transition(
        &self,
        namespace: &str,
        instance_id: &str,
        version: u64,
    ) -> Result<Option<HistoryRecord>, Error>;
    /// Timers due at or before `now` across every instance, earliest first.
    fn due_timers(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, Error>;
    /// The instance's timers.
    fn timers(&self, namespace: &str, instance_id: &str) -> Result<Vec<TimerRecord>, Error>;
    /// Approvals of a namespace, optionally of one status and one instance, oldest first.
    fn approvals(
        &self,
        namespace: &str,
        status: Option<ApprovalStatus>,
        instance_id: Option<&str>,
    ) -> Result<Vec<ApprovalRecord>, Error>;
    /// One approval by id.
    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, Error>;
    /// An instance's checkpoints, oldest first.
    fn checkpoints(
        &self,
        namespace: &str,
        instance_id: &str,
    ) -> Result<Vec<CheckpointRecord>, Error>;
    /// The instance's queued events, in order.
    fn inbox(&self, namespace: &str, instance_id: &str) -> Result<Vec<InboxRecord>, Error>;
    /// Finished instances last updated before `before`, oldest first.
    fn finished_before(
        &self,
        namespace: &str,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<String>, Error>;
    /// Tasks, optionally of one queue, status and instance, oldest first.
    fn tasks(
        &self,
        namespace: &str,
        queue: Option<&str>,
        status: Option<TaskStatus>,
        instance_id: Option<&str>,
    ) -> Result<Vec<TaskRecord>, Error>;
    /// The token whose secret hashes to `hash`, revoked or not.
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, Error>;
    /// Every token.
    fn tokens(&self) -> Result<Vec<TokenRecord>, Error>;
    /// One task by id.
    fn task(&self, id: &str) -> Result<Option<TaskRecord>, Error>;
    /// Whether a claim could find work now: a claimable task of these queues (and
    /// namespaces), or an expired lease to reclaim. A cheap read before a write.
    fn task_work(
        &self,
        queues: &[String],
        namespaces: Option<&[String]>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, Error>;
    /// A task's attempts, in order.
    fn attempts(&self, task_id: &str) -> Result<Vec<AttemptRecord>, Error>;
    /// The namespace's triggers, by name.
    fn triggers(&self, namespace: &str) -> Result<Vec<TriggerRecord>, Error>;
    /// The namespace's schedules, by name.
    fn schedules(&self, namespace: &str) -> Result<Vec<ScheduleRecord>, Error>;
    /// Whether a schedule's next tick is at or before `now`.
    fn schedules_due(&self, now: chrono::DateTime<chrono::Utc>) -> Result<bool, Error>;
    /// Whether the outbox holds entries waiting for delivery.
    fn outbox_waiting(&self) -> Result<bool, Error>;
    /// The figures of a namespace (of every namespace when `None`), as maintained by the
    /// units that changed what they count: a read of a few rows, never a scan.
    ///
    /// # Contract
    /// Each figure equals a count of what is stored: instances by (machine, status),
    /// `transitions` (history records of kind start or event), tasks by (queue, status),
    /// timers, outbox entries addressed to the namespace; `dwell_ms`/`dwell_visits` are
    /// what [`Tx::add_figure`] added. Figures at zero may be left out.
    fn figures(&self, namespace: Option<&str>) -> Result<Vec<Figure>, Error>;
    /// Timers due at `now`, per namespace, counting at most `cap` in all.
    fn timers_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        cap: usize,
    ) -> Result<Vec<(String, u64)>, Error>;
    /// Log entries after `position`, in position order.
    fn log(&self, after: i64, limit: usize) -> Result<Vec<LogEntry>, Error>;
    /// The log's horizon: the last position retention removed (0 while none was).
    /// Entries at or below it are gone; it only grows.
    fn log_horizon(&self) -> Result<i64, Error>;
}

/// The space a store takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Space {
    /// Bytes the data takes (SQLite: the database's pages; PostgreSQL: Cairn's tables
    /// with their indexes and TOAST).
    pub bytes: u64,
    /// Of those, bytes free for reuse (SQLite's free pages; PostgreSQL does not say).
    pub free_bytes: Option<u64>,
}

/// What [`Store::vacuum`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Vacuumed {
    /// The space before.
    pub before: Space,
    /// The space after.
    pub after: Space,
    /// The bounded steps it took.
    pub steps: u64,
    /// The longest of them, in microseconds (how long it held writers up, at most).
    pub longest_step_us: u64,
}

/// A storage backend.
pub trait Store: Reader + Clone + 'static {
    /// Runs `work` as one unit of work and returns its result once committed.
    ///
    /// # Contract
    /// - Atomic: all of the unit's writes commit together or not at all.
    /// - Durable: when `write` returns `Ok`, the unit has been committed and synced (it
    ///   survives a crash of the process and of the machine).
    /// - Isolated: the units of one store are serialised; each sees the committed effect
    ///   of every unit acknowledged before it was submitted.
    /// - An `Err` from `work` rolls back that unit only and is returned as it is: the
    ///   caller's own error type `E`, so a layer above the store (the engine) keeps its
    ///   typed errors through the unit.
    /// - If the commit itself fails, every unit in it gets the error (as `E::from`); none
    ///   is applied.
    /// - A unit that panics is rolled back alone and answered with [`Error::Database`].
    fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static;

    /// The space the store takes now.
    fn space(&self) -> Result<Space, Error>;

    /// Gives space freed by deletions back (SQLite: to the file system; PostgreSQL: to
    /// reuse, and statistics refreshed).
    ///
    /// # Contract
    /// Works in bounded steps, each holding writers up no longer than about one unit of
    /// work (a group commit), so it may run under full load; stopped at any point, it has
    /// lost nothing.
    fn vacuum(&self) -> Result<Vacuumed, Error>;
}
