//! One store type for both backends: SQLite in a data directory (the default), or
//! PostgreSQL when a database URL is given. Every command, the server and the tests that
//! run on both backends are written once against [`AnyStore`].
#![warn(missing_docs)]

#[cfg(feature = "testing")]
pub mod testing;

use std::path::Path;

use cairn_store::{
    ApprovalRecord, ApprovalStatus, AttemptRecord, CheckpointRecord, Error, Figure, HistoryRecord,
    InboxRecord, InstanceFilter, InstanceRecord, LogEntry, MachineRecord, Page, Reader,
    ScheduleRecord, Space, Store, TaskRecord, TaskStatus, TimerRecord, TokenRecord, TriggerRecord,
    Tx, Vacuumed,
};
pub use cairn_store_postgres::PgStore;
pub use cairn_store_sqlite::SqliteStore;
use chrono::{DateTime, Utc};

/// The store the settings name.
#[derive(Clone)]
pub enum AnyStore {
    /// The embedded SQLite store of a data directory.
    Sqlite(SqliteStore),
    /// A PostgreSQL database, shared by any number of nodes.
    Postgres(PgStore),
}

impl AnyStore {
    /// PostgreSQL at `database` when given, else SQLite in `data`.
    pub fn open(data: &Path, database: Option<&str>) -> Result<AnyStore, Error> {
        Self::open_with(data, database, SqliteOptions::default())
    }

    /// As [`AnyStore::open`], with SQLite's options.
    pub fn open_with(
        data: &Path,
        database: Option<&str>,
        sqlite: SqliteOptions,
    ) -> Result<AnyStore, Error> {
        match database {
            Some(url) => Ok(AnyStore::Postgres(PgStore::open(
                url,
                cairn_store_postgres::Options::default(),
            )?)),
            None => Ok(AnyStore::Sqlite(SqliteStore::open(data, sqlite)?)),
        }
    }

    /// Where the data is: the directory, or the database URL without its password.
    pub fn label(&self) -> String {
        match self {
            AnyStore::Sqlite(s) => s.path().display().to_string(),
            AnyStore::Postgres(p) => p.label(),
        }
    }

    /// The store's Prometheus counters.
    pub fn metrics(&self) -> String {
        match self {
            AnyStore::Sqlite(s) => s.write_stats().render(),
            AnyStore::Postgres(p) => p.render_metrics(),
        }
    }

    /// An online backup into `file` (SQLite only: PostgreSQL has `pg_dump`).
    pub fn backup(&self, file: &std::path::Path) -> Result<u64, Error> {
        match self {
            AnyStore::Sqlite(s) => s.backup(file),
            AnyStore::Postgres(_) => Err(Error::Refused(
                "backup writes SQLite files; back up PostgreSQL with pg_dump or its own tools"
                    .into(),
            )),
        }
    }

    /// Waits until the log shows every entry committed before this call (at once on
    /// SQLite; on PostgreSQL, once the transactions running now have ended).
    pub fn settle_log(&self) {
        if let AnyStore::Postgres(p) = self {
            let _ = p.settle_log(std::time::Duration::from_secs(20));
        }
    }

    /// The PostgreSQL store, when this is one.
    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            AnyStore::Postgres(p) => Some(p),
            AnyStore::Sqlite(_) => None,
        }
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Postgres($s) => $e,
        }
    };
}

impl Store for AnyStore {
    fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    {
        both!(self, s => s.write(work))
    }
    fn space(&self) -> Result<Space, Error> {
        both!(self, s => s.space())
    }
    fn vacuum(&self) -> Result<Vacuumed, Error> {
        both!(self, s => s.vacuum())
    }
}

