//! SQL for every record, written once for units of work (on a `Transaction`) and for
//! reads (on a pooled `Client`): each function takes a [`Db`], a connection with its cache
//! of prepared statements.

use std::collections::{BTreeMap, HashMap};

use cairn_core::Status;
use cairn_store::{
    ApprovalRecord, ApprovalStatus, AttemptRecord, CheckpointRecord, ChildRecord, Error, Figure,
    HistoryKind, HistoryRecord, IdempotencyRecord, InboxRecord, InstanceFilter, InstanceRecord,
    LogEntry, MachineRecord, NewLogEntry, OutboxRecord, Page, ScheduleRecord, TaskRecord,
    TaskStatus, TimerRecord, TokenRecord, TriggerRecord,
};
use chrono::{DateTime, Utc};
use postgres::types::{FromSql, Json, ToSql};
use postgres::{GenericClient, Row, Statement};
use serde_json::Value;

use crate::db_err;

/// Prepared statements of one connection, by SQL text.
pub(crate) type Stmts = HashMap<String, Statement>;

/// A connection (or a transaction on one) and its prepared statements.
pub(crate) struct Db<'a, C: GenericClient> {
    pub c: &'a mut C,
    pub stmts: &'a mut Stmts,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Db<'_, C> {
    fn stmt(&mut self, sql: &str) -> Result<Statement, Error> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.c.prepare(sql).map_err(db_err)?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub fn query(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<Row>, Error> {
        let s = self.stmt(sql)?;
        self.c.query(&s, p).map_err(db_err)
    }

    pub fn opt(&mut self, sql: &str, p: Params<'_>) -> Result<Option<Row>, Error> {
        Ok(self.query(sql, p)?.into_iter().next())
    }

    pub fn exec(&mut self, sql: &str, p: Params<'_>) -> Result<u64, Error> {
        let s = self.stmt(sql)?;
        self.c.execute(&s, p).map_err(db_err)
    }
}

pub(crate) fn get<'a, T: FromSql<'a>>(r: &'a Row, col: &str) -> Result<T, Error> {
    r.try_get(col)
        .map_err(|e| Error::Corrupt(format!("column `{col}`: {e}")))
}

fn json_of<T: serde::de::DeserializeOwned>(r: &Row, col: &str) -> Result<T, Error> {
    get::<Json<T>>(r, col).map(|j| j.0)
}

fn status(s: &str) -> Result<Status, Error> {
    Status::parse(s).ok_or_else(|| Error::Corrupt(format!("bad status `{s}`")))
}

fn rows<T>(rs: Vec<Row>, f: fn(&Row) -> Result<T, Error>) -> Result<Vec<T>, Error> {
    rs.iter().map(f).collect()
}

/// Turns a unique violation into a conflict naming the record.
fn unique<T>(r: Result<T, Error>, what: impl FnOnce() -> String) -> Result<T, Error> {
    match r {
        Err(Error::Conflict(_)) => Err(Error::Conflict(what())),
        other => other,
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// Machines

// The definition is read as text and parsed here: one that cannot be read back (stored
// by an older Cairn, too deep for the JSON reader) comes back null, so the row can still
// be listed, reported and deleted (see `Tx::machine`).
const MACHINE_COLS: &str =
    "namespace, name, version, digest, definition::text AS definition, created_at";
const MACHINE_INSERT_COLS: &str = "namespace, name, version, digest, definition, created_at";

fn machine_row(r: &Row) -> Result<MachineRecord, Error> {
    let text: String = get(r, "definition")?;
    Ok(MachineRecord {
        namespace: get(r, "namespace")?,
        name: get(r, "name")?,
        version: get::<i32>(r, "version")? as u32,
        digest: get(r, "digest")?,
        definition: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        created_at: get(r, "created_at")?,
    })
}

pub fn unreadable_machines<C: GenericClient>(db: &mut Db<C>) -> Result<Vec<MachineRecord>, Error> {
    let all = rows(
        db.query(
            &format!("SELECT {MACHINE_COLS} FROM machines WHERE deleted_at IS NULL ORDER BY namespace, name, version"),
            &[],
        )?,
        machine_row,
    )?;
    Ok(all.into_iter().filter(|m| m.definition.is_null()).collect())
}

pub fn max_machine_version<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    name: &str,
) -> Result<Option<u32>, Error> {
    let row = db.opt(
        "SELECT MAX(version) AS v FROM machines WHERE namespace = $1 AND name = $2",
        &[&ns, &name],
    )?;
    Ok(match row {
        Some(r) => get::<Option<i32>>(&r, "v")?.map(|v| v as u32),
        None => None,
    })
}

pub fn delete_machine<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    name: &str,
    version: u32,
    at: DateTime<Utc>,
) -> Result<bool, Error> {
    Ok(db.exec(
        "UPDATE machines SET definition = '{}', deleted_at = $4 \
         WHERE namespace = $1 AND name = $2 AND version = $3 AND deleted_at IS NULL",
        &[&ns, &name, &(version as i32), &at],
    )? > 0)
}

pub fn machine_in_use<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    name: &str,
    version: u32,
) -> Result<u64, Error> {
    let row = db.opt(
        "SELECT COUNT(*) AS n FROM instances WHERE namespace = $1 AND machine = $2 AND machine_version = $3",
        &[&ns, &name, &(version as i32)],
    )?;
    Ok(row.map(|r| get::<i64>(&r, "n")).transpose()?.unwrap_or(0) as u64)
}

