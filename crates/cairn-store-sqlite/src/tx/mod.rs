//! SQL for every record: row functions shared by the writer's [`SqlTx`] and the reader
//! pool, with all statements prepared once per connection (`prepare_cached`).

use std::collections::BTreeMap;

use cairn_core::Status;
use cairn_store::{
    ApprovalRecord, CheckpointRecord, Error, HistoryKind, HistoryRecord, IdempotencyRecord,
    InboxRecord, InstanceFilter, InstanceRecord, LogEntry, MachineRecord, NewLogEntry, Page,
    TimerRecord,
};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::db_err;
use crate::lifecycle as lc;

mod approvals;
mod definitions;
mod history;
mod instances;
mod outbox;
mod tasks;
mod timers;
mod tokens;

/// The writer's view of one unit of work.
pub struct SqlTx<'c> {
    pub(crate) conn: &'c Connection,
    /// The unit's additions to figures ([`Tx::add_figure`]), summed over the units of a
    /// group commit and written once, before it commits (see `run_batch`): the units of
    /// one commit mostly add to the same few figures.
    pub(crate) figures: Vec<cairn_store::Figure>,
    /// How many figures the unit had added when its open part began.
    part: Option<usize>,
}

impl<'c> SqlTx<'c> {
    pub fn new(conn: &'c Connection) -> SqlTx<'c> {
        SqlTx {
            conn,
            figures: Vec::new(),
            part: None,
        }
    }

    fn run(&self, sql: &str) -> Result<(), Error> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
            .map_err(db_err)
    }
}

/// A part is a savepoint inside the unit's own (`unit`, see `run_batch`).
impl cairn_store::PartsTx for SqlTx<'_> {
    fn begin_part(&mut self) -> Result<(), Error> {
        if self.part.is_some() {
            return Err(Error::Database("a part is already open".into()));
        }
        self.run("SAVEPOINT part")?;
        self.part = Some(self.figures.len());
        Ok(())
    }
    fn keep_part(&mut self) -> Result<(), Error> {
        if self.part.take().is_some() {
            self.run("RELEASE part")?;
        }
        Ok(())
    }
    fn undo_part(&mut self) -> Result<(), Error> {
        if let Some(n) = self.part.take() {
            self.figures.truncate(n);
            self.run("ROLLBACK TO part")?;
            self.run("RELEASE part")?;
        }
        Ok(())
    }
}

pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| Error::Corrupt(format!("bad timestamp `{s}`: {e}")))
}

pub(crate) fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("records serialise")
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("bad {what}: {e}")))
}

pub(crate) fn status(s: &str) -> Result<Status, Error> {
    Status::parse(s).ok_or_else(|| Error::Corrupt(format!("bad status `{s}`")))
}

/// Reads every column as text/integer first (driver errors), then decodes (our errors).
fn machine_row(r: &Row<'_>) -> rusqlite::Result<[SqlValue; 6]> {
    Ok([
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ])
}

