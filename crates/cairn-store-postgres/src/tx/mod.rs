//! [`PgTx`]: one unit of work, a PostgreSQL transaction.

use cairn_store::{
    ApprovalRecord, AttemptRecord, CheckpointRecord, ChildRecord, Error, HistoryRecord,
    IdempotencyRecord, InboxRecord, InstanceRecord, MachineRecord, NewLogEntry, OutboxRecord,
    ScheduleRecord, TaskRecord, TimerRecord, TokenRecord, TriggerRecord,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::conn::PgClient;
use crate::sql::{self, Db, Stmts};

mod approvals;
mod definitions;
mod history;
mod instances;
mod outbox;
mod tasks;
mod timers;
mod tokens;

/// Entries one unit may append to the log (the low bits of a position).
const LOG_BITS: u32 = 20;

/// A unit on one connection. Its `BEGIN`, savepoints and most writes are held and sent
/// with its next read or its `COMMIT` (see `conn`).
pub(crate) struct PgTx<'a> {
    c: &'a mut PgClient,
    stmts: &'a mut Stmts,
    /// Entries this unit appended to the log.
    logged: i64,
    /// Where the unit stood when the open part began (an undone part goes back there).
    part: Option<Marks>,
    /// The transaction's id, known from its first log entry: the high bits of its
    /// entries' positions.
    xid: Option<i64>,
    /// Log entries after the first, with their positions, and changes to the figures:
    /// written at the commit, each kind in one statement.
    logs: Vec<(i64, NewLogEntry)>,
    figures: Vec<cairn_store::Figure>,
}

/// Log entries appended, and entries and figure changes kept for the commit.
struct Marks {
    logged: i64,
    logs: usize,
    figures: usize,
}

impl<'a> PgTx<'a> {
    pub fn new(c: &'a mut PgClient, stmts: &'a mut Stmts) -> PgTx<'a> {
        sql::sent();
        c.begin_unit();
        PgTx {
            c,
            stmts,
            logged: 0,
            part: None,
            xid: None,
            logs: Vec::new(),
            figures: Vec::new(),
        }
    }

    fn db(&mut self) -> Db<'_, PgClient> {
        Db {
            c: self.c,
            stmts: self.stmts,
        }
    }

    /// Commits, with the writes still held; a unit that fails to commit is rolled back
    /// (by `commit_unit`, or when dropped).
    pub fn commit(mut self) -> Result<(), Error> {
        let logs = std::mem::take(&mut self.logs);
        let figures = std::mem::take(&mut self.figures);
        sql::insert_logs(&mut self.db(), &logs)?;
        sql::add_figures(&mut self.db(), &figures)?;
        sql::sent();
        self.c.commit_unit()
    }

    pub fn rollback(self) {
        self.c.rollback_unit();
    }
}

/// A unit dropped without its commit or rollback (a panic in between) rolls back, so its
/// connection goes back to the pool with no transaction open and nothing held.
impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if self.c.in_unit() {
            self.c.rollback_unit();
        }
    }
}

/// A part is a savepoint in the unit's transaction, made only once something of the part
/// is sent (see `conn::Part`): an outcome whose reads come before its writes (the usual
/// case) needs none, its writes being held until the next part's first read. A kept part
/// is not released: the next part's `SAVEPOINT` nests inside it and `ROLLBACK TO` finds
/// the newest of that name, and the commit releases them all.
impl cairn_store::PartsTx for PgTx<'_> {
    fn begin_part(&mut self) -> Result<(), Error> {
        if self.part.is_some() {
            return Err(Error::Database("a part is already open".into()));
        }
        self.c.begin_part();
        self.part = Some(Marks {
            logged: self.logged,
            logs: self.logs.len(),
            figures: self.figures.len(),
        });
        Ok(())
    }
    fn keep_part(&mut self) -> Result<(), Error> {
        self.part = None;
        self.c.keep_part();
        Ok(())
    }
    fn undo_part(&mut self) -> Result<(), Error> {
        if let Some(m) = self.part.take() {
            self.logged = m.logged;
            self.logs.truncate(m.logs);
            self.figures.truncate(m.figures);
            self.c.undo_part();
        }
        Ok(())
    }
}
