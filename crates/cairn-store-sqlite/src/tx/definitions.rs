//! The SQLite writer's side of [`cairn_store::DefinitionsTx`].

use super::*;

impl cairn_store::DefinitionsTx for SqlTx<'_> {
    fn machine(
        &mut self,
        ns: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<MachineRecord>, Error> {
        machine(self.conn, ns, name, version)
    }

    fn max_machine_version(&mut self, ns: &str, name: &str) -> Result<Option<u32>, Error> {
        self.conn
            .prepare_cached("SELECT MAX(version) FROM machines WHERE namespace = ?1 AND name = ?2")
            .and_then(|mut s| s.query_row(params![ns, name], |r| r.get::<_, Option<i64>>(0)))
            .map(|v| v.map(|v| v as u32))
            .map_err(db_err)
    }

    fn delete_machine(
        &mut self,
        ns: &str,
        name: &str,
        version: u32,
        at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        self.conn
            .prepare_cached(
                "UPDATE machines SET definition = '{}', deleted_at = ?4 \
                 WHERE namespace = ?1 AND name = ?2 AND version = ?3 AND deleted_at IS NULL",
            )
            .and_then(|mut s| s.execute(params![ns, name, version, ts(&at)]))
            .map(|n| n > 0)
            .map_err(db_err)
    }

    fn machine_in_use(&mut self, ns: &str, name: &str, version: u32) -> Result<u64, Error> {
        self.conn
            .prepare_cached(
                "SELECT COUNT(*) FROM instances WHERE namespace = ?1 AND machine = ?2 AND machine_version = ?3",
            )
            .and_then(|mut s| s.query_row(params![ns, name, version], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(db_err)
    }

    fn insert_machine(&mut self, m: &MachineRecord) -> Result<(), Error> {
        let r = self
            .conn
            .prepare_cached(&format!(
                "INSERT INTO machines ({MACHINE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    m.namespace,
                    m.name,
                    m.version,
                    m.digest,
                    json(&m.definition),
                    ts(&m.created_at)
                ])
            });
        conflict_if_duplicate(r, || {
            format!("machine `{}` version {} exists", m.name, m.version)
        })
    }

    fn insert_trigger(&mut self, t: &cairn_store::TriggerRecord) -> Result<(), Error> {
        let r = self
            .conn
            .prepare_cached("INSERT INTO triggers (namespace, name, machine, definition, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .and_then(|mut s| s.execute(params![t.namespace, t.name, t.machine, json(&t.definition), ts(&t.created_at)]));
        conflict_if_duplicate(r, || format!("trigger `{}` exists", t.name))
    }
    fn delete_trigger(&mut self, ns: &str, name: &str) -> Result<bool, Error> {
        self.conn
            .prepare_cached("DELETE FROM triggers WHERE namespace = ?1 AND name = ?2")
            .and_then(|mut s| s.execute(params![ns, name]))
            .map(|n| n > 0)
            .map_err(db_err)
    }
    fn triggers(&mut self, ns: &str) -> Result<Vec<cairn_store::TriggerRecord>, Error> {
        triggers(self.conn, ns)
    }

    fn insert_schedule(&mut self, r: &cairn_store::ScheduleRecord) -> Result<(), Error> {
        let res = self
            .conn
            .prepare_cached("INSERT INTO schedules (namespace, name, definition, next_at, last_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .and_then(|mut s| s.execute(params![r.namespace, r.name, json(&r.definition), ts(&r.next_at), r.last_at.as_ref().map(ts), ts(&r.created_at)]));
        conflict_if_duplicate(res, || format!("schedule `{}` exists", r.name))
    }
    fn delete_schedule(&mut self, ns: &str, name: &str) -> Result<bool, Error> {
        self.conn
            .prepare_cached("DELETE FROM schedules WHERE namespace = ?1 AND name = ?2")
            .and_then(|mut s| s.execute(params![ns, name]))
            .map(|n| n > 0)
            .map_err(db_err)
    }
    fn due_schedules(
        &mut self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<cairn_store::ScheduleRecord>, Error> {
        schedules_where(
            self.conn,
            "next_at <= ?1 ORDER BY next_at LIMIT ?2",
            params![ts(&now), limit as i64],
        )
    }
    fn update_schedule(&mut self, r: &cairn_store::ScheduleRecord) -> Result<(), Error> {
        self.conn
            .prepare_cached("UPDATE schedules SET next_at = ?3, last_at = ?4 WHERE namespace = ?1 AND name = ?2")
            .and_then(|mut s| s.execute(params![r.namespace, r.name, ts(&r.next_at), r.last_at.as_ref().map(ts)]))
            .map(|_| ())
            .map_err(db_err)
    }
}
