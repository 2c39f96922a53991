//! The PostgreSQL backend of `cairn-store`: several stateless `cairn serve` nodes on one
//! database.
//!
//! - **Units of work** are PostgreSQL transactions (READ COMMITTED) on pooled
//!   connections. A unit that reads an instance through [`Tx::instance`] takes its row
//!   lock (`FOR UPDATE`) for the rest of the unit, so the units of one instance are
//!   serialised across nodes, and `update_instance` still checks the version.
//! - **Claims** skip what another node holds: tasks and expired leases (`FOR UPDATE OF
//!   task, instance SKIP LOCKED`), due schedules (`SKIP LOCKED`), outbox entries (an
//!   advisory lock per receiver keeps one receiver's entries in order). Timers fire once
//!   because the firing unit deletes the timer under the instance's lock.
//! - **The log** is commit-ordered: a position is the writing transaction's id shifted
//!   left 20 bits plus the entry's index in it, and readers only see positions below the
//!   oldest running transaction (see `migrations/0001_initial.sql`).
//! - **Time** comes from the database's clock ([`PgStore::now`]), so nodes with skewed
//!   clocks agree on when timers, leases and schedules are due.
//! - **Notifications**: [`PgStore::notify`] and [`PgStore::listen`] carry "the log
//!   moved" (`cairn_log`) and "tasks were enqueued" (`cairn_tasks`) between nodes,
//!   batched by the caller (one NOTIFY per interval, never one per unit, which would
//!   serialise commits).
//! - Migrations are embedded and run under an advisory lock, so nodes starting together
//!   do not race.
//!
//! Holds no statechart logic. Driver errors become `store::Error` in `db_err` only.
#![warn(missing_docs)]

mod conn;
mod copy;
mod sql;
#[cfg(feature = "testing")]
pub mod testing;
mod tx;

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cairn_store::{
    ApprovalRecord, ApprovalStatus, CheckpointRecord, Error, Figure, HistoryRecord, InboxRecord,
    InstanceFilter, InstanceRecord, LogEntry, MachineRecord, Page, Reader, Space, Store,
    TimerRecord, Tx, Vacuumed,
};
use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;

use crate::conn::PgClient;
use crate::sql::{Db, Stmts};

/// The embedded migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "actors", include_str!("../migrations/0002_actors.sql")),
    (
        3,
        "machine_deletion",
        include_str!("../migrations/0003_machine_deletion.sql"),
    ),
    (
        4,
        "deletion_indexes",
        include_str!("../migrations/0004_deletion_indexes.sql"),
    ),
    (5, "meta", include_str!("../migrations/0005_meta.sql")),
    (6, "figures", include_str!("../migrations/0006_figures.sql")),
    (
        7,
        "addressed_outcomes",
        include_str!("../migrations/0007_addressed_outcomes.sql"),
    ),
    (
        8,
        "instances_by_seq",
        include_str!("../migrations/0008_instances_by_seq.sql"),
    ),
    (
        9,
        "expect_rows",
        include_str!("../migrations/0009_expect_rows.sql"),
    ),
];

/// The migration that adds `figures`: after its SQL, the time spent in states so far is
/// replayed from history.
const FIGURES: u32 = 6;