pub fn machine<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    name: &str,
    version: Option<u32>,
) -> Result<Option<MachineRecord>, Error> {
    let row = match version {
        Some(v) => db.opt(
            &format!("SELECT {MACHINE_COLS} FROM machines WHERE namespace = $1 AND name = $2 AND version = $3 AND deleted_at IS NULL"),
            &[&ns, &name, &(v as i32)],
        )?,
        None => db.opt(
            &format!("SELECT {MACHINE_COLS} FROM machines WHERE namespace = $1 AND name = $2 AND deleted_at IS NULL ORDER BY version DESC LIMIT 1"),
            &[&ns, &name],
        )?,
    };
    row.as_ref().map(machine_row).transpose()
}

pub fn machines<C: GenericClient>(db: &mut Db<C>, ns: &str) -> Result<Vec<MachineRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT DISTINCT ON (name) {MACHINE_COLS} FROM machines WHERE namespace = $1 AND deleted_at IS NULL ORDER BY name, version DESC"),
            &[&ns],
        )?,
        machine_row,
    )
}

pub fn insert_machine<C: GenericClient>(db: &mut Db<C>, m: &MachineRecord) -> Result<(), Error> {
    let r = db.exec(
        &format!("INSERT INTO machines ({MACHINE_INSERT_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[
            &m.namespace,
            &m.name,
            &(m.version as i32),
            &m.digest,
            &m.definition,
            &m.created_at,
        ],
    );
    unique(r, || {
        format!("machine `{}` version {} exists", m.name, m.version)
    })
    .map(|_| ())
}

// Instances

const INSTANCE_COLS: &str = "seq, namespace, id, machine, machine_version, status, configuration, context, version, labels, parent, last_error, created_at, updated_at, history_seq, entered";

fn instance_row(r: &Row) -> Result<InstanceRecord, Error> {
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

pub fn update_instance<C: GenericClient>(
    db: &mut Db<C>,
    i: &InstanceRecord,
    expected: u64,
) -> Result<(), Error> {
    let n = db.exec(
        "UPDATE instances SET machine_version = $3, status = $4, configuration = $5, context = $6, version = $7, last_error = $8, updated_at = $9, history_seq = $11, entered = $12 \
         WHERE namespace = $1 AND id = $2 AND version = $10",
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
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "instance `{}` is not at version {expected}",
            i.id
        )))
    }
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

