//! SQL of history, idempotency keys, the log, checkpoints and figures.

use cairn_store::{
    CheckpointRecord, Error, Figure, HistoryKind, HistoryRecord, IdempotencyRecord, LogEntry,
    NewLogEntry,
};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::*;

/// The figures: what was folded plus the changes not folded yet.
pub fn figures<C: GenericClient>(db: &mut Db<C>, ns: Option<&str>) -> Result<Vec<Figure>, Error> {
    db.query(
        "SELECT namespace, kind, name, detail, sum(value)::bigint AS value FROM ( \
           SELECT namespace, kind, name, detail, value FROM figures WHERE $1::text IS NULL OR namespace = $1 \
           UNION ALL \
           SELECT namespace, kind, name, detail, value FROM figure_deltas WHERE $1::text IS NULL OR namespace = $1) f \
         GROUP BY namespace, kind, name, detail HAVING sum(value) <> 0 \
         ORDER BY namespace, kind, name, detail",
        &[&ns],
    )?
    .iter()
    .map(|r| {
        Ok(Figure {
            namespace: get(r, "namespace")?,
            kind: get(r, "kind")?,
            name: get(r, "name")?,
            detail: get(r, "detail")?,
            value: get(r, "value")?,
        })
    })
    .collect()
}

/// A unit's changes to the figures, summed by figure, in one statement held for the
/// unit's next round trip (its commit).
pub fn add_figures<C: GenericClient>(db: &mut Db<C>, figures: &[Figure]) -> Result<(), Error> {
    if figures.is_empty() {
        return Ok(());
    }
    let mut sums: std::collections::BTreeMap<(&str, &str, &str, &str), i64> =
        std::collections::BTreeMap::new();
    for f in figures {
        let v = sums
            .entry((&f.namespace, &f.kind, &f.name, &f.detail))
            .or_default();
        *v = v.saturating_add(f.value);
    }
    let mut keys: [Vec<&str>; 4] = Default::default();
    let mut values: Vec<i64> = Vec::with_capacity(sums.len());
    for ((ns, kind, name, detail), v) in sums {
        for (col, k) in keys.iter_mut().zip([ns, kind, name, detail]) {
            col.push(k);
        }
        values.push(v);
    }
    db.later(
        "INSERT INTO figure_deltas (namespace, kind, name, detail, value) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])",
        &[&keys[0], &keys[1], &keys[2], &keys[3], &values],
        Expect::none(),
    )
}

/// Moves up to `limit` changes from `figure_deltas` into `figures`; how many it moved.
/// Two nodes folding at once take different rows (a row one deletes, the other skips).
pub fn fold_figures<C: GenericClient>(db: &mut Db<C>, limit: i64) -> Result<u64, Error> {
    let row = db.opt(
        "WITH moved AS ( \
           DELETE FROM figure_deltas WHERE id IN (SELECT id FROM figure_deltas ORDER BY id LIMIT $1) \
           RETURNING namespace, kind, name, detail, value), \
         folded AS ( \
           INSERT INTO figures (namespace, kind, name, detail, value) \
           SELECT namespace, kind, name, detail, sum(value) FROM moved GROUP BY namespace, kind, name, detail \
           ON CONFLICT (namespace, kind, name, detail) DO UPDATE SET value = figures.value + excluded.value \
           RETURNING 1) \
         SELECT (SELECT count(*) FROM moved)::bigint AS n",
        &[&limit],
    )?;
    Ok(row.map(|r| get::<i64>(&r, "n")).transpose()?.unwrap_or(0) as u64)
}

pub(crate) const HISTORY_COLS: &str = "namespace, instance_id, seq, kind, version, event, payload, actor, reason, from_configuration, to_configuration, context, status, idempotency_key, microsteps, effects, time_in_states_ms, created_at, token_id, on_behalf_of, addressed_to";

