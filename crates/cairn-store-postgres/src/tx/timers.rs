//! The PostgreSQL unit's side of [`cairn_store::TimersTx`].

use super::*;

impl cairn_store::TimersTx for PgTx<'_> {
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
}