pub fn add_figure<C: GenericClient>(db: &mut Db<C>, f: &Figure) -> Result<(), Error> {
    db.exec(
        "INSERT INTO figure_deltas (namespace, kind, name, detail, value) VALUES ($1, $2, $3, $4, $5)",
        &[&f.namespace, &f.kind, &f.name, &f.detail, &f.value],
    )?;
    Ok(())
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

pub fn timers_due<C: GenericClient>(
    db: &mut Db<C>,
    now: DateTime<Utc>,
    cap: usize,
) -> Result<Vec<(String, u64)>, Error> {
    db.query(
        "SELECT namespace, count(*)::bigint AS n FROM (SELECT namespace FROM timers WHERE due_at <= $1 LIMIT $2) t \
         GROUP BY namespace ORDER BY namespace",
        &[&now, &(cap.min(i64::MAX as usize) as i64)],
    )?
    .iter()
    .map(|r| Ok((get(r, "namespace")?, get::<i64>(r, "n")? as u64)))
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

// History

const HISTORY_COLS: &str = "namespace, instance_id, seq, kind, version, event, payload, actor, reason, from_configuration, to_configuration, context, status, idempotency_key, microsteps, effects, time_in_states_ms, created_at, token_id, on_behalf_of";

fn history_row(r: &Row) -> Result<HistoryRecord, Error> {
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
    })
}

pub fn append_history<C: GenericClient>(db: &mut Db<C>, h: &HistoryRecord) -> Result<(), Error> {
    let r = db.exec(
        &format!("INSERT INTO history ({HISTORY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"),
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
        ],
    );
    unique(r, || {
        format!(
            "history of `{}` already has seq {} or version {}",
            h.instance_id, h.seq, h.version
        )
    })
    .map(|_| ())
}

pub fn replace_history<C: GenericClient>(db: &mut Db<C>, h: &HistoryRecord) -> Result<(), Error> {
    let n = db.exec(
        "UPDATE history SET kind = $4, version = $5, event = $6, payload = $7, actor = $8, reason = $9, from_configuration = $10, \
         to_configuration = $11, context = $12, status = $13, idempotency_key = $14, microsteps = $15, effects = $16, time_in_states_ms = $17, created_at = $18, \
         token_id = $19, on_behalf_of = $20 WHERE namespace = $1 AND instance_id = $2 AND seq = $3",
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

// Idempotency keys

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

pub fn insert_idempotency<C: GenericClient>(
    db: &mut Db<C>,
    r: &IdempotencyRecord,
) -> Result<(), Error> {
    let res = db.exec(
        "INSERT INTO idempotency (namespace, instance_id, key, fingerprint, version, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&r.namespace, &r.instance_id, &r.key, &r.fingerprint, &i64_of(r.version), &r.created_at],
    );
    unique(res, || format!("idempotency key `{}` exists", r.key)).map(|_| ())
}

// The log

/// Appends the unit's `index`-th entry; its position is the transaction's id shifted left
/// 20 bits, plus `index` (see `log`).
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

// Timers

const TIMER_COLS: &str = "namespace, instance_id, event, state, due_at, created_at";

fn timer_row(r: &Row) -> Result<TimerRecord, Error> {
    Ok(TimerRecord {
        namespace: get(r, "namespace")?,
        instance_id: get(r, "instance_id")?,
        event: get(r, "event")?,
        state: get(r, "state")?,
        due_at: get(r, "due_at")?,
        created_at: get(r, "created_at")?,
    })
}

pub fn set_timer<C: GenericClient>(db: &mut Db<C>, t: &TimerRecord) -> Result<(), Error> {
    db.exec(
        &format!("INSERT INTO timers ({TIMER_COLS}) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (namespace, instance_id, event) DO UPDATE SET state = excluded.state, due_at = excluded.due_at, created_at = excluded.created_at"),
        &[&t.namespace, &t.instance_id, &t.event, &t.state, &t.due_at, &t.created_at],
    )
    .map(|_| ())
}

pub fn timer<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    event: &str,
) -> Result<Option<TimerRecord>, Error> {
    db.opt(
        &format!("SELECT {TIMER_COLS} FROM timers WHERE namespace = $1 AND instance_id = $2 AND event = $3"),
        &[&ns, &id, &event],
    )?
    .as_ref()
    .map(timer_row)
    .transpose()
}

pub fn delete_timer<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    event: &str,
) -> Result<bool, Error> {
    Ok(db.exec(
        "DELETE FROM timers WHERE namespace = $1 AND instance_id = $2 AND event = $3",
        &[&ns, &id, &event],
    )? > 0)
}

