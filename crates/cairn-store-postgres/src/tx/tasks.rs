//! The PostgreSQL unit's side of [`cairn_store::TasksTx`].

use super::*;

impl cairn_store::TasksTx for PgTx<'_> {
    fn insert_task(&mut self, t: &TaskRecord) -> Result<(), Error> {
        sql::insert_task(&mut self.db(), t)
    }
    fn task(&mut self, id: &str) -> Result<Option<TaskRecord>, Error> {
        sql::task(&mut self.db(), id)
    }
    fn task_instances(&mut self, ids: &[String]) -> Result<Vec<(String, String, String)>, Error> {
        sql::task_instances(&mut self.db(), ids)
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
    fn attempts(&mut self, task_id: &str) -> Result<Vec<AttemptRecord>, Error> {
        sql::attempts(&mut self.db(), task_id)
    }
}