impl Reader for AnyStore {
    fn machine(
        &self,
        ns: &str,
        name: &str,
        v: Option<u32>,
    ) -> Result<Option<MachineRecord>, Error> {
        both!(self, s => s.machine(ns, name, v))
    }
    fn machines(&self, ns: &str) -> Result<Vec<MachineRecord>, Error> {
        both!(self, s => s.machines(ns))
    }
    fn unreadable_machines(&self) -> Result<Vec<MachineRecord>, Error> {
        both!(self, s => s.unreadable_machines())
    }
    fn instance(&self, ns: &str, id: &str) -> Result<Option<InstanceRecord>, Error> {
        both!(self, s => s.instance(ns, id))
    }
    fn instances(&self, f: &InstanceFilter) -> Result<Page<InstanceRecord>, Error> {
        both!(self, s => s.instances(f))
    }
    fn instance_ids(&self, ns: Option<&str>) -> Result<Vec<(String, String)>, Error> {
        both!(self, s => s.instance_ids(ns))
    }
    fn history(
        &self,
        ns: &str,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, Error> {
        both!(self, s => s.history(ns, id, after, limit))
    }
    fn history_before(
        &self,
        ns: &str,
        id: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, Error> {
        both!(self, s => s.history_before(ns, id, before, limit))
    }
    fn transition(&self, ns: &str, id: &str, version: u64) -> Result<Option<HistoryRecord>, Error> {
        both!(self, s => s.transition(ns, id, version))
    }
    fn due_timers(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<TimerRecord>, Error> {
        both!(self, s => s.due_timers(now, limit))
    }
    fn timers(&self, ns: &str, id: &str) -> Result<Vec<TimerRecord>, Error> {
        both!(self, s => s.timers(ns, id))
    }
    fn approvals(
        &self,
        ns: &str,
        st: Option<ApprovalStatus>,
        id: Option<&str>,
    ) -> Result<Vec<ApprovalRecord>, Error> {
        both!(self, s => s.approvals(ns, st, id))
    }
    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        both!(self, s => s.approval(id))
    }
    fn checkpoints(&self, ns: &str, id: &str) -> Result<Vec<CheckpointRecord>, Error> {
        both!(self, s => s.checkpoints(ns, id))
    }
    fn inbox(&self, ns: &str, id: &str) -> Result<Vec<InboxRecord>, Error> {
        both!(self, s => s.inbox(ns, id))
    }
    fn finished_before(
        &self,
        ns: &str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        both!(self, s => s.finished_before(ns, before, limit))
    }
    fn tasks(
        &self,
        ns: &str,
        queue: Option<&str>,
        st: Option<TaskStatus>,
        id: Option<&str>,
    ) -> Result<Vec<TaskRecord>, Error> {
        both!(self, s => s.tasks(ns, queue, st, id))
    }
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, Error> {
        both!(self, s => s.token_by_hash(hash))
    }
    fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        both!(self, s => s.tokens())
    }
    fn task(&self, id: &str) -> Result<Option<TaskRecord>, Error> {
        both!(self, s => s.task(id))
    }
    fn task_work(
        &self,
        queues: &[String],
        ns: Option<&[String]>,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        both!(self, s => s.task_work(queues, ns, now))
    }
    fn attempts(&self, task_id: &str) -> Result<Vec<AttemptRecord>, Error> {
        both!(self, s => s.attempts(task_id))
    }
    fn triggers(&self, ns: &str) -> Result<Vec<TriggerRecord>, Error> {
        both!(self, s => s.triggers(ns))
    }
    fn schedules(&self, ns: &str) -> Result<Vec<ScheduleRecord>, Error> {
        both!(self, s => s.schedules(ns))
    }
    fn schedules_due(&self, now: DateTime<Utc>) -> Result<bool, Error> {
        both!(self, s => s.schedules_due(now))
    }
    fn outbox_waiting(&self) -> Result<bool, Error> {
        both!(self, s => s.outbox_waiting())
    }
    fn figures(&self, ns: Option<&str>) -> Result<Vec<Figure>, Error> {
        both!(self, s => s.figures(ns))
    }
    fn timers_due(&self, now: DateTime<Utc>, cap: usize) -> Result<Vec<(String, u64)>, Error> {
        both!(self, s => s.timers_due(now, cap))
    }
    fn log(&self, after: i64, limit: usize) -> Result<Vec<LogEntry>, Error> {
        both!(self, s => s.log(after, limit))
    }
    fn log_horizon(&self) -> Result<i64, Error> {
        both!(self, s => s.log_horizon())
    }
}

pub use cairn_store_postgres::Options as PgOptions;
pub use cairn_store_postgres::{create_database, drop_database, is_url as is_postgres_url, redact};
pub use cairn_store_sqlite::Options as SqliteOptions;
