//! The SQLite writer's side of [`cairn_store::HistoryTx`].

use super::*;

impl cairn_store::HistoryTx for SqlTx<'_> {
    fn append_history(&mut self, h: &HistoryRecord) -> Result<(), Error> {
        let r = self
            .conn
            .prepare_cached(&format!(
                "INSERT INTO history ({HISTORY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    h.namespace,
                    h.instance_id,
                    h.seq as i64,
                    h.kind.as_str(),
                    h.version as i64,
                    h.event,
                    json(&h.payload),
                    h.actor,
                    h.reason,
                    json(&h.from_configuration),
                    json(&h.to_configuration),
                    json(&h.context),
                    h.status.as_str(),
                    h.idempotency_key,
                    json(&h.microsteps),
                    json(&h.effects),
                    h.time_in_states_ms,
                    ts(&h.created_at),
                    h.token_id,
                    h.on_behalf_of,
                    h.addressed_to
                ])
            });
        conflict_if_duplicate(r, || {
            format!(
                "history of `{}` already has version {}",
                h.instance_id, h.version
            )
        })
    }

    fn idempotency(
        &mut self,
        ns: &str,
        id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, Error> {
        let row = self
            .conn
            .prepare_cached("SELECT fingerprint, version, created_at FROM idempotency WHERE namespace = ?1 AND instance_id = ?2 AND key = ?3")
            .and_then(|mut s| {
                s.query_row(params![ns, id, key], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                })
                .optional()
            })
            .map_err(db_err)?;
        row.map(|(fingerprint, version, created_at)| {
            Ok(IdempotencyRecord {
                namespace: ns.to_string(),
                instance_id: id.to_string(),
                key: key.to_string(),
                fingerprint,
                version: version as u64,
                created_at: parse_ts(&created_at)?,
            })
        })
        .transpose()
    }

    fn insert_idempotency(&mut self, r: &IdempotencyRecord) -> Result<(), Error> {
        let res = self
            .conn
            .prepare_cached("INSERT INTO idempotency (namespace, instance_id, key, fingerprint, version, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .and_then(|mut s| s.execute(params![r.namespace, r.instance_id, r.key, r.fingerprint, r.version as i64, ts(&r.created_at)]));
        conflict_if_duplicate(res, || format!("idempotency key `{}` exists", r.key))
    }
    fn insert_checkpoint(&mut self, k: &CheckpointRecord) -> Result<(), Error> {
        lc::insert_checkpoint(self.conn, k)
    }
    fn checkpoint(
        &mut self,
        ns: &str,
        id: &str,
        name: &str,
    ) -> Result<Option<CheckpointRecord>, Error> {
        Ok(lc::checkpoints(self.conn, ns, id, Some(name))?
            .into_iter()
            .next())
    }
    fn history_at(&mut self, ns: &str, id: &str, seq: u64) -> Result<Option<HistoryRecord>, Error> {
        lc::history_at(self.conn, ns, id, seq)
    }
    fn delete_history_before(&mut self, ns: &str, id: &str, before: u64) -> Result<u64, Error> {
        lc::delete_history_before(self.conn, ns, id, before)
    }
    fn replace_history(&mut self, h: &HistoryRecord) -> Result<(), Error> {
        lc::replace_history(self.conn, h)
    }

    fn append_log(&mut self, e: &NewLogEntry) -> Result<i64, Error> {
        self.conn
            .prepare_cached("INSERT INTO log (namespace, instance_id, kind, version, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .and_then(|mut s| s.execute(params![e.namespace, e.instance_id, e.kind, e.version as i64, json(&e.data), ts(&e.created_at)]))
            .map_err(db_err)?;
        Ok(self.conn.last_insert_rowid())
    }
    fn trim_log(
        &mut self,
        before: Option<DateTime<Utc>>,
        keep: Option<u64>,
        limit: usize,
    ) -> Result<u64, Error> {
        trim_log(self.conn, before, keep, limit)
    }
    fn add_figure(&mut self, f: &cairn_store::Figure) -> Result<(), Error> {
        self.figures.push(f.clone());
        Ok(())
    }
}