pub fn delete_timers<C: GenericClient>(db: &mut Db<C>, ns: &str, id: &str) -> Result<(), Error> {
    db.exec(
        "DELETE FROM timers WHERE namespace = $1 AND instance_id = $2",
        &[&ns, &id],
    )
    .map(|_| ())
}

pub fn due_timers_of<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<TimerRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {TIMER_COLS} FROM timers WHERE namespace = $1 AND instance_id = $2 AND due_at <= $3 ORDER BY due_at, event"),
            &[&ns, &id, &now],
        )?,
        timer_row,
    )
}

pub fn due_timers<C: GenericClient>(
    db: &mut Db<C>,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<TimerRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {TIMER_COLS} FROM timers WHERE due_at <= $1 ORDER BY due_at, namespace, instance_id, event LIMIT $2"),
            &[&now, &(limit as i64)],
        )?,
        timer_row,
    )
}

pub fn timers<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
) -> Result<Vec<TimerRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {TIMER_COLS} FROM timers WHERE namespace = $1 AND instance_id = $2 ORDER BY due_at, event"),
            &[&ns, &id],
        )?,
        timer_row,
    )
}

// Approvals

const APPROVAL_COLS: &str = "id, namespace, instance_id, state, prompt, approvers, quorum, status, decisions, created_at, decided_at, decided_by, reason";

fn approval_row(r: &Row) -> Result<ApprovalRecord, Error> {
    let st: &str = get(r, "status")?;
    Ok(ApprovalRecord {
        id: get(r, "id")?,
        namespace: get(r, "namespace")?,
        instance_id: get(r, "instance_id")?,
        state: get(r, "state")?,
        prompt: get(r, "prompt")?,
        approvers: json_of(r, "approvers")?,
        quorum: get::<i32>(r, "quorum")? as u32,
        status: ApprovalStatus::parse(st)
            .ok_or_else(|| Error::Corrupt(format!("bad approval status `{st}`")))?,
        decisions: json_of(r, "decisions")?,
        created_at: get(r, "created_at")?,
        decided_at: get(r, "decided_at")?,
        decided_by: get(r, "decided_by")?,
        reason: get(r, "reason")?,
    })
}

pub fn insert_approval<C: GenericClient>(db: &mut Db<C>, a: &ApprovalRecord) -> Result<(), Error> {
    let r = db.exec(
        &format!("INSERT INTO approvals ({APPROVAL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"),
        &[
            &a.id,
            &a.namespace,
            &a.instance_id,
            &a.state,
            &a.prompt,
            &Json(&a.approvers),
            &(a.quorum as i32),
            &a.status.as_str(),
            &Json(&a.decisions),
            &a.created_at,
            &a.decided_at,
            &a.decided_by,
            &a.reason,
        ],
    );
    unique(r, || format!("approval `{}` exists", a.id)).map(|_| ())
}

pub fn update_approval<C: GenericClient>(db: &mut Db<C>, a: &ApprovalRecord) -> Result<(), Error> {
    let n = db.exec(
        "UPDATE approvals SET status = $2, decisions = $3, decided_at = $4, decided_by = $5, reason = $6 WHERE id = $1",
        &[&a.id, &a.status.as_str(), &Json(&a.decisions), &a.decided_at, &a.decided_by, &a.reason],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::NotFound(format!("approval `{}`", a.id)))
    }
}

