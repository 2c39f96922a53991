//! The embedded SQLite backend of `cairn-store`.
//!
//! - One data directory, one writing process: `open` takes an exclusive lock on
//!   `cairn.lock` and refuses with [`Error::Locked`] while another process holds it.
//! - WAL with `synchronous=FULL` on every connection: a commit is on disk when acknowledged.
//! - One writer thread **group-commits**: it takes every unit waiting when a transaction
//!   starts, runs each in its own savepoint (a refused or failing unit rolls back alone),
//!   and commits them all with one fsync. If the commit fails, every unit in it gets the
//!   error.
//! - Readers use a small pool of read-only connections; WAL checkpoints run on their own
//!   connection and thread (`wal_autocheckpoint` is off for the writer), so they never
//!   stall it, and every read is one short statement, so no reader pins the WAL for long.
//!
//! Holds no statechart logic. Driver errors become `store::Error` in [`db_err`] only.
#![warn(missing_docs)]

mod copy;
mod lifecycle;
mod migrate;
mod tasks;
mod tx;

use std::fs::File;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_store::{
    ApprovalRecord, ApprovalStatus, CheckpointRecord, Error, Figure, HistoryRecord, InboxRecord,
    InstanceFilter, InstanceRecord, LogEntry, MachineRecord, Page, Reader, Space, Store,
    TimerRecord, Tx, Vacuumed,
};
use rusqlite::{Connection, OpenFlags};

pub use migrate::{MIGRATIONS, schema_version};

/// How the store runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Share one commit among all units waiting when it starts (default on). Off, every
    /// unit commits (and fsyncs) alone: only useful to measure the difference.
    pub group_commit: bool,
    /// The most units one commit takes.
    pub max_batch: usize,
    /// Read connections kept open.
    pub readers: usize,
    /// The most bytes the WAL may hold: past it, the writer runs a checkpoint that
    /// completes and truncates the WAL between two group commits (0: never).
    pub wal_limit: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            group_commit: true,
            max_batch: 1024,
            readers: 4,
            wal_limit: 64 * 1024 * 1024,
        }
    }
}

/// Maps a driver error to `store::Error`: the one place this happens.
pub(crate) fn db_err(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Error::Conflict(e.to_string())
        }
        rusqlite::Error::QueryReturnedNoRows => Error::NotFound(e.to_string()),
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            Error::Corrupt(e.to_string())
        }
        _ => Error::Database(e.to_string()),
    }
}

/// A unit of work waiting for the writer.
trait Job: Send {
    /// Runs the unit; `false` when it failed (and must be rolled back).
    fn run(&mut self, tx: &mut tx::SqlTx<'_>) -> bool;
    /// Answers the caller once the commit's outcome is known.
    fn finish(self: Box<Self>, commit: Result<(), Error>);
}

struct Unit<T, E, F> {
    work: Option<F>,
    result: Option<Result<T, E>>,
    reply: mpsc::SyncSender<Result<T, E>>,
}

impl<T, E, F> Job for Unit<T, E, F>
where
    T: Send + 'static,
    E: From<Error> + Send + 'static,
    F: FnOnce(&mut tx::SqlTx<'_>) -> Result<T, E> + Send + 'static,
{
    fn run(&mut self, tx: &mut tx::SqlTx<'_>) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| work(tx)))
            .unwrap_or_else(|_| Err(Error::Database("a unit of work panicked".into()).into()));
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), Error>) {
        let answer = match (self.result, commit) {
            (Some(Ok(t)), Ok(())) => Ok(t),
            (Some(Ok(_)), Err(e)) => Err(e.into()),
            (Some(Err(e)), _) => Err(e),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(())) => Err(Error::Database("a unit of work was not run".into()).into()),
        };
        let _ = self.reply.send(answer);
    }
}

