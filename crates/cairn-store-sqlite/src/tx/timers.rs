//! The SQLite writer's side of [`cairn_store::TimersTx`].

use super::*;

impl cairn_store::TimersTx for SqlTx<'_> {
    fn set_timer(&mut self, t: &TimerRecord) -> Result<(), Error> {
        lc::set_timer(self.conn, t)
    }
    fn timer(&mut self, ns: &str, id: &str, event: &str) -> Result<Option<TimerRecord>, Error> {
        lc::timer(self.conn, ns, id, event)
    }
    fn delete_timer(&mut self, ns: &str, id: &str, event: &str) -> Result<bool, Error> {
        lc::delete_timer(self.conn, ns, id, event)
    }
    fn delete_timers(&mut self, ns: &str, id: &str) -> Result<(), Error> {
        lc::delete_timers(self.conn, ns, id)
    }
    fn due_timers_of(
        &mut self,
        ns: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TimerRecord>, Error> {
        lc::due_timers_of(self.conn, ns, id, now)
    }
}
