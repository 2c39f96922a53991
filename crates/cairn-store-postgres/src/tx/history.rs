//! The PostgreSQL unit's side of [`cairn_store::HistoryTx`].

use super::*;

impl cairn_store::HistoryTx for PgTx<'_> {
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
    fn delete_history_before(&mut self, ns: &str, id: &str, before: u64) -> Result<u64, Error> {
        sql::delete_history_before(&mut self.db(), ns, id, before)
    }
    fn replace_history(&mut self, h: &HistoryRecord) -> Result<(), Error> {
        sql::replace_history(&mut self.db(), h)
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
        let position = match self.xid {
            // The rest are written at the commit, in one statement.
            Some(xid) => {
                let position = (xid << LOG_BITS) | index;
                self.logs.push((position, e.clone()));
                position
            }
            None => {
                let position = sql::insert_log(&mut self.db(), index, e)?;
                self.xid = Some(position >> LOG_BITS);
                position
            }
        };
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
    /// Kept until the commit, which writes the unit's changes in one statement.
    fn add_figure(&mut self, f: &cairn_store::Figure) -> Result<(), Error> {
        self.figures.push(f.clone());
        Ok(())
    }
}