/// Counters of the writer: commits, units, and a histogram of units per commit.
#[derive(Default)]
pub struct WriteStats {
    /// Group commits written.
    pub commits: std::sync::atomic::AtomicU64,
    /// Units committed.
    pub units: std::sync::atomic::AtomicU64,
    /// Group commits that failed (their units were retried one by one).
    pub failed_commits: std::sync::atomic::AtomicU64,
    /// Commits with at most 1, 2, 4, ... 1024 units.
    pub batch_le: [std::sync::atomic::AtomicU64; 11],
    /// Checkpoints the writer ran because the WAL passed its limit, and those readers
    /// held up (tried again after the next commit).
    pub wal_restarts: std::sync::atomic::AtomicU64,
    /// RESTART checkpoints that found readers in the way and could not finish.
    pub wal_restarts_busy: std::sync::atomic::AtomicU64,
    /// Pages in the WAL since it last started over, after the last commit (the writer's
    /// WAL hook keeps it).
    pub wal_pages: std::sync::atomic::AtomicU64,
    /// The most pages one commit added to the WAL (how far past its limit it can go).
    pub wal_commit_pages_max: std::sync::atomic::AtomicU64,
    /// The database's page size.
    page_size: std::sync::atomic::AtomicU64,
    /// Truncate the WAL after the next commit, whatever its size (`vacuum` asks).
    truncate_now: AtomicBool,
}

impl WriteStats {
    /// Bytes of WAL written since it last started over (each page is a frame with a
    /// 24-byte header).
    pub fn wal_bytes(&self) -> u64 {
        self.pages_to_bytes(self.wal_pages.load(Ordering::Relaxed))
    }

    /// The most WAL one commit wrote, in bytes.
    pub fn wal_commit_bytes_max(&self) -> u64 {
        self.pages_to_bytes(self.wal_commit_pages_max.load(Ordering::Relaxed))
    }

    fn pages_to_bytes(&self, pages: u64) -> u64 {
        pages.saturating_mul(self.page_size.load(Ordering::Relaxed) + 24)
    }

    fn record(&self, units: usize, ok: bool) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.units.fetch_add(units as u64, Ordering::Relaxed);
        if !ok {
            self.failed_commits.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = (usize::BITS - units.max(1).saturating_sub(1).leading_zeros()) as usize;
        self.batch_le[bucket.min(10)].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text of these counters.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP cairn_store_commits_total Committed write transactions (group commits).\n# TYPE cairn_store_commits_total counter\ncairn_store_commits_total {}",
            self.commits.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cairn_store_units_total Units of work (events) written.\n# TYPE cairn_store_units_total counter\ncairn_store_units_total {}",
            self.units.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cairn_store_failed_commits_total Commits that failed.\n# TYPE cairn_store_failed_commits_total counter\ncairn_store_failed_commits_total {}",
            self.failed_commits.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cairn_store_commit_batch_size Units per commit.\n# TYPE cairn_store_commit_batch_size histogram"
        );
        let mut cumulative = 0;
        for (i, b) in self.batch_le.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "cairn_store_commit_batch_size_bucket{{le=\"{}\"}} {cumulative}",
                1u64 << i
            );
        }
        let _ = writeln!(
            out,
            "cairn_store_commit_batch_size_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "cairn_store_commit_batch_size_sum {}",
            self.units.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "cairn_store_commit_batch_size_count {cumulative}");
        let _ = writeln!(
            out,
            "# HELP cairn_store_wal_restarts_total Checkpoints the writer ran because the WAL passed its limit.\n# TYPE cairn_store_wal_restarts_total counter\ncairn_store_wal_restarts_total {}",
            self.wal_restarts.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cairn_store_wal_restarts_busy_total Such checkpoints readers held up (retried after the next commit).\n# TYPE cairn_store_wal_restarts_busy_total counter\ncairn_store_wal_restarts_busy_total {}",
            self.wal_restarts_busy.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cairn_store_wal_bytes Bytes of WAL written since it last started over, after the last commit.\n# TYPE cairn_store_wal_bytes gauge\ncairn_store_wal_bytes {}",
            self.wal_bytes()
        );
        out
    }
}

struct Inner {
    stats: Arc<WriteStats>,
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
    _lock: File,
}

/// The SQLite store of one data directory. Cheap to clone; the last clone closes it.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

