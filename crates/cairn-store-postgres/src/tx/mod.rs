//! [`PgTx`]: one unit of work, a PostgreSQL transaction.

use cairn_store::{
    ApprovalRecord, AttemptRecord, CheckpointRecord, ChildRecord, Error, HistoryRecord,
    IdempotencyRecord, InboxRecord, InstanceRecord, MachineRecord, NewLogEntry, OutboxRecord,
    ScheduleRecord, TaskRecord, TimerRecord, TokenRecord, TriggerRecord,
};
use chrono::{DateTime, Utc};
use postgres::Transaction;
use serde_json::Value;

use crate::db_err;
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

pub(crate) struct PgTx<'a> {
    tx: Transaction<'a>,
    stmts: &'a mut Stmts,
    /// Entries this unit appended to the log.
    logged: i64,
    /// Entries appended when the open part began (an undone part gives its back).
    part: Option<i64>,
}

impl<'a> PgTx<'a> {
    pub fn new(tx: Transaction<'a>, stmts: &'a mut Stmts) -> PgTx<'a> {
        PgTx {
            tx,
            stmts,
            logged: 0,
            part: None,
        }
    }

    fn db(&mut self) -> Db<'_, Transaction<'a>> {
        Db {
            c: &mut self.tx,
            stmts: self.stmts,
        }
    }

    pub fn commit(self) -> Result<(), Error> {
        sql::sent();
        self.tx.commit().map_err(db_err)
    }

    pub fn rollback(self) {
        sql::sent();
        let _ = self.tx.rollback();
    }
}

/// A part is a savepoint in the unit's transaction. A kept part is not released: the
/// next part's `SAVEPOINT` nests inside it and `ROLLBACK TO` finds the newest of that
/// name, and the commit releases them all; so a part costs one round trip, not two (a
/// released subtransaction keeps its id until the commit anyway).
impl cairn_store::PartsTx for PgTx<'_> {
    fn begin_part(&mut self) -> Result<(), Error> {
        if self.part.is_some() {
            return Err(Error::Database("a part is already open".into()));
        }
        sql::sent();
        self.tx.batch_execute("SAVEPOINT part").map_err(db_err)?;
        self.part = Some(self.logged);
        Ok(())
    }
    fn keep_part(&mut self) -> Result<(), Error> {
        self.part = None;
        Ok(())
    }
    fn undo_part(&mut self) -> Result<(), Error> {
        if let Some(logged) = self.part.take() {
            self.logged = logged;
            sql::sent();
            self.tx
                .batch_execute("ROLLBACK TO SAVEPOINT part")
                .map_err(db_err)?;
        }
        Ok(())
    }
}
