//! The SQLite writer's side of [`cairn_store::OutboxTx`].

use super::*;

impl cairn_store::OutboxTx for SqlTx<'_> {
    fn push_outbox(&mut self, e: &cairn_store::OutboxRecord) -> Result<i64, Error> {
        self.conn
            .prepare_cached("INSERT INTO outbox (kind, hops, namespace, instance_id, event, payload, actor, reason, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
            .and_then(|mut s| s.execute(params![e.kind, e.hops, e.namespace, e.instance_id, e.event, json(&e.payload), e.actor, e.reason, e.source, ts(&e.created_at)]))
            .map_err(db_err)?;
        Ok(self.conn.last_insert_rowid())
    }
    fn outbox(&mut self, limit: usize) -> Result<Vec<cairn_store::OutboxRecord>, Error> {
        let mut s = self
            .conn
            .prepare_cached("SELECT seq, namespace, instance_id, event, payload, actor, reason, source, created_at, kind, hops FROM outbox ORDER BY seq LIMIT ?1")
            .map_err(db_err)?;
        let rows = s
            .query_map(params![limit as i64], |r| row(r, 11))
            .map_err(db_err)?;
        rows.map(|r| {
            let v = r.map_err(db_err)?;
            Ok(cairn_store::OutboxRecord {
                seq: int(&v[0])?,
                namespace: text(&v[1])?.to_string(),
                instance_id: text(&v[2])?.to_string(),
                event: text(&v[3])?.to_string(),
                payload: parse_json(text(&v[4])?, "outbox payload")?,
                actor: text(&v[5])?.to_string(),
                reason: text(&v[6])?.to_string(),
                source: text(&v[7])?.to_string(),
                created_at: parse_ts(text(&v[8])?)?,
                kind: text(&v[9])?.to_string(),
                hops: int(&v[10])? as u32,
            })
        })
        .collect()
    }
    fn delete_outbox(&mut self, seq: i64) -> Result<bool, Error> {
        self.conn
            .prepare_cached("DELETE FROM outbox WHERE seq = ?1")
            .and_then(|mut s| s.execute(params![seq]))
            .map(|n| n > 0)
            .map_err(db_err)
    }
}