pub fn approval<C: GenericClient>(
    db: &mut Db<C>,
    id: &str,
) -> Result<Option<ApprovalRecord>, Error> {
    db.opt(
        &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(approval_row)
    .transpose()
}

pub fn approvals<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    st: Option<ApprovalStatus>,
    id: Option<&str>,
) -> Result<Vec<ApprovalRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE namespace = $1 AND ($2::text IS NULL OR status = $2) \
             AND ($3::text IS NULL OR instance_id = $3) ORDER BY created_at, id"),
            &[&ns, &st.map(|s| s.as_str()), &id],
        )?,
        approval_row,
    )
}

// Checkpoints

const CHECKPOINT_COLS: &str =
    "namespace, instance_id, name, seq, version, configuration, context, status, created_at";

fn checkpoint_row(r: &Row) -> Result<CheckpointRecord, Error> {
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

// The inbox of paused instances

const INBOX_COLS: &str = "namespace, instance_id, seq, event, payload, actor, reason, idempotency_key, created_at, token_id, on_behalf_of";

fn inbox_row(r: &Row) -> Result<InboxRecord, Error> {
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
    })
}

pub fn push_inbox<C: GenericClient>(db: &mut Db<C>, e: &InboxRecord) -> Result<(), Error> {
    db.exec(
        &format!("INSERT INTO inbox ({INBOX_COLS}) VALUES ($1, $2, \
         (SELECT COALESCE(MAX(seq), 0) + 1 FROM inbox WHERE namespace = $1 AND instance_id = $2), $3, $4, $5, $6, $7, $8, $9, $10)"),
        &[&e.namespace, &e.instance_id, &e.event, &e.payload, &e.actor, &e.reason, &e.idempotency_key, &e.created_at, &e.token_id, &e.on_behalf_of],
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

// Tasks

const TASK_COLS: &str = "t.id, t.namespace, t.instance_id, t.state, t.queue, t.action, t.input, t.status, t.attempt, t.retry, t.timeout_ms, t.heartbeat_ms, \
     t.available_at, t.lease_owner, t.lease_expires_at, t.output, t.error, t.created_at, t.updated_at";

fn task_row(r: &Row) -> Result<TaskRecord, Error> {
    let st: &str = get(r, "status")?;
    Ok(TaskRecord {
        id: get(r, "id")?,
        namespace: get(r, "namespace")?,
        instance_id: get(r, "instance_id")?,
        state: get(r, "state")?,
        queue: get(r, "queue")?,
        action: get(r, "action")?,
        input: get(r, "input")?,
        status: TaskStatus::parse(st)
            .ok_or_else(|| Error::Corrupt(format!("bad task status `{st}`")))?,
        attempt: get::<i32>(r, "attempt")? as u32,
        retry: get(r, "retry")?,
        timeout_ms: get::<Option<i64>>(r, "timeout_ms")?.map(|v| v as u64),
        heartbeat_ms: get::<Option<i64>>(r, "heartbeat_ms")?.map(|v| v as u64),
        available_at: get(r, "available_at")?,
        lease_owner: get(r, "lease_owner")?,
        lease_expires_at: get(r, "lease_expires_at")?,
        output: get(r, "output")?,
        error: get(r, "error")?,
        created_at: get(r, "created_at")?,
        updated_at: get(r, "updated_at")?,
    })
}

pub fn insert_task<C: GenericClient>(db: &mut Db<C>, t: &TaskRecord) -> Result<(), Error> {
    let r = db.exec(
        "INSERT INTO tasks (id, namespace, instance_id, state, queue, action, input, status, attempt, retry, timeout_ms, heartbeat_ms, \
         available_at, lease_owner, lease_expires_at, output, error, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        &[
            &t.id,
            &t.namespace,
            &t.instance_id,
            &t.state,
            &t.queue,
            &t.action,
            &t.input,
            &t.status.as_str(),
            &(t.attempt as i32),
            &t.retry,
            &t.timeout_ms.map(i64_of),
            &t.heartbeat_ms.map(i64_of),
            &t.available_at,
            &t.lease_owner,
            &t.lease_expires_at,
            &t.output,
            &t.error,
            &t.created_at,
            &t.updated_at,
        ],
    );
    unique(r, || format!("task `{}` exists", t.id)).map(|_| ())
}

pub fn update_task<C: GenericClient>(db: &mut Db<C>, t: &TaskRecord) -> Result<(), Error> {
    let n = db.exec(
        "UPDATE tasks SET status = $2, attempt = $3, available_at = $4, lease_owner = $5, lease_expires_at = $6, \
         output = $7, error = $8, updated_at = $9 WHERE id = $1",
        &[
            &t.id,
            &t.status.as_str(),
            &(t.attempt as i32),
            &t.available_at,
            &t.lease_owner,
            &t.lease_expires_at,
            &t.output,
            &t.error,
            &t.updated_at,
        ],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::NotFound(format!("task `{}`", t.id)))
    }
}