pub(crate) fn history_row(r: &Row) -> Result<HistoryRecord, Error> {
    let kind: &str = get(r, "kind")?;
    Ok(HistoryRecord {
        namespace: get(r, "namespace")?,
        instance_id: get(r, "instance_id")?,
        seq: get::<i64>(r, "seq")? as u64,
        kind: HistoryKind::parse(kind)
            .ok_or_else(|| Error::Corrupt(format!("bad history kind `{kind}`")))?,
        version: get::<i64>(r, "version")? as u64,
        event: get(r, "event")?,
        payload: get(r, "payload")?,
        actor: get(r, "actor")?,
        reason: get(r, "reason")?,
        from_configuration: json_of(r, "from_configuration")?,
        to_configuration: json_of(r, "to_configuration")?,
        context: get(r, "context")?,
        status: status(get(r, "status")?)?,
        idempotency_key: get(r, "idempotency_key")?,
        microsteps: get(r, "microsteps")?,
        effects: get(r, "effects")?,
        time_in_states_ms: get(r, "time_in_states_ms")?,
        created_at: get(r, "created_at")?,
        token_id: get(r, "token_id")?,
        on_behalf_of: get(r, "on_behalf_of")?,
        addressed_to: get(r, "addressed_to")?,
    })
}

/// Held for the unit's next round trip.
pub fn append_history<C: GenericClient>(db: &mut Db<C>, h: &HistoryRecord) -> Result<(), Error> {
    let conflict = format!(
        "history of `{}` already has seq {} or version {}",
        h.instance_id, h.seq, h.version
    );
    db.later(
        &format!("INSERT INTO history ({HISTORY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"),
        &[
            &h.namespace,
            &h.instance_id,
            &i64_of(h.seq),
            &h.kind.as_str(),
            &i64_of(h.version),
            &h.event,
            &h.payload,
            &h.actor,
            &h.reason,
            &Json(&h.from_configuration),
            &Json(&h.to_configuration),
            &h.context,
            &h.status.as_str(),
            &h.idempotency_key,
            &h.microsteps,
            &h.effects,
            &h.time_in_states_ms,
            &h.created_at,
            &h.token_id,
            &h.on_behalf_of,
            &h.addressed_to,
        ],
        Expect {
            conflict: Some(conflict),
            miscount: None,
        },
    )
}

pub fn replace_history<C: GenericClient>(db: &mut Db<C>, h: &HistoryRecord) -> Result<(), Error> {
    let n = db.exec(
        "UPDATE history SET kind = $4, version = $5, event = $6, payload = $7, actor = $8, reason = $9, from_configuration = $10, \
         to_configuration = $11, context = $12, status = $13, idempotency_key = $14, microsteps = $15, effects = $16, time_in_states_ms = $17, created_at = $18, \
         token_id = $19, on_behalf_of = $20, addressed_to = $21 WHERE namespace = $1 AND instance_id = $2 AND seq = $3",
        &[
            &h.namespace,
            &h.instance_id,
            &i64_of(h.seq),
            &h.kind.as_str(),
            &i64_of(h.version),
            &h.event,
            &h.payload,
            &h.actor,
            &h.reason,
            &Json(&h.from_configuration),
            &Json(&h.to_configuration),
            &h.context,
            &h.status.as_str(),
            &h.idempotency_key,
            &h.microsteps,
            &h.effects,
            &h.time_in_states_ms,
            &h.created_at,
            &h.token_id,
            &h.on_behalf_of,
            &h.addressed_to,
        ],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "history record {} of `{}`",
            h.seq, h.instance_id
        )))
    }
}

pub fn history<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<HistoryRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {HISTORY_COLS} FROM history WHERE namespace = $1 AND instance_id = $2 AND seq > $3 ORDER BY seq LIMIT $4"),
            &[&ns, &id, &i64_of(after), &(limit.min(i64::MAX as usize) as i64)],
        )?,
        history_row,
    )
}

pub fn history_before<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    before: u64,
    limit: usize,
) -> Result<Vec<HistoryRecord>, Error> {
    let before = i64_of(before);
    let mut newest = rows(
        db.query(
            &format!("SELECT {HISTORY_COLS} FROM history WHERE namespace = $1 AND instance_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4"),
            &[&ns, &id, &before, &(limit.min(i64::MAX as usize) as i64)],
        )?,
        history_row,
    )?;
    newest.reverse();
    Ok(newest)
}

pub fn history_at<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    seq: u64,
) -> Result<Option<HistoryRecord>, Error> {
    db.opt(
        &format!("SELECT {HISTORY_COLS} FROM history WHERE namespace = $1 AND instance_id = $2 AND seq = $3"),
        &[&ns, &id, &i64_of(seq)],
    )?
    .as_ref()
    .map(history_row)
    .transpose()
}

