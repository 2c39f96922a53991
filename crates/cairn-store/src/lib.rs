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

pub use copy::{Export, Import, Row, RowSink, TABLES, table};
pub use error::Error;
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

/// Writes inside one unit of work. Every method sees the unit's own earlier writes.
///
/// # Contract
/// - Nothing written through a `Tx` is visible to readers until the unit commits, and a
///   unit whose closure returns an error leaves no trace: its writes are rolled back
///   alone, other units committed with it are unaffected.
/// - Insert methods refuse a duplicate key with [`Error::Conflict`].
pub trait Tx {
    /// The machine `name` at `version`, or its latest version when `version` is `None`.
    ///
    /// # Contract
    /// A deleted version is not found. A version whose stored definition cannot be read
    /// back (stored by an older Cairn) comes back with `definition` null, never as an
    /// error, so it can be listed, reported and deleted.
    fn machine(
        &mut self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<MachineRecord>, Error>;
    /// Records a machine version.
    fn insert_machine(&mut self, record: &MachineRecord) -> Result<(), Error>;
    /// The highest version `name` ever had, deleted ones included: a version number is
    /// never given twice.
    fn max_machine_version(&mut self, namespace: &str, name: &str) -> Result<Option<u32>, Error>;
    /// Deletes one version: it is no longer found, its definition is dropped, and its
    /// number stays taken. Whether it existed (and was not deleted already).
    fn delete_machine(
        &mut self,
        namespace: &str,
        name: &str,
        version: u32,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, Error>;
    /// How many instances, in any status, run on this version.
    fn machine_in_use(&mut self, namespace: &str, name: &str, version: u32) -> Result<u64, Error>;

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

    /// Sets (or resets) the timer of `(namespace, instance_id, event)`.
    fn set_timer(&mut self, timer: &TimerRecord) -> Result<(), Error>;
    /// One timer of an instance by its event, if set.
    fn timer(
        &mut self,
        namespace: &str,
        instance_id: &str,
        event: &str,
    ) -> Result<Option<TimerRecord>, Error>;
    /// Removes one timer; whether it existed.
    ///
    /// # Contract
    /// Of two units removing the same timer, exactly one sees `true`: a timer fires once.
    fn delete_timer(
        &mut self,
        namespace: &str,
        instance_id: &str,
        event: &str,
    ) -> Result<bool, Error>;
    /// Removes every timer of the instance.
    fn delete_timers(&mut self, namespace: &str, instance_id: &str) -> Result<(), Error>;
    /// The instance's timers due at or before `now`, earliest first.
    fn due_timers_of(
        &mut self,
        namespace: &str,
        instance_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<TimerRecord>, Error>;

    /// Records a pending approval.
    fn insert_approval(&mut self, approval: &ApprovalRecord) -> Result<(), Error>;
    /// One approval by id.
    fn approval(&mut self, id: &str) -> Result<Option<ApprovalRecord>, Error>;
    /// Replaces an approval (its status and decisions).
    fn update_approval(&mut self, approval: &ApprovalRecord) -> Result<(), Error>;
    /// The instance's pending approvals, oldest first.
    fn pending_approvals(
        &mut self,
        namespace: &str,
        instance_id: &str,
    ) -> Result<Vec<ApprovalRecord>, Error>;

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
    /// Deletes the instance's history records with `seq` below `before_seq`.
    fn delete_history_before(
        &mut self,
        namespace: &str,
        instance_id: &str,
        before_seq: u64,
    ) -> Result<u64, Error>;
    /// Replaces one history record (compaction turns the oldest kept record into a base).
    fn replace_history(&mut self, record: &HistoryRecord) -> Result<(), Error>;

    /// Records a pending task.
    fn insert_task(&mut self, task: &TaskRecord) -> Result<(), Error>;
    /// One task by id.
    fn task(&mut self, id: &str) -> Result<Option<TaskRecord>, Error>;
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

    /// Records that `child_id` was spawned by `parent_id`.
    fn insert_child(&mut self, child: &ChildRecord) -> Result<(), Error>;
    /// The children an instance spawned, oldest first.
    fn children(&mut self, namespace: &str, parent_id: &str) -> Result<Vec<ChildRecord>, Error>;

    /// Appends to the outbox; `seq` is assigned.
    ///
    /// # Contract
    /// Entries come back from [`Tx::outbox`] in the order they were pushed.
    fn push_outbox(&mut self, entry: &OutboxRecord) -> Result<i64, Error>;
    /// The oldest `limit` outbox entries.
    fn outbox(&mut self, limit: usize) -> Result<Vec<OutboxRecord>, Error>;
    /// Removes a delivered entry; whether it was there.
    fn delete_outbox(&mut self, seq: i64) -> Result<bool, Error>;

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

    /// Stores a trigger; a name in use in the namespace is a conflict.
    fn insert_trigger(&mut self, trigger: &TriggerRecord) -> Result<(), Error>;
    /// Removes a trigger; whether it existed.
    fn delete_trigger(&mut self, namespace: &str, name: &str) -> Result<bool, Error>;
    /// The namespace's triggers, by name.
    fn triggers(&mut self, namespace: &str) -> Result<Vec<TriggerRecord>, Error>;

    /// Stores a schedule; a name in use in the namespace is a conflict.
    fn insert_schedule(&mut self, schedule: &ScheduleRecord) -> Result<(), Error>;
    /// Removes a schedule; whether it existed.
    fn delete_schedule(&mut self, namespace: &str, name: &str) -> Result<bool, Error>;
    /// Schedules whose next tick is at or before `now`, earliest first.
    fn due_schedules(
        &mut self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, Error>;
    /// Moves a schedule's next tick (and its last, when it started an instance).
    ///
    /// # Contract
    /// Done in the unit that starts the tick's instance, so a tick runs once.
    fn update_schedule(&mut self, schedule: &ScheduleRecord) -> Result<(), Error>;

    /// Records a token.
    fn insert_token(&mut self, token: &TokenRecord) -> Result<(), Error>;
    /// Marks a token revoked; whether it existed.
    fn revoke_token(&mut self, id: &str, at: chrono::DateTime<chrono::Utc>) -> Result<bool, Error>;

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
