//! The PostgreSQL unit's side of [`cairn_store::DefinitionsTx`].

use super::*;

impl cairn_store::DefinitionsTx for PgTx<'_> {
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
}