pub fn transition<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    version: u64,
) -> Result<Option<HistoryRecord>, Error> {
    db.opt(
        &format!("SELECT {HISTORY_COLS} FROM history WHERE namespace = $1 AND instance_id = $2 AND version = $3 AND kind IN ('start', 'event')"),
        &[&ns, &id, &i64_of(version)],
    )?
    .as_ref()
    .map(history_row)
    .transpose()
}

pub fn delete_history_before<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    before: u64,
) -> Result<u64, Error> {
    db.exec(
        "DELETE FROM history WHERE namespace = $1 AND instance_id = $2 AND seq < $3",
        &[&ns, &id, &i64_of(before)],
    )
}

pub fn idempotency<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, Error> {
    db.opt(
        "SELECT fingerprint, version, created_at FROM idempotency WHERE namespace = $1 AND instance_id = $2 AND key = $3",
        &[&ns, &id, &key],
    )?
    .map(|r| {
        Ok(IdempotencyRecord {
            namespace: ns.to_string(),
            instance_id: id.to_string(),
            key: key.to_string(),
            fingerprint: get(&r, "fingerprint")?,
            version: get::<i64>(&r, "version")? as u64,
            created_at: get(&r, "created_at")?,
        })
    })
    .transpose()
}

/// Held for the unit's next round trip.
pub fn insert_idempotency<C: GenericClient>(
    db: &mut Db<C>,
    r: &IdempotencyRecord,
) -> Result<(), Error> {
    db.later(
        "INSERT INTO idempotency (namespace, instance_id, key, fingerprint, version, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&r.namespace, &r.instance_id, &r.key, &r.fingerprint, &i64_of(r.version), &r.created_at],
        Expect {
            conflict: Some(format!("idempotency key `{}` exists", r.key)),
            miscount: None,
        },
    )
}

/// Appends the unit's `index`-th entry (its first: the rest go by `insert_logs`); its
/// position is the transaction's id shifted left 20 bits, plus `index` (see `log`).
pub fn insert_log<C: GenericClient>(
    db: &mut Db<C>,
    index: i64,
    e: &NewLogEntry,
) -> Result<i64, Error> {
    let row = db
        .opt(
            "INSERT INTO log (position, namespace, instance_id, kind, version, data, created_at) \
             VALUES ((pg_current_xact_id()::text::bigint << 20) | $1, $2, $3, $4, $5, $6, $7) RETURNING position",
            &[&index, &e.namespace, &e.instance_id, &e.kind, &i64_of(e.version), &e.data, &e.created_at],
        )?
        .ok_or_else(|| Error::Database("INSERT ... RETURNING returned nothing".into()))?;
    let position: i64 = get(&row, "position")?;
    if position <= 0 {
        return Err(Error::Database(format!(
            "log position {position}: the transaction id is beyond what positions hold"
        )));
    }
    Ok(position)
}

/// A unit's further log entries, at the positions `insert_log`'s made them, in one
/// statement held for the unit's next round trip (its commit).
pub fn insert_logs<C: GenericClient>(
    db: &mut Db<C>,
    entries: &[(i64, NewLogEntry)],
) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let n = entries.len();
    let mut positions = Vec::with_capacity(n);
    let (mut nss, mut ids, mut kinds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut versions, mut data, mut at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (p, e) in entries {
        positions.push(*p);
        nss.push(e.namespace.as_str());
        ids.push(e.instance_id.as_str());
        kinds.push(e.kind.as_str());
        versions.push(i64_of(e.version));
        data.push(&e.data);
        at.push(e.created_at);
    }
    db.later(
        "INSERT INTO log (position, namespace, instance_id, kind, version, data, created_at) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::json[], $7::timestamptz[])",
        &[&positions, &nss, &ids, &kinds, &versions, &data, &at],
        Expect::none(),
    )
}