pub fn task<C: GenericClient>(db: &mut Db<C>, id: &str) -> Result<Option<TaskRecord>, Error> {
    db.opt(
        &format!("SELECT {TASK_COLS} FROM tasks t WHERE t.id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(task_row)
    .transpose()
}

pub fn open_tasks<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    id: &str,
) -> Result<Vec<TaskRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {TASK_COLS} FROM tasks t WHERE t.namespace = $1 AND t.instance_id = $2 AND t.status IN ('pending', 'leased') ORDER BY t.created_at, t.id"),
            &[&ns, &id],
        )?,
        task_row,
    )
}

/// Pending tasks due by `now`. In a unit (`lock`), each is returned with its row and its
/// instance's row locked, skipping those another node holds: two nodes never claim one
/// task, and a claim never waits for an instance that a unit holding it would then wait
/// for (no deadlock between claims and the instance's own units).
pub fn claimable<C: GenericClient>(
    db: &mut Db<C>,
    queues: &[String],
    namespaces: Option<&[String]>,
    now: DateTime<Utc>,
    limit: usize,
    lock: bool,
) -> Result<Vec<TaskRecord>, Error> {
    if queues.is_empty() || namespaces.is_some_and(|n| n.is_empty()) {
        return Ok(Vec::new());
    }
    let tail = if lock {
        " FOR UPDATE OF t, i SKIP LOCKED"
    } else {
        ""
    };
    let ns: Option<Vec<String>> = namespaces.map(|n| n.to_vec());
    rows(
        db.query(
            &format!("SELECT {TASK_COLS} FROM tasks t JOIN instances i ON i.namespace = t.namespace AND i.id = t.instance_id \
             WHERE t.queue = ANY($1) AND t.status = 'pending' AND t.available_at <= $2 AND ($3::text[] IS NULL OR t.namespace = ANY($3)) \
             ORDER BY t.available_at, t.id LIMIT $4{tail}"),
            &[&queues, &now, &ns, &(limit as i64)],
        )?,
        task_row,
    )
}

/// Leased tasks whose lease expired, locked like [`claimable`] in a unit.
pub fn expired<C: GenericClient>(
    db: &mut Db<C>,
    now: DateTime<Utc>,
    limit: usize,
    lock: bool,
) -> Result<Vec<TaskRecord>, Error> {
    let tail = if lock {
        " FOR UPDATE OF t, i SKIP LOCKED"
    } else {
        ""
    };
    rows(
        db.query(
            &format!("SELECT {TASK_COLS} FROM tasks t JOIN instances i ON i.namespace = t.namespace AND i.id = t.instance_id \
             WHERE t.status = 'leased' AND t.lease_expires_at < $1 ORDER BY t.lease_expires_at, t.id LIMIT $2{tail}"),
            &[&now, &(limit as i64)],
        )?,
        task_row,
    )
}

pub fn tasks<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    queue: Option<&str>,
    st: Option<TaskStatus>,
    id: Option<&str>,
) -> Result<Vec<TaskRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {TASK_COLS} FROM tasks t WHERE t.namespace = $1 AND ($2::text IS NULL OR t.queue = $2) AND ($3::text IS NULL OR t.status = $3) \
             AND ($4::text IS NULL OR t.instance_id = $4) ORDER BY t.created_at, t.id"),
            &[&ns, &queue, &st.map(|s| s.as_str()), &id],
        )?,
        task_row,
    )
}