/// The first `n` columns of a row.
pub(crate) fn row(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Vec<SqlValue>> {
    (0..n).map(|i| r.get(i)).collect()
}

pub(crate) fn text(v: &SqlValue) -> Result<&str, Error> {
    match v {
        SqlValue::Text(s) => Ok(s),
        other => Err(Error::Corrupt(format!("expected text, found {other:?}"))),
    }
}

pub(crate) fn int(v: &SqlValue) -> Result<i64, Error> {
    match v {
        SqlValue::Integer(i) => Ok(*i),
        other => Err(Error::Corrupt(format!(
            "expected an integer, found {other:?}"
        ))),
    }
}

pub(crate) fn opt_text(v: &SqlValue) -> Result<Option<String>, Error> {
    match v {
        SqlValue::Null => Ok(None),
        other => text(other).map(|s| Some(s.to_string())),
    }
}

/// A machine row; a definition that cannot be read back (stored by an older Cairn, too
/// deep for the JSON reader) comes back null, so the row can still be listed, reported
/// and deleted (see `Tx::machine`).
fn decode_machine(v: [SqlValue; 6]) -> Result<MachineRecord, Error> {
    Ok(MachineRecord {
        namespace: text(&v[0])?.to_string(),
        name: text(&v[1])?.to_string(),
        version: int(&v[2])? as u32,
        digest: text(&v[3])?.to_string(),
        definition: parse_json(text(&v[4])?, "definition").unwrap_or(serde_json::Value::Null),
        created_at: parse_ts(text(&v[5])?)?,
    })
}

const MACHINE_COLS: &str = "namespace, name, version, digest, definition, created_at";

pub fn machine(
    c: &Connection,
    ns: &str,
    name: &str,
    version: Option<u32>,
) -> Result<Option<MachineRecord>, Error> {
    let row = match version {
        Some(v) => c
            .prepare_cached(&format!("SELECT {MACHINE_COLS} FROM machines WHERE namespace = ?1 AND name = ?2 AND version = ?3 AND deleted_at IS NULL"))
            .and_then(|mut s| s.query_row(params![ns, name, v], machine_row).optional()),
        None => c
            .prepare_cached(&format!("SELECT {MACHINE_COLS} FROM machines WHERE namespace = ?1 AND name = ?2 AND deleted_at IS NULL ORDER BY version DESC LIMIT 1"))
            .and_then(|mut s| s.query_row(params![ns, name], machine_row).optional()),
    }
    .map_err(db_err)?;
    row.map(decode_machine).transpose()
}

pub fn machines(c: &Connection, ns: &str) -> Result<Vec<MachineRecord>, Error> {
    let mut s = c
        .prepare_cached(&format!(
            "SELECT {MACHINE_COLS} FROM machines m WHERE namespace = ?1 AND version = \
             (SELECT MAX(version) FROM machines WHERE namespace = m.namespace AND name = m.name AND deleted_at IS NULL) ORDER BY name"
        ))
        .map_err(db_err)?;
    let rows = s.query_map(params![ns], machine_row).map_err(db_err)?;
    rows.map(|r| r.map_err(db_err).and_then(decode_machine))
        .collect()
}

pub fn unreadable_machines(c: &Connection) -> Result<Vec<MachineRecord>, Error> {
    let mut s = c
        .prepare_cached(&format!(
            "SELECT {MACHINE_COLS} FROM machines WHERE deleted_at IS NULL ORDER BY namespace, name, version"
        ))
        .map_err(db_err)?;
    let rows = s.query_map([], machine_row).map_err(db_err)?;
    let mut out = Vec::new();
    for r in rows {
        let m = decode_machine(r.map_err(db_err)?)?;
        if m.definition.is_null() {
            out.push(m);
        }
    }
    Ok(out)
}

const INSTANCE_COLS: &str = "seq, namespace, id, machine, machine_version, status, configuration, context, version, labels, parent, last_error, created_at, updated_at, history_seq, entered";

fn instance_row(r: &Row<'_>) -> rusqlite::Result<Vec<SqlValue>> {
    (0..16).map(|i| r.get(i)).collect()
}

fn decode_instance(v: Vec<SqlValue>) -> Result<(i64, InstanceRecord), Error> {
    Ok((
        int(&v[0])?,
        InstanceRecord {
            namespace: text(&v[1])?.to_string(),
            id: text(&v[2])?.to_string(),
            machine: text(&v[3])?.to_string(),
            machine_version: int(&v[4])? as u32,
            status: status(text(&v[5])?)?,
            configuration: parse_json(text(&v[6])?, "configuration")?,
            context: parse_json(text(&v[7])?, "context")?,
            version: int(&v[8])? as u64,
            labels: parse_json::<BTreeMap<String, String>>(text(&v[9])?, "labels")?,
            parent: opt_text(&v[10])?,
            last_error: opt_text(&v[11])?,
            created_at: parse_ts(text(&v[12])?)?,
            updated_at: parse_ts(text(&v[13])?)?,
            history_seq: int(&v[14])? as u64,
            entered: parse_json(text(&v[15])?, "entered times")?,
        },
    ))
}

pub fn instance(c: &Connection, ns: &str, id: &str) -> Result<Option<InstanceRecord>, Error> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE namespace = ?1 AND id = ?2"
        ))
        .and_then(|mut s| s.query_row(params![ns, id], instance_row).optional())
        .map_err(db_err)?;
    row.map(|r| decode_instance(r).map(|(_, i)| i)).transpose()
}

