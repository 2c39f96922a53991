//! The SQLite writer's side of [`cairn_store::TasksTx`].

use super::*;

impl cairn_store::TasksTx for SqlTx<'_> {
    fn insert_task(&mut self, t: &cairn_store::TaskRecord) -> Result<(), Error> {
        crate::tasks::insert_task(self.conn, t)
    }
    fn task(&mut self, id: &str) -> Result<Option<cairn_store::TaskRecord>, Error> {
        crate::tasks::task(self.conn, id)
    }
    fn task_instances(&mut self, ids: &[String]) -> Result<Vec<(String, String, String)>, Error> {
        crate::tasks::task_instances(self.conn, ids)
    }
    fn update_task(&mut self, t: &cairn_store::TaskRecord) -> Result<(), Error> {
        crate::tasks::update_task(self.conn, t)
    }
    fn open_tasks(&mut self, ns: &str, id: &str) -> Result<Vec<cairn_store::TaskRecord>, Error> {
        crate::tasks::open_tasks(self.conn, ns, id)
    }
    fn claimable_tasks(
        &mut self,
        queues: &[String],
        namespaces: Option<&[String]>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<cairn_store::TaskRecord>, Error> {
        crate::tasks::claimable(self.conn, queues, namespaces, now, limit)
    }
    fn expired_leases(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<cairn_store::TaskRecord>, Error> {
        crate::tasks::expired(self.conn, now, limit)
    }
    fn put_attempt(&mut self, a: &cairn_store::AttemptRecord) -> Result<(), Error> {
        crate::tasks::put_attempt(self.conn, a)
    }
    fn attempts(&mut self, task_id: &str) -> Result<Vec<cairn_store::AttemptRecord>, Error> {
        crate::tasks::attempts(self.conn, task_id)
    }
}