pub fn put_attempt<C: GenericClient>(db: &mut Db<C>, a: &AttemptRecord) -> Result<(), Error> {
    db.exec(
        "INSERT INTO task_attempts (task_id, attempt, namespace, instance_id, worker, started_at, ended_at, outcome, error, tokens, cost) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (task_id, attempt) DO UPDATE SET namespace = excluded.namespace, instance_id = excluded.instance_id, worker = excluded.worker, \
         started_at = excluded.started_at, ended_at = excluded.ended_at, outcome = excluded.outcome, error = excluded.error, tokens = excluded.tokens, cost = excluded.cost",
        &[
            &a.task_id,
            &(a.attempt as i32),
            &a.namespace,
            &a.instance_id,
            &a.worker,
            &a.started_at,
            &a.ended_at,
            &a.outcome,
            &a.error,
            &a.tokens,
            &a.cost,
        ],
    )
    .map(|_| ())
}

pub fn attempts<C: GenericClient>(
    db: &mut Db<C>,
    task_id: &str,
) -> Result<Vec<AttemptRecord>, Error> {
    db.query(
        "SELECT task_id, attempt, namespace, instance_id, worker, started_at, ended_at, outcome, error, tokens, cost \
         FROM task_attempts WHERE task_id = $1 ORDER BY attempt",
        &[&task_id],
    )?
    .iter()
    .map(|r| {
        Ok(AttemptRecord {
            task_id: get(r, "task_id")?,
            attempt: get::<i32>(r, "attempt")? as u32,
            namespace: get(r, "namespace")?,
            instance_id: get(r, "instance_id")?,
            worker: get(r, "worker")?,
            started_at: get(r, "started_at")?,
            ended_at: get(r, "ended_at")?,
            outcome: get(r, "outcome")?,
            error: get(r, "error")?,
            tokens: get(r, "tokens")?,
            cost: get(r, "cost")?,
        })
    })
    .collect()
}

// Tokens

fn token_row(r: &Row) -> Result<TokenRecord, Error> {
    Ok(TokenRecord {
        id: get(r, "id")?,
        name: get(r, "name")?,
        hash: get(r, "hash")?,
        role: get(r, "role")?,
        namespaces: json_of(r, "namespaces")?,
        created_at: get(r, "created_at")?,
        revoked_at: get(r, "revoked_at")?,
        subject: get(r, "subject")?,
    })
}

pub fn insert_token<C: GenericClient>(db: &mut Db<C>, t: &TokenRecord) -> Result<(), Error> {
    let r = db.exec(
        "INSERT INTO tokens (id, name, hash, role, namespaces, created_at, revoked_at, subject) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&t.id, &t.name, &t.hash, &t.role, &Json(&t.namespaces), &t.created_at, &t.revoked_at, &t.subject],
    );
    unique(r, || format!("token `{}` exists", t.id)).map(|_| ())
}

pub fn revoke_token<C: GenericClient>(
    db: &mut Db<C>,
    id: &str,
    at: DateTime<Utc>,
) -> Result<bool, Error> {
    Ok(db.exec(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        &[&id, &at],
    )? > 0)
}

pub fn token_by_hash<C: GenericClient>(
    db: &mut Db<C>,
    hash: &str,
) -> Result<Option<TokenRecord>, Error> {
    db.opt(
        "SELECT id, name, hash, role, namespaces, created_at, revoked_at, subject FROM tokens WHERE hash = $1",
        &[&hash],
    )?
    .as_ref()
    .map(token_row)
    .transpose()
}

pub fn tokens<C: GenericClient>(db: &mut Db<C>) -> Result<Vec<TokenRecord>, Error> {
    rows(
        db.query(
            "SELECT id, name, hash, role, namespaces, created_at, revoked_at, subject FROM tokens ORDER BY created_at, id",
            &[],
        )?,
        token_row,
    )
}

