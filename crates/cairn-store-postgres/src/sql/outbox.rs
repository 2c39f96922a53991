//! SQL of the transactional outbox.

use cairn_store::{Error, OutboxRecord};

use super::*;

pub fn push_outbox<C: GenericClient>(db: &mut Db<C>, e: &OutboxRecord) -> Result<i64, Error> {
    let r = db
        .opt(
            "INSERT INTO outbox (kind, hops, namespace, instance_id, event, payload, actor, reason, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq",
            &[
                &e.kind,
                &(e.hops as i32),
                &e.namespace,
                &e.instance_id,
                &e.event,
                &e.payload,
                &e.actor,
                &e.reason,
                &e.source,
                &e.created_at,
            ],
        )?
        .ok_or_else(|| Error::Database("INSERT ... RETURNING returned nothing".into()))?;
    get(&r, "seq")
}

/// The oldest entries a unit may deliver, locked. Entries of one receiver stay in order
/// across nodes: a unit first takes the receiver's advisory lock (held until it commits),
/// so while one node delivers to an instance, the others skip that instance's entries.
pub fn outbox<C: GenericClient>(db: &mut Db<C>, limit: usize) -> Result<Vec<OutboxRecord>, Error> {
    db.query(
        "SELECT seq, namespace, instance_id, event, payload, actor, reason, source, created_at, kind, hops FROM outbox \
         WHERE pg_try_advisory_xact_lock(hashtextextended(namespace || E'\\n' || instance_id, 0)) \
         ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        &[&(limit as i64)],
    )?
    .iter()
    .map(|r| {
        Ok(OutboxRecord {
            seq: get(r, "seq")?,
            kind: get(r, "kind")?,
            hops: get::<i32>(r, "hops")? as u32,
            namespace: get(r, "namespace")?,
            instance_id: get(r, "instance_id")?,
            event: get(r, "event")?,
            payload: get(r, "payload")?,
            actor: get(r, "actor")?,
            reason: get(r, "reason")?,
            source: get(r, "source")?,
            created_at: get(r, "created_at")?,
        })
    })
    .collect()
}

pub fn delete_outbox<C: GenericClient>(db: &mut Db<C>, seq: i64) -> Result<bool, Error> {
    Ok(db.exec("DELETE FROM outbox WHERE seq = $1", &[&seq])? > 0)
}

pub fn outbox_waiting<C: GenericClient>(db: &mut Db<C>) -> Result<bool, Error> {
    Ok(db
        .opt("SELECT 1 AS one FROM outbox LIMIT 1", &[])?
        .is_some())
}