pub fn instances(c: &Connection, f: &InstanceFilter) -> Result<Page<InstanceRecord>, Error> {
    let mut sql = format!("SELECT {INSTANCE_COLS} FROM instances i WHERE namespace = ?");
    let mut args: Vec<SqlValue> = vec![SqlValue::Text(f.namespace.clone())];
    if let Some(after) = &f.after {
        let seq: i64 = after
            .parse()
            .map_err(|_| Error::NotFound(format!("cursor `{after}` is not valid")))?;
        sql.push_str(" AND seq > ?");
        args.push(SqlValue::Integer(seq));
    }
    if let Some(m) = &f.machine {
        sql.push_str(" AND machine = ?");
        args.push(SqlValue::Text(m.clone()));
    }
    if let Some(p) = &f.parent {
        sql.push_str(" AND parent = ?");
        args.push(SqlValue::Text(p.clone()));
    }
    if let Some(s) = f.status {
        sql.push_str(" AND status = ?");
        args.push(SqlValue::Text(s.as_str().to_string()));
    }
    if let Some(state) = &f.state {
        // A state matches itself and its descendants.
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM json_each(i.configuration) j WHERE j.value = ? OR substr(j.value, 1, length(?) + 1) = ? || '.')",
        );
        for _ in 0..3 {
            args.push(SqlValue::Text(state.clone()));
        }
    }
    for (k, v) in &f.labels {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM instance_labels l WHERE l.namespace = i.namespace AND l.instance_id = i.id AND l.key = ? AND l.value = ?)",
        );
        args.push(SqlValue::Text(k.clone()));
        args.push(SqlValue::Text(v.clone()));
    }
    let limit = f.limit.clamp(1, 10_000);
    sql.push_str(" ORDER BY seq LIMIT ?");
    args.push(SqlValue::Integer(limit as i64 + 1));
    let mut s = c.prepare_cached(&sql).map_err(db_err)?;
    let rows = s
        .query_map(params_from_iter(args), instance_row)
        .map_err(db_err)?;
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    for r in rows {
        let (seq, inst) = decode_instance(r.map_err(db_err)?)?;
        if items.len() == limit {
            more = true;
            break;
        }
        last = Some(seq);
        items.push(inst);
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

pub fn instance_ids(c: &Connection, ns: Option<&str>) -> Result<Vec<(String, String)>, Error> {
    let mut s = c
        .prepare_cached(
            "SELECT namespace, id FROM instances WHERE ?1 IS NULL OR namespace = ?1 ORDER BY seq",
        )
        .map_err(db_err)?;
    let rows = s
        .query_map(params![ns], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

pub(crate) const HISTORY_COLS: &str = "namespace, instance_id, seq, kind, version, event, payload, actor, reason, from_configuration, to_configuration, context, status, idempotency_key, microsteps, effects, time_in_states_ms, created_at, token_id, on_behalf_of, addressed_to";

pub(crate) fn history_row(r: &Row<'_>) -> rusqlite::Result<Vec<SqlValue>> {
    (0..21).map(|i| r.get(i)).collect()
}

pub(crate) fn decode_history(v: Vec<SqlValue>) -> Result<HistoryRecord, Error> {
    let kind = text(&v[3])?;
    Ok(HistoryRecord {
        namespace: text(&v[0])?.to_string(),
        instance_id: text(&v[1])?.to_string(),
        seq: int(&v[2])? as u64,
        kind: HistoryKind::parse(kind)
            .ok_or_else(|| Error::Corrupt(format!("bad history kind `{kind}`")))?,
        version: int(&v[4])? as u64,
        event: text(&v[5])?.to_string(),
        payload: parse_json(text(&v[6])?, "payload")?,
        actor: text(&v[7])?.to_string(),
        reason: text(&v[8])?.to_string(),
        from_configuration: parse_json(text(&v[9])?, "configuration")?,
        to_configuration: parse_json(text(&v[10])?, "configuration")?,
        context: parse_json(text(&v[11])?, "context")?,
        status: status(text(&v[12])?)?,
        idempotency_key: opt_text(&v[13])?,
        microsteps: parse_json(text(&v[14])?, "microsteps")?,
        effects: parse_json(text(&v[15])?, "effects")?,
        time_in_states_ms: match &v[16] {
            SqlValue::Null => None,
            other => Some(int(other)?),
        },
        created_at: parse_ts(text(&v[17])?)?,
        token_id: opt_text(&v[18])?,
        on_behalf_of: opt_text(&v[19])?,
        addressed_to: opt_text(&v[20])?,
    })
}

pub fn transition(
    c: &Connection,
    ns: &str,
    id: &str,
    version: u64,
) -> Result<Option<HistoryRecord>, Error> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {HISTORY_COLS} FROM history WHERE namespace = ?1 AND instance_id = ?2 AND version = ?3 AND kind IN ('start', 'event')"
        ))
        .and_then(|mut s| s.query_row(params![ns, id, version as i64], history_row).optional())
        .map_err(db_err)?;
    row.map(decode_history).transpose()
}