/// The time spent in states by every instance so far, replayed from its history (as each
/// unit keeps it from now on), and when each of its active leaves was entered.
fn backfill_dwell(tx: &mut PgClient) -> Result<(), Error> {
    use std::collections::{BTreeMap, HashMap};
    let instances: Vec<(String, String, String)> = tx
        .query("SELECT namespace, id, machine FROM instances", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let history = tx.prepare(
        "SELECT from_configuration, to_configuration, created_at FROM history \
         WHERE namespace = $1 AND instance_id = $2 ORDER BY seq",
    )?;
    let set = tx.prepare("UPDATE instances SET entered = $3 WHERE namespace = $1 AND id = $2")?;
    let mut sums: HashMap<(String, String, String), (i64, i64)> = HashMap::new();
    for (ns, id, machine) in instances {
        let mut entered = BTreeMap::new();
        for r in tx.query(&history, &[&ns, &id])? {
            let from: tokio_postgres::types::Json<Vec<String>> = r.get(0);
            let to: tokio_postgres::types::Json<Vec<String>> = r.get(1);
            let at: DateTime<Utc> = r.get(2);
            for (leaf, ms) in cairn_store::dwell(&mut entered, &from.0, &to.0, at) {
                let e = sums.entry((ns.clone(), machine.clone(), leaf)).or_default();
                e.0 += ms;
                e.1 += 1;
            }
        }
        tx.execute(&set, &[&ns, &id, &tokio_postgres::types::Json(&entered)])?;
    }
    for ((ns, machine, state), (ms, visits)) in sums {
        for (kind, value) in [("dwell_ms", ms), ("dwell_visits", visits)] {
            tx.execute(
                "INSERT INTO figures (namespace, kind, name, detail, value) VALUES ($1, $2, $3, $4, $5)",
                &[&ns, &kind, &machine, &state, &value],
            )?;
        }
    }
    Ok(())
}

/// Commits of a node between two folds of the figures' changes (`figure_deltas`).
const FOLD_EVERY: u64 = 256;

/// The node's commit counts (multiples of `FOLD_EVERY`) at which it refreshes the
/// planner's statistics of the busy tables. A connection keeps the plan PostgreSQL made
/// for a prepared statement until the statistics of its tables change; a plan made while
/// a table was empty (a fresh database) reads `instances` by any index that starts with
/// the namespace, or `tasks` from end to end, for every lookup, and autovacuum refreshes
/// the statistics only a minute or more later. Measured on W5: 52,000 instance lookups
/// read 85 million index entries before this.
const EARLY_ANALYZE: [u64; 3] = [256, 4096, 65536];

const ANALYZE: &str = "ANALYZE instances, instance_labels, tasks, task_attempts, timers, history, log, idempotency, figure_deltas, outbox";

/// The advisory lock key migrations run under.
const MIGRATION_LOCK: i64 = 0x0063_6169_726e_0001;

/// Maps a driver error to `store::Error`: the one place this happens.
pub(crate) fn db_err(e: tokio_postgres::Error) -> Error {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => Error::Conflict(e.to_string()),
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            Error::Locked(format!(
                "the database gave way to a concurrent unit ({}); retry",
                e.as_db_error().map_or("", |d| d.message())
            ))
        }
        Some(_) => Error::Database(e.as_db_error().map_or_else(
            || e.to_string(),
            |d| format!("{}: {}", d.code().code(), d.message()),
        )),
        None if e.is_closed() => Error::Database(format!("the database connection closed: {e}")),
        None => {
            // The driver's message ("error connecting to server") hides its cause.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            Error::Database(text)
        }
    }
}

/// How the store runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Connections kept at most (units and reads share them).
    pub max_connections: usize,
    /// How long a unit or read waits for a free connection.
    pub acquire_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// One pooled connection and its prepared statements.
pub(crate) struct Conn {
    client: PgClient,
    stmts: Stmts,
}

struct Pool {
    config: tokio_postgres::Config,
    idle: Mutex<(Vec<Conn>, usize)>,
    freed: Condvar,
    options: Options,
}

impl Pool {
    fn connect(&self) -> Result<Conn, Error> {
        let client = PgClient::connect(&self.config)?;
        Ok(Conn {
            client,
            stmts: Stmts::new(),
        })
    }

