//! [`PgTx`]: one unit of work, a PostgreSQL transaction.

use cairn_store::{
    ApprovalRecord, AttemptRecord, CheckpointRecord, ChildRecord, Error, HistoryRecord,
    IdempotencyRecord, InboxRecord, InstanceRecord, MachineRecord, NewLogEntry, OutboxRecord,
    ScheduleRecord, TaskRecord, TimerRecord, TokenRecord, TriggerRecord, Tx,
};
use chrono::{DateTime, Utc};
use postgres::Transaction;
use serde_json::Value;

use crate::db_err;
use crate::sql::{self, Db, Stmts};

/// Entries one unit may append to the log (the low bits of a position).
const LOG_BITS: u32 = 20;

pub(crate) struct PgTx<'a> {
    tx: Transaction<'a>,
    stmts: &'a mut Stmts,
    /// Entries this unit appended to the log.
    logged: i64,
}

impl<'a> PgTx<'a> {
    pub fn new(tx: Transaction<'a>, stmts: &'a mut Stmts) -> PgTx<'a> {
        PgTx {
            tx,
            stmts,
            logged: 0,
        }
    }

    fn db(&mut self) -> Db<'_, Transaction<'a>> {
        Db {
            c: &mut self.tx,
            stmts: self.stmts,
        }
    }

    pub fn commit(self) -> Result<(), Error> {
        self.tx.commit().map_err(db_err)
    }

    pub fn rollback(self) {
        let _ = self.tx.rollback();
    }
}

