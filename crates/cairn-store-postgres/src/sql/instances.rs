//! SQL of instances, the inbox of paused instances, children and maps.

use std::collections::BTreeMap;

use cairn_store::{ChildRecord, Error, InboxRecord, InstanceFilter, InstanceRecord, Page};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};

use super::*;

pub(crate) const INSTANCE_COLS: &str = "seq, namespace, id, machine, machine_version, status, configuration, context, version, labels, parent, last_error, created_at, updated_at, history_seq, entered";

pub(crate) fn instance_row(r: &Row) -> Result<InstanceRecord, Error> {
    Ok(InstanceRecord {
        namespace: get(r, "namespace")?,
        id: get(r, "id")?,
        machine: get(r, "machine")?,
        machine_version: get::<i32>(r, "machine_version")? as u32,
        status: status(get(r, "status")?)?,
        configuration: json_of(r, "configuration")?,
        context: get(r, "context")?,
        version: get::<i64>(r, "version")? as u64,
        labels: json_of::<BTreeMap<String, String>>(r, "labels")?,
        parent: get(r, "parent")?,
        last_error: get(r, "last_error")?,
        created_at: get(r, "created_at")?,
        updated_at: get(r, "updated_at")?,
        history_seq: get::<i64>(r, "history_seq")? as u64,
        entered: json_of(r, "entered")?,
    })
}

/// One instance; `lock` takes its row lock for the rest of the unit, which is what
/// serialises the units of one instance across nodes.
pub fn instance<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    lock: bool,
) -> Result<Option<InstanceRecord>, Error> {
    let sql = if lock {
        format!("SELECT {INSTANCE_COLS} FROM instances WHERE namespace = $1 AND id = $2 FOR UPDATE")
    } else {
        format!("SELECT {INSTANCE_COLS} FROM instances WHERE namespace = $1 AND id = $2")
    };
    db.opt(&sql, &[&ns, &id])?
        .as_ref()
        .map(instance_row)
        .transpose()
}

/// The instance locked for this unit, or None when it is missing or another unit holds it.
pub fn claim_instance<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
) -> Result<Option<InstanceRecord>, Error> {
    db.opt(
        &format!("SELECT {INSTANCE_COLS} FROM instances WHERE namespace = $1 AND id = $2 FOR UPDATE SKIP LOCKED"),
        &[&ns, &id],
    )?
    .as_ref()
    .map(instance_row)
    .transpose()
}

pub fn insert_instance<C: GenericClient>(db: &mut Db<C>, i: &InstanceRecord) -> Result<(), Error> {
    let r = db.exec(
        "INSERT INTO instances (namespace, id, machine, machine_version, status, configuration, context, version, labels, parent, last_error, created_at, updated_at, history_seq, entered) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &[
            &i.namespace,
            &i.id,
            &i.machine,
            &(i.machine_version as i32),
            &i.status.as_str(),
            &Json(&i.configuration),
            &i.context,
            &i64_of(i.version),
            &Json(&i.labels),
            &i.parent,
            &i.last_error,
            &i.created_at,
            &i.updated_at,
            &i64_of(i.history_seq),
            &Json(&i.entered),
        ],
    );
    unique(r, || {
        format!("instance `{}` exists in namespace `{}`", i.id, i.namespace)
    })?;
    for (k, v) in &i.labels {
        db.exec(
            "INSERT INTO instance_labels (namespace, instance_id, key, value) VALUES ($1, $2, $3, $4)",
            &[&i.namespace, &i.id, k, v],
        )?;
    }
    Ok(())
}

/// Held for the unit's next round trip; the statement checks the version itself.
pub fn update_instance<C: GenericClient>(
    db: &mut Db<C>,
    i: &InstanceRecord,
    expected: u64,
) -> Result<(), Error> {
    db.later(
        "WITH w AS (UPDATE instances SET machine_version = $3, status = $4, configuration = $5, context = $6, version = $7, last_error = $8, updated_at = $9, history_seq = $11, entered = $12 \
         WHERE namespace = $1 AND id = $2 AND version = $10 RETURNING 1) \
         SELECT cairn_expect_rows((SELECT count(*) FROM w), 1)",
        &[
            &i.namespace,
            &i.id,
            &(i.machine_version as i32),
            &i.status.as_str(),
            &Json(&i.configuration),
            &i.context,
            &i64_of(i.version),
            &i.last_error,
            &i.updated_at,
            &i64_of(expected),
            &i64_of(i.history_seq),
            &Json(&i.entered),
        ],
        Expect {
            conflict: None,
            miscount: Some(Error::Conflict(format!(
                "instance `{}` is not at version {expected}",
                i.id
            ))),
        },
    )
}