    fn get(&self) -> Result<Conn, Error> {
        let deadline = std::time::Instant::now() + self.options.acquire_timeout;
        let mut g = self.idle.lock().map_err(|_| Error::Closed)?;
        loop {
            if let Some(c) = g.0.pop() {
                if !c.client.is_closed() {
                    return Ok(c);
                }
                g.1 -= 1;
                continue;
            }
            if g.1 < self.options.max_connections {
                g.1 += 1;
                drop(g);
                return self.connect().inspect_err(|_| {
                    if let Ok(mut g) = self.idle.lock() {
                        g.1 -= 1;
                    }
                    self.freed.notify_one();
                });
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::Locked(format!(
                    "all {} database connections stayed busy for {:?}",
                    self.options.max_connections, self.options.acquire_timeout
                )));
            }
            g = self
                .freed
                .wait_timeout(g, deadline - now)
                .map_err(|_| Error::Closed)?
                .0;
        }
    }

    /// Returns a connection; a broken one is dropped (and its slot freed).
    fn put(&self, c: Conn) {
        if let Ok(mut g) = self.idle.lock() {
            if c.client.is_closed() {
                g.1 -= 1;
            } else {
                g.0.push(c);
            }
        }
        self.freed.notify_one();
    }
}

impl Drop for Pool {
    /// Closes the connections on a thread of their own: closing blocks, and the last
    /// clone of a store may be dropped on a thread that drives an async runtime.
    fn drop(&mut self) {
        let idle = self
            .idle
            .get_mut()
            .map(|g| std::mem::take(&mut g.0))
            .unwrap_or_default();
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("cairn-pg-close".into())
                .spawn(move || drop(idle));
        }
    }
}

struct Inner {
    pool: Pool,
    /// The database clock minus this node's, in microseconds, measured at open and
    /// refreshed by [`PgStore::sync_clock`].
    skew_us: AtomicI64,
    commits: AtomicU64,
    units: AtomicU64,
    failed_commits: AtomicU64,
    label: String,
}