impl Tx for PgTx<'_> {
    fn machine(
        &mut self,
        ns: &str,
        name: &str,
        v: Option<u32>,
    ) -> Result<Option<MachineRecord>, Error> {
        sql::machine(&mut self.db(), ns, name, v)
    }
    fn insert_machine(&mut self, m: &MachineRecord) -> Result<(), Error> {
        sql::insert_machine(&mut self.db(), m)
    }
    fn max_machine_version(&mut self, ns: &str, name: &str) -> Result<Option<u32>, Error> {
        sql::max_machine_version(&mut self.db(), ns, name)
    }
    fn delete_machine(
        &mut self,
        ns: &str,
        name: &str,
        version: u32,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, Error> {
        sql::delete_machine(&mut self.db(), ns, name, version, at)
    }
    fn machine_in_use(&mut self, ns: &str, name: &str, version: u32) -> Result<u64, Error> {
        sql::machine_in_use(&mut self.db(), ns, name, version)
    }
    fn instance(&mut self, ns: &str, id: &str) -> Result<Option<InstanceRecord>, Error> {
        sql::instance(&mut self.db(), ns, id, true)
    }
    fn claim_instance(&mut self, ns: &str, id: &str) -> Result<cairn_store::Claim, Error> {
        use cairn_store::Claim;
        if let Some(i) = sql::claim_instance(&mut self.db(), ns, id)? {
            return Ok(Claim::Got(Box::new(i)));
        }
        Ok(match sql::instance(&mut self.db(), ns, id, false)? {
            Some(_) => Claim::Busy,
            None => Claim::Missing,
        })
    }
    fn insert_instance(&mut self, i: &InstanceRecord) -> Result<(), Error> {
        sql::insert_instance(&mut self.db(), i)
    }
    fn update_instance(&mut self, i: &InstanceRecord, expected: u64) -> Result<(), Error> {
        sql::update_instance(&mut self.db(), i, expected)
    }
    fn append_history(&mut self, h: &HistoryRecord) -> Result<(), Error> {
        sql::append_history(&mut self.db(), h)
    }
    fn idempotency(
        &mut self,
        ns: &str,
        id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, Error> {
        sql::idempotency(&mut self.db(), ns, id, key)
    }
    fn insert_idempotency(&mut self, r: &IdempotencyRecord) -> Result<(), Error> {
        sql::insert_idempotency(&mut self.db(), r)
    }
    fn set_timer(&mut self, t: &TimerRecord) -> Result<(), Error> {
        sql::set_timer(&mut self.db(), t)
    }
    fn timer(&mut self, ns: &str, id: &str, event: &str) -> Result<Option<TimerRecord>, Error> {
        sql::timer(&mut self.db(), ns, id, event)
    }
    fn delete_timer(&mut self, ns: &str, id: &str, event: &str) -> Result<bool, Error> {
        sql::delete_timer(&mut self.db(), ns, id, event)
    }
    fn delete_timers(&mut self, ns: &str, id: &str) -> Result<(), Error> {
        sql::delete_timers(&mut self.db(), ns, id)
    }
    fn due_timers_of(
        &mut self,
        ns: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TimerRecord>, Error> {
        sql::due_timers_of(&mut self.db(), ns, id, now)
    }
    fn insert_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        sql::insert_approval(&mut self.db(), a)
    }
    fn approval(&mut self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        sql::approval(&mut self.db(), id)
    }
    fn update_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        sql::update_approval(&mut self.db(), a)
    }
    fn pending_approvals(&mut self, ns: &str, id: &str) -> Result<Vec<ApprovalRecord>, Error> {
        sql::approvals(
            &mut self.db(),
            ns,
            Some(cairn_store::ApprovalStatus::Pending),
            Some(id),
        )
    }
    fn insert_checkpoint(&mut self, k: &CheckpointRecord) -> Result<(), Error> {
        sql::insert_checkpoint(&mut self.db(), k)
    }
    fn checkpoint(
        &mut self,
        ns: &str,
        id: &str,
        name: &str,
    ) -> Result<Option<CheckpointRecord>, Error> {
        Ok(sql::checkpoints(&mut self.db(), ns, id, Some(name))?.pop())
    }
    fn history_at(&mut self, ns: &str, id: &str, seq: u64) -> Result<Option<HistoryRecord>, Error> {
        sql::history_at(&mut self.db(), ns, id, seq)
    }
    fn push_inbox(&mut self, e: &InboxRecord) -> Result<(), Error> {
        sql::push_inbox(&mut self.db(), e)
    }
    fn take_inbox(&mut self, ns: &str, id: &str) -> Result<Vec<InboxRecord>, Error> {
        sql::take_inbox(&mut self.db(), ns, id)
    }
    fn inbox_key(&mut self, ns: &str, id: &str, key: &str) -> Result<Option<InboxRecord>, Error> {
        sql::inbox_key(&mut self.db(), ns, id, key)
    }
    fn delete_instance(&mut self, ns: &str, id: &str) -> Result<bool, Error> {
        sql::delete_instance(&mut self.db(), ns, id)
    }
    fn delete_history_before(&mut self, ns: &str, id: &str, before: u64) -> Result<u64, Error> {
        sql::delete_history_before(&mut self.db(), ns, id, before)
    }
    fn replace_history(&mut self, h: &HistoryRecord) -> Result<(), Error> {
        sql::replace_history(&mut self.db(), h)
    }
    fn insert_task(&mut self, t: &TaskRecord) -> Result<(), Error> {
        sql::insert_task(&mut self.db(), t)
    }
    fn task(&mut self, id: &str) -> Result<Option<TaskRecord>, Error> {
        sql::task(&mut self.db(), id)
    }
    fn update_task(&mut self, t: &TaskRecord) -> Result<(), Error> {
        sql::update_task(&mut self.db(), t)
    }
    fn open_tasks(&mut self, ns: &str, id: &str) -> Result<Vec<TaskRecord>, Error> {
        sql::open_tasks(&mut self.db(), ns, id)
    }
    fn claimable_tasks(
        &mut self,
        queues: &[String],
        namespaces: Option<&[String]>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, Error> {
        sql::claimable(&mut self.db(), queues, namespaces, now, limit, true)
    }
    fn expired_leases(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, Error> {
        sql::expired(&mut self.db(), now, limit, true)
    }
    fn put_attempt(&mut self, a: &AttemptRecord) -> Result<(), Error> {
        sql::put_attempt(&mut self.db(), a)
    }
    fn insert_child(&mut self, c: &ChildRecord) -> Result<(), Error> {
        sql::insert_child(&mut self.db(), c)
    }
    fn children(&mut self, ns: &str, parent: &str) -> Result<Vec<ChildRecord>, Error> {
        sql::children(&mut self.db(), ns, parent)
    }
    fn push_outbox(&mut self, e: &OutboxRecord) -> Result<i64, Error> {
        sql::push_outbox(&mut self.db(), e)
    }
    fn outbox(&mut self, limit: usize) -> Result<Vec<OutboxRecord>, Error> {
        sql::outbox(&mut self.db(), limit)
    }
    fn delete_outbox(&mut self, seq: i64) -> Result<bool, Error> {
        sql::delete_outbox(&mut self.db(), seq)
    }
    fn put_map(&mut self, ns: &str, id: &str, state: &str, progress: &Value) -> Result<(), Error> {
        sql::put_map(&mut self.db(), ns, id, state, progress)
    }
    fn map_progress(&mut self, ns: &str, id: &str, state: &str) -> Result<Option<Value>, Error> {
        sql::map_progress(&mut self.db(), ns, id, state)
    }
    fn maps_of(&mut self, ns: &str, id: &str) -> Result<Vec<(String, Value)>, Error> {
        sql::maps_of(&mut self.db(), ns, id)
    }
    fn delete_map(&mut self, ns: &str, id: &str, state: &str) -> Result<bool, Error> {
        sql::delete_map(&mut self.db(), ns, id, state)
    }
    fn insert_trigger(&mut self, t: &TriggerRecord) -> Result<(), Error> {
        sql::insert_trigger(&mut self.db(), t)
    }
    fn delete_trigger(&mut self, ns: &str, name: &str) -> Result<bool, Error> {
        sql::delete_trigger(&mut self.db(), ns, name)
    }
    fn triggers(&mut self, ns: &str) -> Result<Vec<TriggerRecord>, Error> {
        sql::triggers(&mut self.db(), ns)
    }
    fn insert_schedule(&mut self, s: &ScheduleRecord) -> Result<(), Error> {
        sql::insert_schedule(&mut self.db(), s)
    }
    fn delete_schedule(&mut self, ns: &str, name: &str) -> Result<bool, Error> {
        sql::delete_schedule(&mut self.db(), ns, name)
    }
    fn due_schedules(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, Error> {
        sql::due_schedules(&mut self.db(), now, limit, true)
    }
    fn update_schedule(&mut self, s: &ScheduleRecord) -> Result<(), Error> {
        sql::update_schedule(&mut self.db(), s)
    }
    fn insert_token(&mut self, t: &TokenRecord) -> Result<(), Error> {
        sql::insert_token(&mut self.db(), t)
    }
    fn revoke_token(&mut self, id: &str, at: DateTime<Utc>) -> Result<bool, Error> {
        sql::revoke_token(&mut self.db(), id, at)
    }

    /// The position is this transaction's id, shifted, plus the entry's index in it, so
    /// positions follow commit order as readers see it (see `sql::log`).
    fn append_log(&mut self, e: &NewLogEntry) -> Result<i64, Error> {
        if self.logged >= 1 << LOG_BITS {
            return Err(Error::Refused(format!(
                "a unit may append at most {} log entries",
                1u64 << LOG_BITS
            )));
        }
        let index = self.logged;
        let position = sql::insert_log(&mut self.db(), index, e)?;
        self.logged += 1;
        Ok(position)
    }
    fn trim_log(
        &mut self,
        before: Option<DateTime<Utc>>,
        keep: Option<u64>,
        limit: usize,
    ) -> Result<u64, Error> {
        sql::trim_log(&mut self.db(), before, keep, limit)
    }
    fn add_figure(&mut self, f: &cairn_store::Figure) -> Result<(), Error> {
        sql::add_figure(&mut self.db(), f)
    }
}