pub fn instances<C: GenericClient>(
    db: &mut Db<C>,
    f: &InstanceFilter,
) -> Result<Page<InstanceRecord>, Error> {
    let mut sql = format!("SELECT {INSTANCE_COLS} FROM instances i WHERE namespace = $1");
    let mut args: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(f.namespace.clone())];
    let mut arg = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync>| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(after) = &f.after {
        let seq: i64 = after
            .parse()
            .map_err(|_| Error::NotFound(format!("cursor `{after}` is not valid")))?;
        arg(&mut sql, " AND seq > ?", Box::new(seq));
    }
    if let Some(m) = &f.machine {
        arg(&mut sql, " AND machine = ?", Box::new(m.clone()));
    }
    if let Some(p) = &f.parent {
        arg(&mut sql, " AND parent = ?", Box::new(p.clone()));
    }
    if let Some(s) = f.status {
        arg(
            &mut sql,
            " AND status = ?",
            Box::new(s.as_str().to_string()),
        );
    }
    if let Some(state) = &f.state {
        // A state matches itself and its descendants.
        arg(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM json_array_elements_text(i.configuration) j WHERE j = ? OR starts_with(j, ? || '.'))",
            Box::new(state.clone()),
        );
    }
    for (k, v) in &f.labels {
        args.push(Box::new(k.clone()));
        args.push(Box::new(v.clone()));
        let n = args.len();
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM instance_labels l WHERE l.namespace = i.namespace AND l.instance_id = i.id AND l.key = ${} AND l.value = ${n})",
            n - 1
        ));
    }
    let limit = f.limit.clamp(1, 10_000);
    args.push(Box::new(limit as i64 + 1));
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
    let found = db.query(&sql, &params)?;
    let more = found.len() > limit;
    let mut items = Vec::new();
    let mut last = None;
    for r in found.iter().take(limit) {
        last = Some(get::<i64>(r, "seq")?);
        items.push(instance_row(r)?);
    }
    Ok(Page {
        items,
        next: if more {
            last.map(|s| s.to_string())
        } else {
            None
        },
    })
}

pub fn instance_ids<C: GenericClient>(
    db: &mut Db<C>,
    ns: Option<&str>,
) -> Result<Vec<(String, String)>, Error> {
    db.query(
        "SELECT namespace, id FROM instances WHERE $1::text IS NULL OR namespace = $1 ORDER BY seq",
        &[&ns],
    )?
    .iter()
    .map(|r| Ok((get(r, "namespace")?, get(r, "id")?)))
    .collect()
}

pub fn finished_before<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<String>, Error> {
    db.query(
        "SELECT id FROM instances WHERE namespace = $1 AND status IN ('completed', 'failed', 'cancelled') \
         AND updated_at < $2 ORDER BY updated_at, seq LIMIT $3",
        &[&ns, &before, &(limit as i64)],
    )?
    .iter()
    .map(|r| get(r, "id"))
    .collect()
}

pub fn delete_instance<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
) -> Result<bool, Error> {
    let existed = db.exec(
        "DELETE FROM instances WHERE namespace = $1 AND id = $2",
        &[&ns, &id],
    )? > 0;
    // Everything recorded of it, table by table (`Tx::delete_instance`'s contract).
    for table in [
        "instance_labels",
        "history",
        "idempotency",
        "timers",
        "approvals",
        "checkpoints",
        "inbox",
        "maps",
        "tasks",
        "task_attempts",
        "outbox",
    ] {
        db.exec(
            &format!("DELETE FROM {table} WHERE namespace = $1 AND instance_id = $2"),
            &[&ns, &id],
        )?;
    }
    db.exec(
        "DELETE FROM children WHERE namespace = $1 AND (parent_id = $2 OR child_id = $2)",
        &[&ns, &id],
    )?;
    Ok(existed)
}

pub(crate) const INBOX_COLS: &str = "namespace, instance_id, seq, event, payload, actor, reason, idempotency_key, created_at, token_id, on_behalf_of, addressed_to";