// Children, the outbox, maps

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

// Triggers and schedules

pub fn insert_trigger<C: GenericClient>(db: &mut Db<C>, t: &TriggerRecord) -> Result<(), Error> {
    let r = db.exec(
        "INSERT INTO triggers (namespace, name, machine, definition, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[&t.namespace, &t.name, &t.machine, &t.definition, &t.created_at],
    );
    unique(r, || format!("trigger `{}` exists", t.name)).map(|_| ())
}

pub fn delete_trigger<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    name: &str,
) -> Result<bool, Error> {
    Ok(db.exec(
        "DELETE FROM triggers WHERE namespace = $1 AND name = $2",
        &[&ns, &name],
    )? > 0)
}

pub fn triggers<C: GenericClient>(db: &mut Db<C>, ns: &str) -> Result<Vec<TriggerRecord>, Error> {
    db.query(
        "SELECT name, machine, definition, created_at FROM triggers WHERE namespace = $1 ORDER BY name",
        &[&ns],
    )?
    .iter()
    .map(|r| {
        Ok(TriggerRecord {
            namespace: ns.to_string(),
            name: get(r, "name")?,
            machine: get(r, "machine")?,
            definition: get(r, "definition")?,
            created_at: get(r, "created_at")?,
        })
    })
    .collect()
}

fn schedule_row(r: &Row) -> Result<ScheduleRecord, Error> {
    Ok(ScheduleRecord {
        namespace: get(r, "namespace")?,
        name: get(r, "name")?,
        definition: get(r, "definition")?,
        next_at: get(r, "next_at")?,
        last_at: get(r, "last_at")?,
        created_at: get(r, "created_at")?,
    })
}

pub fn insert_schedule<C: GenericClient>(db: &mut Db<C>, s: &ScheduleRecord) -> Result<(), Error> {
    let r = db.exec(
        "INSERT INTO schedules (namespace, name, definition, next_at, last_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&s.namespace, &s.name, &s.definition, &s.next_at, &s.last_at, &s.created_at],
    );
    unique(r, || format!("schedule `{}` exists", s.name)).map(|_| ())
}

pub fn delete_schedule<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    name: &str,
) -> Result<bool, Error> {
    Ok(db.exec(
        "DELETE FROM schedules WHERE namespace = $1 AND name = $2",
        &[&ns, &name],
    )? > 0)
}

/// Schedules due by `now`, earliest first; in a unit, locked and skipping those another
/// node is ticking, so a tick runs once across nodes.
pub fn due_schedules<C: GenericClient>(
    db: &mut Db<C>,
    now: DateTime<Utc>,
    limit: usize,
    lock: bool,
) -> Result<Vec<ScheduleRecord>, Error> {
    let tail = if lock { " FOR UPDATE SKIP LOCKED" } else { "" };
    rows(
        db.query(
            &format!("SELECT namespace, name, definition, next_at, last_at, created_at FROM schedules WHERE next_at <= $1 \
             ORDER BY next_at, namespace, name LIMIT $2{tail}"),
            &[&now, &(limit as i64)],
        )?,
        schedule_row,
    )
}

pub fn schedules<C: GenericClient>(db: &mut Db<C>, ns: &str) -> Result<Vec<ScheduleRecord>, Error> {
    rows(
        db.query(
            "SELECT namespace, name, definition, next_at, last_at, created_at FROM schedules WHERE namespace = $1 ORDER BY name",
            &[&ns],
        )?,
        schedule_row,
    )
}

pub fn update_schedule<C: GenericClient>(db: &mut Db<C>, s: &ScheduleRecord) -> Result<(), Error> {
    let n = db.exec(
        "UPDATE schedules SET next_at = $3, last_at = $4 WHERE namespace = $1 AND name = $2",
        &[&s.namespace, &s.name, &s.next_at, &s.last_at],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::NotFound(format!("schedule `{}`", s.name)))
    }
}
