//! The PostgreSQL unit's side of [`cairn_store::OutboxTx`].

use super::*;

impl cairn_store::OutboxTx for PgTx<'_> {
    fn push_outbox(&mut self, e: &OutboxRecord) -> Result<i64, Error> {
        sql::push_outbox(&mut self.db(), e)
    }
    fn outbox(&mut self, limit: usize) -> Result<Vec<OutboxRecord>, Error> {
        sql::outbox(&mut self.db(), limit)
    }
    fn delete_outbox(&mut self, seq: i64) -> Result<bool, Error> {
        sql::delete_outbox(&mut self.db(), seq)
    }
}