pub(crate) fn inbox_row(r: &Row) -> Result<InboxRecord, Error> {
    Ok(InboxRecord {
        namespace: get(r, "namespace")?,
        instance_id: get(r, "instance_id")?,
        seq: get::<i64>(r, "seq")? as u64,
        event: get(r, "event")?,
        payload: get(r, "payload")?,
        actor: get(r, "actor")?,
        reason: get(r, "reason")?,
        idempotency_key: get(r, "idempotency_key")?,
        created_at: get(r, "created_at")?,
        token_id: get(r, "token_id")?,
        on_behalf_of: get(r, "on_behalf_of")?,
        addressed_to: get(r, "addressed_to")?,
    })
}

pub fn push_inbox<C: GenericClient>(db: &mut Db<C>, e: &InboxRecord) -> Result<(), Error> {
    db.exec(
        &format!("INSERT INTO inbox ({INBOX_COLS}) VALUES ($1, $2, \
         (SELECT COALESCE(MAX(seq), 0) + 1 FROM inbox WHERE namespace = $1 AND instance_id = $2), $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
        &[&e.namespace, &e.instance_id, &e.event, &e.payload, &e.actor, &e.reason, &e.idempotency_key, &e.created_at, &e.token_id, &e.on_behalf_of, &e.addressed_to],
    )
    .map(|_| ())
}

pub fn inbox<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
) -> Result<Vec<InboxRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {INBOX_COLS} FROM inbox WHERE namespace = $1 AND instance_id = $2 ORDER BY seq"),
            &[&ns, &id],
        )?,
        inbox_row,
    )
}

pub fn take_inbox<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
) -> Result<Vec<InboxRecord>, Error> {
    let all = inbox(db, ns, id)?;
    db.exec(
        "DELETE FROM inbox WHERE namespace = $1 AND instance_id = $2",
        &[&ns, &id],
    )?;
    Ok(all)
}

pub fn inbox_key<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    key: &str,
) -> Result<Option<InboxRecord>, Error> {
    db.opt(
        &format!("SELECT {INBOX_COLS} FROM inbox WHERE namespace = $1 AND instance_id = $2 AND idempotency_key = $3 ORDER BY seq LIMIT 1"),
        &[&ns, &id, &key],
    )?
    .as_ref()
    .map(inbox_row)
    .transpose()
}

pub fn insert_child<C: GenericClient>(db: &mut Db<C>, c: &ChildRecord) -> Result<(), Error> {
    db.exec(
        "INSERT INTO children (namespace, parent_id, child_id, state, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[&c.namespace, &c.parent_id, &c.child_id, &c.state, &c.created_at],
    )
    .map(|_| ())
}

pub fn children<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    parent: &str,
) -> Result<Vec<ChildRecord>, Error> {
    db.query(
        "SELECT child_id, state, created_at FROM children WHERE namespace = $1 AND parent_id = $2 ORDER BY created_at, child_id",
        &[&ns, &parent],
    )?
    .iter()
    .map(|r| {
        Ok(ChildRecord {
            namespace: ns.to_string(),
            parent_id: parent.to_string(),
            child_id: get(r, "child_id")?,
            state: get(r, "state")?,
            created_at: get(r, "created_at")?,
        })
    })
    .collect()
}

pub fn put_map<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    state: &str,
    progress: &Value,
) -> Result<(), Error> {
    db.exec(
        "INSERT INTO maps (namespace, instance_id, state, progress) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (namespace, instance_id, state) DO UPDATE SET progress = excluded.progress",
        &[&ns, &id, &state, progress],
    )
    .map(|_| ())
}

pub fn map_progress<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    state: &str,
) -> Result<Option<Value>, Error> {
    db.opt(
        "SELECT progress FROM maps WHERE namespace = $1 AND instance_id = $2 AND state = $3",
        &[&ns, &id, &state],
    )?
    .map(|r| get(&r, "progress"))
    .transpose()
}

pub fn maps_of<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
) -> Result<Vec<(String, Value)>, Error> {
    db.query(
        "SELECT state, progress FROM maps WHERE namespace = $1 AND instance_id = $2 ORDER BY state",
        &[&ns, &id],
    )?
    .iter()
    .map(|r| Ok((get(r, "state")?, get(r, "progress")?)))
    .collect()
}

pub fn delete_map<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    state: &str,
) -> Result<bool, Error> {
    Ok(db.exec(
        "DELETE FROM maps WHERE namespace = $1 AND instance_id = $2 AND state = $3",
        &[&ns, &id, &state],
    )? > 0)
}