/// Entries after `after`, only below the horizon: positions of transactions older than
/// every one still running, so none can commit below a position returned here.
pub fn log<C: GenericClient>(
    db: &mut Db<C>,
    after: i64,
    limit: usize,
) -> Result<Vec<LogEntry>, Error> {
    db.query(
        "SELECT position, namespace, instance_id, kind, version, data, created_at FROM log \
         WHERE position > $1 AND position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20) \
         ORDER BY position LIMIT $2",
        &[&after, &(limit as i64)],
    )?
    .iter()
    .map(|r| {
        Ok(LogEntry {
            position: get(r, "position")?,
            entry: NewLogEntry {
                namespace: get(r, "namespace")?,
                instance_id: get(r, "instance_id")?,
                kind: get(r, "kind")?,
                version: get::<i64>(r, "version")? as u64,
                data: get(r, "data")?,
                created_at: get(r, "created_at")?,
            },
        })
    })
    .collect()
}

/// See `Tx::trim_log`: only entries every reader could see (below the oldest running
/// transaction's positions) are removed, so nothing commits below the horizon later.
pub fn trim_log<C: GenericClient>(
    db: &mut Db<C>,
    before: Option<DateTime<Utc>>,
    keep: Option<u64>,
    limit: usize,
) -> Result<u64, Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let keep = keep.map(|k| i64::try_from(k).unwrap_or(i64::MAX));
    let row = db
        .opt(
            "WITH oldest AS (SELECT position, created_at FROM log \
               WHERE position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20) \
               ORDER BY position LIMIT $1) \
             SELECT GREATEST( \
               (SELECT max(position) FROM oldest WHERE created_at < $2), \
               (SELECT CASE WHEN beyond IS NULL OR seen IS NULL THEN NULL ELSE LEAST(beyond, seen) END \
                FROM (SELECT (SELECT position FROM log ORDER BY position DESC LIMIT 1 OFFSET $3) AS beyond, \
                             (SELECT max(position) FROM oldest) AS seen) AS x \
                WHERE $3::bigint IS NOT NULL)) AS cut",
            &[&limit, &before, &keep],
        )?
        .ok_or_else(|| Error::Database("SELECT returned nothing".into()))?;
    let Some(cut) = get::<Option<i64>>(&row, "cut")? else {
        return Ok(0);
    };
    let removed = db.exec("DELETE FROM log WHERE position <= $1", &[&cut])?;
    db.exec(
        "INSERT INTO meta (key, value) VALUES ('log_horizon', $1) \
         ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value, excluded.value)",
        &[&cut],
    )?;
    Ok(removed)
}

pub fn log_horizon<C: GenericClient>(db: &mut Db<C>) -> Result<i64, Error> {
    Ok(db
        .opt("SELECT value FROM meta WHERE key = 'log_horizon'", &[])?
        .map(|r| get::<i64>(&r, "value"))
        .transpose()?
        .unwrap_or(0))
}

pub(crate) const CHECKPOINT_COLS: &str =
    "namespace, instance_id, name, seq, version, configuration, context, status, created_at";

pub(crate) fn checkpoint_row(r: &Row) -> Result<CheckpointRecord, Error> {
    Ok(CheckpointRecord {
        namespace: get(r, "namespace")?,
        instance_id: get(r, "instance_id")?,
        name: get(r, "name")?,
        seq: get::<i64>(r, "seq")? as u64,
        version: get::<i64>(r, "version")? as u64,
        configuration: json_of(r, "configuration")?,
        context: get(r, "context")?,
        status: status(get(r, "status")?)?,
        created_at: get(r, "created_at")?,
    })
}

pub fn insert_checkpoint<C: GenericClient>(
    db: &mut Db<C>,
    k: &CheckpointRecord,
) -> Result<(), Error> {
    let r = db.exec(
        &format!("INSERT INTO checkpoints ({CHECKPOINT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
        &[
            &k.namespace,
            &k.instance_id,
            &k.name,
            &i64_of(k.seq),
            &i64_of(k.version),
            &Json(&k.configuration),
            &k.context,
            &k.status.as_str(),
            &k.created_at,
        ],
    );
    unique(r, || {
        format!("checkpoint `{}` exists for `{}`", k.name, k.instance_id)
    })
    .map(|_| ())
}

pub fn checkpoints<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    name: Option<&str>,
) -> Result<Vec<CheckpointRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {CHECKPOINT_COLS} FROM checkpoints WHERE namespace = $1 AND instance_id = $2 AND ($3::text IS NULL OR name = $3) ORDER BY seq, name"),
            &[&ns, &id, &name],
        )?,
        checkpoint_row,
    )
}