pub fn history(
    c: &Connection,
    ns: &str,
    id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<HistoryRecord>, Error> {
    let mut s = c
        .prepare_cached(&format!(
            "SELECT {HISTORY_COLS} FROM history WHERE namespace = ?1 AND instance_id = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4"
        ))
        .map_err(db_err)?;
    let rows = s
        .query_map(
            params![ns, id, after as i64, limit.min(i64::MAX as usize) as i64],
            history_row,
        )
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err).and_then(decode_history))
        .collect()
}

pub fn history_before(
    c: &Connection,
    ns: &str,
    id: &str,
    before: u64,
    limit: usize,
) -> Result<Vec<HistoryRecord>, Error> {
    let mut s = c
        .prepare_cached(&format!(
            "SELECT {HISTORY_COLS} FROM history WHERE namespace = ?1 AND instance_id = ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
        ))
        .map_err(db_err)?;
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    let rows = s
        .query_map(
            params![ns, id, before, limit.min(i64::MAX as usize) as i64],
            history_row,
        )
        .map_err(db_err)?;
    let mut newest = rows
        .map(|r| r.map_err(db_err).and_then(decode_history))
        .collect::<Result<Vec<_>, _>>()?;
    newest.reverse();
    Ok(newest)
}

pub fn log(c: &Connection, after: i64, limit: usize) -> Result<Vec<LogEntry>, Error> {
    let mut s = c
        .prepare_cached(
            "SELECT position, namespace, instance_id, kind, version, data, created_at FROM log WHERE position > ?1 ORDER BY position LIMIT ?2",
        )
        .map_err(db_err)?;
    let rows = s
        .query_map(params![after, limit as i64], |r| {
            (0..7)
                .map(|i| r.get::<_, SqlValue>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    rows.map(|r| {
        let v = r.map_err(db_err)?;
        Ok(LogEntry {
            position: int(&v[0])?,
            entry: NewLogEntry {
                namespace: text(&v[1])?.to_string(),
                instance_id: text(&v[2])?.to_string(),
                kind: text(&v[3])?.to_string(),
                version: int(&v[4])? as u64,
                data: parse_json(text(&v[5])?, "log data")?,
                created_at: parse_ts(text(&v[6])?)?,
            },
        })
    })
    .collect()
}

pub(crate) fn conflict_if_duplicate(
    r: rusqlite::Result<usize>,
    what: impl FnOnce() -> String,
) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => match db_err(e) {
            Error::Conflict(_) => Err(Error::Conflict(what())),
            other => Err(other),
        },
    }
}

/// See [`Tx::trim_log`]. One writer: every entry is visible, positions are commit order.
fn trim_log(
    c: &Connection,
    before: Option<DateTime<Utc>>,
    keep: Option<u64>,
    limit: usize,
) -> Result<u64, Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut cut: Option<i64> = None;
    if let Some(before) = before {
        cut = c
            .query_row(
                "SELECT max(position) FROM (SELECT position, created_at FROM log ORDER BY position LIMIT ?1) WHERE created_at < ?2",
                params![limit, ts(&before)],
                |r| r.get(0),
            )
            .map_err(db_err)?;
    }
    if let Some(keep) = keep {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let beyond: Option<i64> = c
            .query_row(
                "SELECT min((SELECT position FROM log ORDER BY position DESC LIMIT 1 OFFSET ?1), \
                 (SELECT max(position) FROM (SELECT position FROM log ORDER BY position LIMIT ?2)))",
                params![keep, limit],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        cut = cut.max(beyond);
    }
    let Some(cut) = cut else {
        return Ok(0);
    };
    let removed = c
        .execute("DELETE FROM log WHERE position <= ?1", params![cut])
        .map_err(db_err)?;
    c.execute(
        "INSERT INTO meta (key, value) VALUES ('log_horizon', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        params![cut],
    )
    .map_err(db_err)?;
    Ok(removed as u64)
}

pub(crate) fn log_horizon(c: &Connection) -> Result<i64, Error> {
    c.query_row(
        "SELECT value FROM meta WHERE key = 'log_horizon'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v.unwrap_or(0))
    .map_err(db_err)
}

pub(crate) fn triggers(c: &Connection, ns: &str) -> Result<Vec<cairn_store::TriggerRecord>, Error> {
    let mut s = c
        .prepare_cached("SELECT name, machine, definition, created_at FROM triggers WHERE namespace = ?1 ORDER BY name")
        .map_err(db_err)?;
    let rows = s.query_map(params![ns], |r| row(r, 4)).map_err(db_err)?;
    rows.map(|r| {
        let v = r.map_err(db_err)?;
        Ok(cairn_store::TriggerRecord {
            namespace: ns.to_string(),
            name: text(&v[0])?.to_string(),
            machine: text(&v[1])?.to_string(),
            definition: parse_json(text(&v[2])?, "trigger definition")?,
            created_at: parse_ts(text(&v[3])?)?,
        })
    })
    .collect()
}

pub(crate) fn schedules_where(
    c: &Connection,
    cond: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<cairn_store::ScheduleRecord>, Error> {
    let mut s = c
        .prepare_cached(&format!(
            "SELECT namespace, name, definition, next_at, last_at, created_at FROM schedules WHERE {cond}"
        ))
        .map_err(db_err)?;
    let rows = s.query_map(args, |r| row(r, 6)).map_err(db_err)?;
    rows.map(|r| {
        let v = r.map_err(db_err)?;
        Ok(cairn_store::ScheduleRecord {
            namespace: text(&v[0])?.to_string(),
            name: text(&v[1])?.to_string(),
            definition: parse_json(text(&v[2])?, "schedule definition")?,
            next_at: parse_ts(text(&v[3])?)?,
            last_at: match &v[4] {
                SqlValue::Null => None,
                other => Some(parse_ts(text(other)?)?),
            },
            created_at: parse_ts(text(&v[5])?)?,
        })
    })
    .collect()
}