/// A store on a PostgreSQL database. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.inner.label)
            .finish()
    }
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/database`), runs the migrations this
    /// version has not yet applied, and measures the database clock.
    pub fn open(url: &str, options: Options) -> Result<PgStore, Error> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::Database(format!("bad PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("cairn");
        // No parallel plans: Cairn's statements are short lookups and pages, for which a
        // parallel plan's start (tens of milliseconds: a page filtered by a label took
        // 146 ms at 1,000,000 instances with it, 14-29 ms without) costs more than it
        // saves. Options the URL gives are kept.
        let session = match config.get_options() {
            Some(o) => format!("{o} -c max_parallel_workers_per_gather=0"),
            None => "-c max_parallel_workers_per_gather=0".to_string(),
        };
        config.options(&session);
        let label = redact(url);
        let store = PgStore {
            inner: Arc::new(Inner {
                pool: Pool {
                    config,
                    idle: Mutex::new((Vec::new(), 0)),
                    freed: Condvar::new(),
                    options,
                },
                skew_us: AtomicI64::new(0),
                commits: AtomicU64::new(0),
                units: AtomicU64::new(0),
                failed_commits: AtomicU64::new(0),
                label,
            }),
        };
        let at = |e: Error| match e {
            Error::Database(m) => {
                Error::Database(format!("PostgreSQL at {}: {m}", store.inner.label))
            }
            other => other,
        };
        store.migrate().map_err(at)?;
        store.sync_clock().map_err(at)?;
        Ok(store)
    }

    /// The database, its password hidden.
    pub fn label(&self) -> String {
        self.inner.label.clone()
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, Error>) -> Result<T, Error> {
        let mut c = self.inner.pool.get()?;
        let r = f(&mut c);
        self.inner.pool.put(c);
        r
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&mut Db<'_, PgClient>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.with_conn(|c| {
            let mut db = Db {
                c: &mut c.client,
                stmts: &mut c.stmts,
            };
            f(&mut db)
        })
    }

    fn migrate(&self) -> Result<(), Error> {
        self.with_conn(|c| {
            let tx = &mut c.client;
            tx.batch_execute("BEGIN")?;
            let r = Self::migrate_in(tx);
            match r {
                Ok(()) => tx.batch_execute("COMMIT"),
                Err(e) => {
                    let _ = tx.batch_execute("ROLLBACK");
                    Err(e)
                }
            }
        })
    }

    fn migrate_in(tx: &mut PgClient) -> Result<(), Error> {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS cairn_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM cairn_migrations ORDER BY version", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(&newest) = applied.last()
            && newest as usize > MIGRATIONS.len()
        {
            return Err(Error::Corrupt(format!(
                "the database has schema version {newest}, newer than this cairn knows ({}); upgrade cairn",
                MIGRATIONS.len()
            )));
        }
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(&(*version as i32)) {
                continue;
            }
            tx.batch_execute(sql)?;
            if *version == FIGURES {
                backfill_dwell(tx)?;
            }
            tx.execute(
                "INSERT INTO cairn_migrations (version, name) VALUES ($1, $2)",
                &[&(*version as i32), name],
            )?;
        }
        Ok(())
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<u32, Error> {
        self.read(|db| {
            Ok(db
                .opt(
                    "SELECT COALESCE(MAX(version), 0) AS v FROM cairn_migrations",
                    &[],
                )?
                .map_or(0, |r| r.get::<_, i32>("v") as u32))
        })
    }

    /// Measures the database clock against this node's (half the round trip is taken as
    /// the transit time) and remembers the difference for [`PgStore::now`].
    pub fn sync_clock(&self) -> Result<(), Error> {
        self.read(|db| {
            let sent = Utc::now();
            let row = db
                .opt("SELECT clock_timestamp() AS t", &[])?
                .ok_or_else(|| Error::Database("no clock".into()))?;
            let back = Utc::now();
            let theirs: DateTime<Utc> = row.get("t");
            let mid = sent + (back - sent) / 2;
            let skew = (theirs - mid).num_microseconds().unwrap_or(0);
            self.inner.skew_us.store(skew, Ordering::Relaxed);
            Ok(())
        })
    }

    /// Now, by the database's clock (this node's clock plus the measured difference).
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::microseconds(self.inner.skew_us.load(Ordering::Relaxed))
    }

    /// The measured difference between the database clock and this node's.
    pub fn clock_skew(&self) -> chrono::Duration {
        chrono::Duration::microseconds(self.inner.skew_us.load(Ordering::Relaxed))
    }

    /// Waits (up to `timeout`) until every transaction running now has ended, so that
    /// [`Reader::log`] shows every entry committed before this call; whether it did.
    pub fn settle_log(&self, timeout: Duration) -> Result<bool, Error> {
        let deadline = std::time::Instant::now() + timeout;
        let xmax: i64 = self.read(|db| {
            Ok(db
                .opt(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS x",
                    &[],
                )?
                .map_or(0, |r| r.get("x")))
        })?;
        loop {
            let xmin: i64 = self.read(|db| {
                Ok(db
                    .opt(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x",
                        &[],
                    )?
                    .map_or(0, |r| r.get("x")))
            })?;
            if xmin >= xmax {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Tells every node listening what moved: the log, and whether tasks were enqueued
    /// (one transaction of `NOTIFY`s, outside any unit).
    pub fn notify(&self, log: bool, tasks: bool) -> Result<(), Error> {
        let sql = match (log, tasks) {
            (true, true) => "NOTIFY cairn_log; NOTIFY cairn_tasks",
            (true, false) => "NOTIFY cairn_log",
            (false, true) => "NOTIFY cairn_tasks",
            (false, false) => return Ok(()),
        };
        self.with_conn(|c| c.client.batch_execute(sql))
    }

    /// A dedicated connection listening for [`PgStore::notify`]; see [`Listener`].
    pub fn listen(&self) -> Result<Listener, Error> {
        let mut client = PgClient::connect(&self.inner.pool.config)?;
        client.batch_execute("LISTEN cairn_log; LISTEN cairn_tasks")?;
        Ok(Listener { client })
    }

    /// Units committed by this node so far.
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// The Prometheus text of the store's counters.
    pub fn render_metrics(&self) -> String {
        let i = &self.inner;
        let (idle, open) = i
            .pool
            .idle
            .lock()
            .map(|g| (g.0.len(), g.1))
            .unwrap_or((0, 0));
        format!(
            "# TYPE cairn_store_commits_total counter\ncairn_store_commits_total {}\n\
             # TYPE cairn_store_units_total counter\ncairn_store_units_total {}\n\
             # TYPE cairn_store_failed_commits_total counter\ncairn_store_failed_commits_total {}\n\
             # TYPE cairn_store_statements_total counter\ncairn_store_statements_total {}\n\
             # TYPE cairn_store_round_trips_total counter\ncairn_store_round_trips_total {}\n\
             # TYPE cairn_store_connections gauge\ncairn_store_connections{{state=\"open\"}} {open}\ncairn_store_connections{{state=\"idle\"}} {idle}\n",
            i.commits.load(Ordering::Relaxed),
            i.units.load(Ordering::Relaxed),
            i.failed_commits.load(Ordering::Relaxed),
            sql::STATEMENTS.load(Ordering::Relaxed),
            conn::ROUND_TRIPS.load(Ordering::Relaxed),
        )
    }
}

/// A connection that waits for the notifications of [`PgStore::notify`].
pub struct Listener {
    client: PgClient,
}

/// What other nodes announced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// The log moved.
    pub log: bool,
    /// Tasks were enqueued.
    pub tasks: bool,
}

impl Listener {
    /// Waits up to `timeout` for notifications; what they announced (nothing on timeout).
    pub fn wait(&mut self, timeout: Duration) -> Result<Moved, Error> {
        let mut moved = Moved::default();
        for n in self.client.notifications(timeout)? {
            match n.channel() {
                "cairn_tasks" => moved.tasks = true,
                _ => moved.log = true,
            }
        }
        Ok(moved)
    }
}

/// Creates the database `name` on the server of `url` (connecting to `url`'s database),
/// and returns the URL of the new one; for benchmarks that need a scratch database beside
/// the one they were given. Refused when `name` is not a plain identifier.
pub fn create_database(url: &str, name: &str) -> Result<String, Error> {
    plain_name(name)?;
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| Error::Database(format!("bad PostgreSQL URL: {e}")))?;
    let mut c = PgClient::connect(&config)?;
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
    c.batch_execute(&format!("CREATE DATABASE {name}"))?;
    Ok(with_database(url, name))
}

/// Drops the database `name` on the server of `url` (see [`create_database`]).
pub fn drop_database(url: &str, name: &str) -> Result<(), Error> {
    plain_name(name)?;
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| Error::Database(format!("bad PostgreSQL URL: {e}")))?;
    let mut c = PgClient::connect(&config)?;
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
}

fn plain_name(name: &str) -> Result<(), Error> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "`{name}` is not a plain database name (a-z, 0-9, _)"
        )))
    }
}

/// `url` naming the database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_end = base.find("://").map_or(0, |s| s + 3);
    match base[authority_end..].find('/') {
        Some(slash) => format!("{}/{name}{query}", &base[..authority_end + slash]),
        None => format!("{base}/{name}{query}"),
    }
}

/// `url` with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Store for PgStore {
    fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    {
        let inner = &self.inner;
        let mut c = inner.pool.get()?;
        let r = (|| {
            let mut tx = tx::PgTx::new(&mut c.client, &mut c.stmts);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut tx)))
                .unwrap_or_else(|_| Err(Error::Database("a unit of work panicked".into()).into()));
            inner.units.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(v) => {
                    let committed = tx.commit();
                    let n = inner.commits.fetch_add(1, Ordering::Relaxed) + 1;
                    if committed.is_err() {
                        inner.failed_commits.fetch_add(1, Ordering::Relaxed);
                    } else if n.is_multiple_of(FOLD_EVERY) {
                        if EARLY_ANALYZE.contains(&n) {
                            // Fresh statistics for tables that grew from empty (see
                            // `EARLY_ANALYZE`); a failure waits for autovacuum.
                            let _ = c.client.batch_execute(ANALYZE);
                        }
                        // The figures' changes, folded now and then so reads stay short; a
                        // fold that fails is done by a later one.
                        let mut db = Db {
                            c: &mut c.client,
                            stmts: &mut c.stmts,
                        };
                        let _ = sql::fold_figures(&mut db, 10_000);
                    }
                    Ok(committed.map(|()| v)?)
                }
                Err(e) => {
                    tx.rollback();
                    Err(e)
                }
            }
        })();
        inner.pool.put(c);
        r
    }

    fn space(&self) -> Result<Space, Error> {
        self.read(|db| {
            let row = db
                .opt(
                    "SELECT COALESCE(sum(pg_total_relation_size(format('%I.%I', schemaname, tablename)::regclass)), 0)::bigint AS bytes \
                     FROM pg_tables WHERE schemaname = current_schema()",
                    &[],
                )?
                .ok_or_else(|| Error::Database("SELECT returned nothing".into()))?;
            Ok(Space {
                bytes: sql::get::<i64>(&row, "bytes")?.max(0) as u64,
                free_bytes: None,
            })
        })
    }

    /// `VACUUM (ANALYZE)` of each of Cairn's tables, one at a time: dead rows' space is
    /// reused and the planner's statistics refreshed, while writers carry on (a plain
    /// VACUUM takes no lock they wait on).
    fn vacuum(&self) -> Result<Vacuumed, Error> {
        let before = self.space()?;
        let tables: Vec<String> = self.read(|db| {
            db.query(
                "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
                &[],
            )?
            .iter()
            .map(|r| sql::get::<String>(r, "name"))
            .collect()
        })?;
        let (mut steps, mut longest_step_us) = (0, 0);
        for t in &tables {
            let started = std::time::Instant::now();
            let quoted = format!("\"{}\"", t.replace('"', "\"\""));
            self.with_conn(|c| {
                c.client
                    .batch_execute(&format!("VACUUM (ANALYZE) {quoted}"))
            })?;
            steps += 1;
            longest_step_us = longest_step_us.max(started.elapsed().as_micros() as u64);
        }
        Ok(Vacuumed {
            before,
            after: self.space()?,
            steps,
            longest_step_us,
        })
    }
}

impl Reader for PgStore {
    fn machine(
        &self,
        ns: &str,
        name: &str,
        v: Option<u32>,
    ) -> Result<Option<MachineRecord>, Error> {
        self.read(|db| sql::machine(db, ns, name, v))
    }
    fn machines(&self, ns: &str) -> Result<Vec<MachineRecord>, Error> {
        self.read(|db| sql::machines(db, ns))
    }
    fn unreadable_machines(&self) -> Result<Vec<MachineRecord>, Error> {
        self.read(sql::unreadable_machines)
    }
    fn instance(&self, ns: &str, id: &str) -> Result<Option<InstanceRecord>, Error> {
        self.read(|db| sql::instance(db, ns, id, false))
    }
    fn instances(&self, f: &InstanceFilter) -> Result<Page<InstanceRecord>, Error> {
        self.read(|db| sql::instances(db, f))
    }
    fn instance_ids(&self, ns: Option<&str>) -> Result<Vec<(String, String)>, Error> {
        self.read(|db| sql::instance_ids(db, ns))
    }
    fn history(
        &self,
        ns: &str,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, Error> {
        self.read(|db| sql::history(db, ns, id, after, limit))
    }
    fn history_before(
        &self,
        ns: &str,
        id: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, Error> {
        self.read(|db| sql::history_before(db, ns, id, before, limit))
    }
    fn transition(&self, ns: &str, id: &str, version: u64) -> Result<Option<HistoryRecord>, Error> {
        self.read(|db| sql::transition(db, ns, id, version))
    }
    fn due_timers(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<TimerRecord>, Error> {
        self.read(|db| sql::due_timers(db, now, limit))
    }
    fn timers(&self, ns: &str, id: &str) -> Result<Vec<TimerRecord>, Error> {
        self.read(|db| sql::timers(db, ns, id))
    }
    fn approvals(
        &self,
        ns: &str,
        st: Option<ApprovalStatus>,
        id: Option<&str>,
    ) -> Result<Vec<ApprovalRecord>, Error> {
        self.read(|db| sql::approvals(db, ns, st, id))
    }
    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        self.read(|db| sql::approval(db, id))
    }
    fn checkpoints(&self, ns: &str, id: &str) -> Result<Vec<CheckpointRecord>, Error> {
        self.read(|db| sql::checkpoints(db, ns, id, None))
    }
    fn inbox(&self, ns: &str, id: &str) -> Result<Vec<InboxRecord>, Error> {
        self.read(|db| sql::inbox(db, ns, id))
    }
    fn finished_before(
        &self,
        ns: &str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        self.read(|db| sql::finished_before(db, ns, before, limit))
    }
    fn tasks(
        &self,
        ns: &str,
        queue: Option<&str>,
        st: Option<cairn_store::TaskStatus>,
        id: Option<&str>,
    ) -> Result<Vec<cairn_store::TaskRecord>, Error> {
        self.read(|db| sql::tasks(db, ns, queue, st, id))
    }
    fn token_by_hash(&self, hash: &str) -> Result<Option<cairn_store::TokenRecord>, Error> {
        self.read(|db| sql::token_by_hash(db, hash))
    }
    fn tokens(&self) -> Result<Vec<cairn_store::TokenRecord>, Error> {
        self.read(sql::tokens)
    }
    fn task(&self, id: &str) -> Result<Option<cairn_store::TaskRecord>, Error> {
        self.read(|db| sql::task(db, id))
    }
    fn task_work(
        &self,
        queues: &[String],
        ns: Option<&[String]>,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        self.read(|db| {
            Ok(!sql::claimable(db, queues, ns, now, 1, false)?.is_empty()
                || !sql::expired(db, now, 1, false)?.is_empty())
        })
    }
    fn attempts(&self, task_id: &str) -> Result<Vec<cairn_store::AttemptRecord>, Error> {
        self.read(|db| sql::attempts(db, task_id))
    }
    fn triggers(&self, ns: &str) -> Result<Vec<cairn_store::TriggerRecord>, Error> {
        self.read(|db| sql::triggers(db, ns))
    }
    fn schedules(&self, ns: &str) -> Result<Vec<cairn_store::ScheduleRecord>, Error> {
        self.read(|db| sql::schedules(db, ns))
    }
    fn schedules_due(&self, now: DateTime<Utc>) -> Result<bool, Error> {
        self.read(|db| Ok(!sql::due_schedules(db, now, 1, false)?.is_empty()))
    }
    fn outbox_waiting(&self) -> Result<bool, Error> {
        self.read(sql::outbox_waiting)
    }
    fn figures(&self, ns: Option<&str>) -> Result<Vec<Figure>, Error> {
        self.read(|db| sql::figures(db, ns))
    }
    fn timers_due(&self, now: DateTime<Utc>, cap: usize) -> Result<Vec<(String, u64)>, Error> {
        self.read(|db| sql::timers_due(db, now, cap))
    }
    fn log(&self, after: i64, limit: usize) -> Result<Vec<LogEntry>, Error> {
        self.read(|db| sql::log(db, after, limit))
    }
    fn log_horizon(&self) -> Result<i64, Error> {
        self.read(sql::log_horizon)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_names_another_database() {
        let w = super::with_database;
        assert_eq!(w("postgres://u@h:5432/a", "b"), "postgres://u@h:5432/b");
        assert_eq!(
            w("postgres://u:p@h/a?sslmode=disable", "b"),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(w("postgresql://h", "b"), "postgresql://h/b");
        assert!(super::plain_name("w4_empty_1").is_ok());
        assert!(super::plain_name("x; DROP").is_err());
    }
}