pub(crate) fn configure(conn: &Connection) -> Result<(), Error> {
    conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
    // rusqlite caches 16 statements by default; one event's unit alone runs more than
    // that, and a thrashing cache re-parses SQL on every event.
    conn.set_prepared_statement_cache_capacity(256);
    // The query planner's stability guarantee: a cached statement keeps its plan whatever
    // is bound. Without it, SQLite re-prepares (parses and plans again) a statement each
    // time a bound `LIMIT` crosses 1, or a bound value the planner looked at changes: the
    // claims' `LIMIT ?` and timestamp ranges, on every claim.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(db_err)?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;")
        .map_err(db_err)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`, migrating it to the current schema.
    pub fn open(dir: &Path, options: Options) -> Result<SqliteStore, Error> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Database(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock_path = dir.join("cairn.lock");
        let mut lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::Database(format!("cannot open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                let holder = holder.trim();
                return Err(Error::Locked(format!(
                    "the data directory {} is in use by another process{}; use `--server URL` to reach it, or stop it",
                    dir.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    }
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Database(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let _ = lock.set_len(0);
        let _ = write!(lock, "{}", std::process::id());
        let _ = lock.flush();

        let path = dir.join("cairn.db");
        let mut writer = Connection::open(&path).map_err(db_err)?;
        writer
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
            .map_err(db_err)?;
        configure(&writer)?;
        migrate::migrate(&mut writer)?;
        // Start with an empty WAL (the directory is ours alone: nothing reads it yet), so
        // the WAL hook below counts every page in it.
        writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(db_err)?;

        let mut readers = Vec::with_capacity(options.readers);
        for _ in 0..options.readers.max(1) {
            readers.push(open_reader(&path)?);
        }
        let (jobs_tx, jobs_rx) = mpsc::channel::<Box<dyn Job>>();
        let opts = options.clone();
        let stats = Arc::new(WriteStats::default());
        let page_size = writer
            .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
            .map_err(db_err)?;
        stats
            .page_size
            .store(page_size.max(0) as u64, Ordering::Relaxed);
        // After every commit: how many pages the WAL holds since it last started over.
        let hooked = Arc::clone(&stats);
        writer
            .wal_hook(Some(
                move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                    hooked
                        .wal_pages
                        .store(pages.max(0) as u64, Ordering::Relaxed);
                    Ok(())
                },
            ))
            .map_err(db_err)?;
        let writer_stats = Arc::clone(&stats);
        let writer_thread = std::thread::Builder::new()
            .name("cairn-sqlite-writer".into())
            .spawn(move || write_loop(writer, jobs_rx, opts, writer_stats))
            .map_err(|e| Error::Database(format!("cannot start the writer thread: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let checkpoint_conn = Connection::open(&path).map_err(db_err)?;
        configure(&checkpoint_conn)?;
        let stop2 = Arc::clone(&stop);
        let checkpointer = std::thread::Builder::new()
            .name("cairn-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stop2))
            .map_err(|e| Error::Database(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                stats,
                path,
                jobs: Mutex::new(Some(jobs_tx)),
                readers: Mutex::new(readers),
                writer: Mutex::new(Some(writer_thread)),
                checkpointer: Mutex::new(Some(checkpointer)),
                stop,
                _lock: lock,
            }),
        })
    }

    /// The writer's counters, for metrics.
    pub fn write_stats(&self) -> &WriteStats {
        &self.inner.stats
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let conn = self.inner.readers.lock().map_err(|_| Error::Closed)?.pop();
        let conn = match conn {
            Some(c) => c,
            None => open_reader(&self.inner.path)?,
        };
        let r = f(&conn);
        if let Ok(mut pool) = self.inner.readers.lock() {
            pool.push(conn);
        }
        r
    }
}

/// The durability settings actually in force, read from the connections themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Durability {
    /// The connection's journal mode (`wal`).
    pub journal_mode: String,
    /// `PRAGMA synchronous` of the writer and of a reader (2 = FULL).
    pub writer_synchronous: i64,
    /// The readers' `synchronous` setting.
    pub reader_synchronous: i64,
}

impl Durability {
    /// The label benchmarks print, e.g. `sqlite wal synchronous=FULL`.
    pub fn label(&self) -> String {
        let level = |n: i64| match n {
            0 => "OFF",
            1 => "NORMAL",
            2 => "FULL",
            3 => "EXTRA",
            _ => "?",
        };
        format!(
            "sqlite {} synchronous={}",
            self.journal_mode,
            level(self.writer_synchronous.min(self.reader_synchronous))
        )
    }
}

/// A job that reads from the writer's own connection.
struct Probe {
    reply: mpsc::SyncSender<Result<(String, i64), Error>>,
    answer: Option<Result<(String, i64), Error>>,
}

impl Job for Probe {
    fn run(&mut self, tx: &mut tx::SqlTx<'_>) -> bool {
        let r = (|| {
            let mode: String = tx
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .map_err(db_err)?;
            let sync: i64 = tx
                .conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .map_err(db_err)?;
            Ok((mode, sync))
        })();
        self.answer = Some(r);
        true
    }
    fn finish(self: Box<Self>, commit: Result<(), Error>) {
        let answer = match (self.answer, commit) {
            (Some(a), Ok(())) => a,
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(Error::Database("probe not run".into())),
        };
        let _ = self.reply.send(answer);
    }
}

impl SqliteStore {
    /// Reads the journal mode and `synchronous` level from the writer and a reader.
    pub fn durability(&self) -> Result<Durability, Error> {
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let jobs = self.inner.jobs.lock().map_err(|_| Error::Closed)?;
            jobs.as_ref()
                .ok_or(Error::Closed)?
                .send(Box::new(Probe {
                    reply,
                    answer: None,
                }))
                .map_err(|_| Error::Closed)?;
        }
        let (journal_mode, writer_synchronous) = answer.recv().map_err(|_| Error::Closed)??;
        let reader_synchronous = self.read(|c| {
            c.query_row("PRAGMA synchronous", [], |r| r.get(0))
                .map_err(db_err)
        })?;
        Ok(Durability {
            journal_mode,
            writer_synchronous,
            reader_synchronous,
        })
    }
}

impl SqliteStore {
    /// Writes an online, consistent copy of the database to `file` (which must not exist)
    /// and returns its size in bytes. Writers carry on meanwhile.
    pub fn backup(&self, file: &Path) -> Result<u64, Error> {
        if file.exists() {
            return Err(Error::Conflict(format!(
                "{} exists; choose a new file",
                file.display()
            )));
        }
        let target = file
            .to_str()
            .ok_or_else(|| Error::Database(format!("{} is not a UTF-8 path", file.display())))?
            .to_string();
        self.read(|c| {
            c.execute("VACUUM INTO ?1", [&target])
                .map(|_| ())
                .map_err(db_err)
        })?;
        std::fs::metadata(file)
            .map(|m| m.len())
            .map_err(|e| Error::Database(format!("cannot read {}: {e}", file.display())))
    }

    /// Replaces the database of `dir` with the backup `file`, after checking the backup's
    /// integrity and schema. Refused while another process has `dir` open.
    pub fn restore(dir: &Path, file: &Path) -> Result<(), Error> {
        {
            let backup = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| {
                    Error::Corrupt(format!("{} is not a Cairn backup: {e}", file.display()))
                })?;
            let check: String = backup
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .map_err(|e| {
                    Error::Corrupt(format!("{} is not a Cairn backup: {e}", file.display()))
                })?;
            if check != "ok" {
                return Err(Error::Corrupt(format!(
                    "{} fails its integrity check: {check}",
                    file.display()
                )));
            }
            let version = schema_version(&backup)?;
            let has_instances: bool = backup
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'instances'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n > 0)
                .map_err(db_err)?;
            if version == 0 || !has_instances {
                return Err(Error::Corrupt(format!(
                    "{} is not a Cairn backup",
                    file.display()
                )));
            }
            if version > MIGRATIONS.len() {
                return Err(Error::Corrupt(format!(
                    "{} has schema version {version}, newer than this Cairn knows ({})",
                    file.display(),
                    MIGRATIONS.len()
                )));
            }
        }
        // Opening takes the directory's lock, so no other process uses it meanwhile.
        let store = SqliteStore::open(
            dir,
            Options {
                readers: 1,
                ..Options::default()
            },
        )?;
        let db = store.path().to_path_buf();
        let lock = Arc::clone(&store.inner);
        // Close the connections but keep the lock while the files are swapped.
        let staged = db.with_extension("db.restore");
        std::fs::copy(file, &staged)
            .map_err(|e| Error::Database(format!("cannot copy the backup: {e}")))?;
        File::open(&staged)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::Database(format!("cannot sync the restored file: {e}")))?;
        let lock_file = lock
            ._lock
            .try_clone()
            .map_err(|e| Error::Database(e.to_string()))?;
        drop(lock);
        drop(store);
        // The old store is closed; our clone of the lock file still holds the lock.
        for ext in ["db-wal", "db-shm"] {
            let _ = std::fs::remove_file(db.with_extension(ext));
        }
        std::fs::rename(&staged, &db)
            .map_err(|e| Error::Database(format!("cannot put the backup in place: {e}")))?;
        if let Some(parent) = db.parent() {
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        drop(lock_file);
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut w) = self.writer.lock()
            && let Some(h) = w.take()
        {
            let _ = h.join();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut c) = self.checkpointer.lock()
            && let Some(h) = c.take()
        {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

fn open_reader(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    configure(&conn)?;
    Ok(conn)
}

fn write_loop(
    mut conn: Connection,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    opts: Options,
    stats: Arc<WriteStats>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        if opts.group_commit {
            while batch.len() < opts.max_batch {
                match jobs.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
        }
        let pages_before = stats.wal_pages.load(Ordering::Relaxed);
        let commit = run_batch(&mut conn, &mut batch);
        let pages_after = stats.wal_pages.load(Ordering::Relaxed);
        // Fewer pages after than before: the WAL started over with this commit.
        let added = if pages_after >= pages_before {
            pages_after - pages_before
        } else {
            pages_after
        };
        stats
            .wal_commit_pages_max
            .fetch_max(added, Ordering::Relaxed);
        stats.record(batch.len(), commit.is_ok());
        for job in batch {
            job.finish(commit.clone());
        }
        bound_wal(&conn, &opts, &stats);
    }
}

/// Keeps the WAL within `opts.wal_limit`. The background checkpoints (`PASSIVE`) copy
/// pages but, while the writer never pauses, the WAL never starts over and grows without
/// bound; so once the pages written since it last started over pass the limit, the writer
/// itself, between two commits (no unit waits on it but those queued), runs a `RESTART`
/// checkpoint: it completes, and the next commit writes the WAL from its start again,
/// over the same file (measured: p99 24 ms at concurrency 32 where `TRUNCATE`, which
/// makes the file grow again from nothing, gave 40 ms). Readers keep a checkpoint from
/// completing only while a read is running (reads are short): held up for 100 ms, it is
/// tried again after the next commit. `vacuum` asks for a `TRUNCATE`, so the files shrink.
fn bound_wal(conn: &Connection, opts: &Options, stats: &WriteStats) {
    let asked = stats.truncate_now.swap(false, Ordering::Relaxed);
    if !asked && (opts.wal_limit == 0 || stats.wal_bytes() <= opts.wal_limit) {
        return;
    }
    let mode = if asked { "TRUNCATE" } else { "RESTART" };
    let _ = conn.busy_timeout(Duration::from_millis(100));
    let busy = conn
        .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|b| b != 0)
        .unwrap_or(true);
    let _ = conn.busy_timeout(Duration::from_secs(10));
    if busy {
        stats.wal_restarts_busy.fetch_add(1, Ordering::Relaxed);
    } else {
        stats.wal_restarts.fetch_add(1, Ordering::Relaxed);
        stats.wal_pages.store(0, Ordering::Relaxed);
    }
}

fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn Job>]) -> Result<(), Error> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    // What the batch's units that succeeded add to figures, summed, written before COMMIT.
    let mut figures: std::collections::HashMap<(String, String, String, String), i64> =
        std::collections::HashMap::new();
    for job in batch.iter_mut() {
        let step = (|| -> Result<(), Error> {
            conn.prepare_cached("SAVEPOINT unit")
                .and_then(|mut s| s.execute([]))
                .map_err(db_err)?;
            let mut tx = tx::SqlTx::new(conn);
            let ok = job.run(&mut tx);
            if ok {
                conn.prepare_cached("RELEASE unit")
                    .and_then(|mut s| s.execute([]))
                    .map_err(db_err)?;
                for f in tx.figures {
                    *figures
                        .entry((f.namespace, f.kind, f.name, f.detail))
                        .or_default() += f.value;
                }
            } else {
                conn.execute_batch("ROLLBACK TO unit; RELEASE unit")
                    .map_err(db_err)?;
            }
            Ok(())
        })();
        if let Err(e) = step {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    for ((namespace, kind, name, detail), value) in figures {
        let figure = cairn_store::Figure {
            namespace,
            kind,
            name,
            detail,
            value,
        };
        if let Err(e) = lifecycle::add_figure(conn, &figure) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(db_err(e))
        }
    }
}

fn checkpoint_loop(conn: Connection, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        // Woken at once when the store closes (see `Drop for Inner`): a command that is
        // done never waits out the interval.
        std::thread::park_timeout(Duration::from_millis(200));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // PASSIVE never waits for readers or the writer; it copies what it can.
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

impl Store for SqliteStore {
    fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    {
        self.write_sql(move |tx: &mut tx::SqlTx<'_>| work(tx))
    }

    fn space(&self) -> Result<Space, Error> {
        self.read(space)
    }

    /// `PRAGMA incremental_vacuum` (the schema sets `auto_vacuum = INCREMENTAL`) in units of
    /// [`VACUUM_STEP`] pages, each a unit of work on the writer like any other, so
    /// transitions keep committing between steps; then the WAL is truncated, which
    /// shrinks the file.
    fn vacuum(&self) -> Result<Vacuumed, Error> {
        let before = self.space()?;
        let (mut steps, mut longest_step_us) = (0, 0);
        loop {
            let (freed, left, us) =
                self.write_sql(|tx: &mut tx::SqlTx<'_>| -> Result<_, Error> {
                    let t = std::time::Instant::now();
                    let c = tx.conn;
                    let free = |c: &Connection| {
                        c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
                            .map_err(db_err)
                    };
                    let was = free(c)?;
                    // One page is given back per row stepped through.
                    let mut s = c
                        .prepare(&format!("PRAGMA incremental_vacuum({VACUUM_STEP})"))
                        .map_err(db_err)?;
                    let mut rows = s.query([]).map_err(db_err)?;
                    while rows.next().map_err(db_err)?.is_some() {}
                    let now = free(c)?;
                    Ok((was - now, now, t.elapsed().as_micros() as u64))
                })?;
            steps += 1;
            longest_step_us = longest_step_us.max(us);
            if left == 0 || freed == 0 {
                break;
            }
        }
        // The file shrinks when the WAL is checkpointed: ask the writer to truncate it
        // after the next commit (this empty one).
        self.inner.stats.truncate_now.store(true, Ordering::Relaxed);
        self.write_sql(|_| Ok::<(), Error>(()))?;
        Ok(Vacuumed {
            before,
            after: self.space()?,
            steps,
            longest_step_us,
        })
    }
}

/// Pages one step of `vacuum` gives back (4 MiB of 4 KiB pages).
pub const VACUUM_STEP: u32 = 1024;

fn space(c: &Connection) -> Result<Space, Error> {
    let pragma = |name: &str| {
        c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
            .map(|v| v.max(0) as u64)
            .map_err(db_err)
    };
    let size = pragma("page_size")?;
    Ok(Space {
        bytes: pragma("page_count")?.saturating_mul(size),
        free_bytes: Some(pragma("freelist_count")?.saturating_mul(size)),
    })
}

impl SqliteStore {
    /// Runs `work` as one unit of work on the writer, with its connection.
    fn write_sql<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(&mut tx::SqlTx<'_>) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Box<dyn Job> = Box::new(Unit {
            work: Some(work),
            result: None,
            reply,
        });
        {
            let jobs = self.inner.jobs.lock().map_err(|_| Error::Closed)?;
            jobs.as_ref()
                .ok_or(Error::Closed)?
                .send(job)
                .map_err(|_| Error::Closed)?;
        }
        answer.recv().map_err(|_| Error::Closed)?
    }
}

impl Reader for SqliteStore {
    fn machine(
        &self,
        ns: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<MachineRecord>, Error> {
        self.read(|c| tx::machine(c, ns, name, version))
    }
    fn unreadable_machines(&self) -> Result<Vec<MachineRecord>, Error> {
        self.read(tx::unreadable_machines)
    }

    fn machines(&self, ns: &str) -> Result<Vec<MachineRecord>, Error> {
        self.read(|c| tx::machines(c, ns))
    }
    fn instance(&self, ns: &str, id: &str) -> Result<Option<InstanceRecord>, Error> {
        self.read(|c| tx::instance(c, ns, id))
    }
    fn instances(&self, filter: &InstanceFilter) -> Result<Page<InstanceRecord>, Error> {
        self.read(|c| tx::instances(c, filter))
    }
    fn instance_ids(&self, ns: Option<&str>) -> Result<Vec<(String, String)>, Error> {
        self.read(|c| tx::instance_ids(c, ns))
    }
    fn history(
        &self,
        ns: &str,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, Error> {
        self.read(|c| tx::history(c, ns, id, after, limit))
    }
    fn history_before(
        &self,
        ns: &str,
        id: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, Error> {
        self.read(|c| tx::history_before(c, ns, id, before, limit))
    }
    fn transition(&self, ns: &str, id: &str, version: u64) -> Result<Option<HistoryRecord>, Error> {
        self.read(|c| tx::transition(c, ns, id, version))
    }
    fn log(&self, after: i64, limit: usize) -> Result<Vec<LogEntry>, Error> {
        self.read(|c| tx::log(c, after, limit))
    }
    fn log_horizon(&self) -> Result<i64, Error> {
        self.read(tx::log_horizon)
    }
    fn due_timers(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TimerRecord>, Error> {
        self.read(|c| lifecycle::due_timers(c, now, limit))
    }
    fn timers(&self, ns: &str, id: &str) -> Result<Vec<TimerRecord>, Error> {
        self.read(|c| lifecycle::timers(c, ns, id))
    }
    fn approvals(
        &self,
        ns: &str,
        status: Option<ApprovalStatus>,
        id: Option<&str>,
    ) -> Result<Vec<ApprovalRecord>, Error> {
        self.read(|c| lifecycle::approvals(c, ns, status, id))
    }
    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        self.read(|c| lifecycle::approval(c, id))
    }
    fn checkpoints(&self, ns: &str, id: &str) -> Result<Vec<CheckpointRecord>, Error> {
        self.read(|c| lifecycle::checkpoints(c, ns, id, None))
    }
    fn inbox(&self, ns: &str, id: &str) -> Result<Vec<InboxRecord>, Error> {
        self.read(|c| lifecycle::inbox(c, ns, id))
    }
    fn finished_before(
        &self,
        ns: &str,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        self.read(|c| lifecycle::finished_before(c, ns, before, limit))
    }
    fn tasks(
        &self,
        ns: &str,
        queue: Option<&str>,
        status: Option<cairn_store::TaskStatus>,
        id: Option<&str>,
    ) -> Result<Vec<cairn_store::TaskRecord>, Error> {
        self.read(|c| tasks::tasks(c, ns, queue, status, id))
    }
    fn triggers(&self, ns: &str) -> Result<Vec<cairn_store::TriggerRecord>, Error> {
        self.read(|c| tx::triggers(c, ns))
    }
    fn schedules(&self, ns: &str) -> Result<Vec<cairn_store::ScheduleRecord>, Error> {
        self.read(|c| tx::schedules_where(c, "namespace = ?1 ORDER BY name", rusqlite::params![ns]))
    }
    fn schedules_due(&self, now: chrono::DateTime<chrono::Utc>) -> Result<bool, Error> {
        self.read(|c| {
            Ok(
                !tx::schedules_where(c, "next_at <= ?1 LIMIT 1", rusqlite::params![tx::ts(&now)])?
                    .is_empty(),
            )
        })
    }
    fn outbox_waiting(&self) -> Result<bool, Error> {
        self.read(|c| {
            c.prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox)")
                .and_then(|mut s| s.query_row([], |r| r.get::<_, bool>(0)))
                .map_err(db_err)
        })
    }
    fn task_work(
        &self,
        queues: &[String],
        namespaces: Option<&[String]>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, Error> {
        self.read(|c| {
            Ok(!tasks::claimable(c, queues, namespaces, now, 1)?.is_empty()
                || !tasks::expired(c, now, 1)?.is_empty())
        })
    }
    fn task(&self, id: &str) -> Result<Option<cairn_store::TaskRecord>, Error> {
        self.read(|c| tasks::task(c, id))
    }
    fn token_by_hash(&self, hash: &str) -> Result<Option<cairn_store::TokenRecord>, Error> {
        self.read(|c| tasks::token_by_hash(c, hash))
    }
    fn tokens(&self) -> Result<Vec<cairn_store::TokenRecord>, Error> {
        self.read(tasks::tokens)
    }
    fn attempts(&self, task_id: &str) -> Result<Vec<cairn_store::AttemptRecord>, Error> {
        self.read(|c| tasks::attempts(c, task_id))
    }
    fn figures(&self, ns: Option<&str>) -> Result<Vec<Figure>, Error> {
        self.read(|c| lifecycle::figures(c, ns))
    }
    fn timers_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        cap: usize,
    ) -> Result<Vec<(String, u64)>, Error> {
        self.read(|c| lifecycle::timers_due(c, now, cap))
    }
}
