//! SQL for the lifecycle records: timers, approvals, checkpoints, the inbox of a paused
//! instance, deletion and compaction, and the counts of `stats`.

use cairn_store::{
    ApprovalRecord, ApprovalStatus, CheckpointRecord, Error, Figure, HistoryRecord, InboxRecord,
    TimerRecord,
};
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params};

use crate::db_err;
use crate::tx::{
    HISTORY_COLS, conflict_if_duplicate, decode_history, history_row, int, json, opt_text,
    parse_json, parse_ts, status, text, ts,
};

use crate::tx::row;

const TIMER_COLS: &str = "namespace, instance_id, event, state, due_at, created_at";

fn decode_timer(v: Vec<SqlValue>) -> Result<TimerRecord, Error> {
    Ok(TimerRecord {
        namespace: text(&v[0])?.to_string(),
        instance_id: text(&v[1])?.to_string(),
        event: text(&v[2])?.to_string(),
        state: text(&v[3])?.to_string(),
        due_at: parse_ts(text(&v[4])?)?,
        created_at: parse_ts(text(&v[5])?)?,
    })
}

fn timers_query(
    c: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<TimerRecord>, Error> {
    let mut s = c.prepare_cached(sql).map_err(db_err)?;
    let rows = s.query_map(args, |r| row(r, 6)).map_err(db_err)?;
    rows.map(|r| r.map_err(db_err).and_then(decode_timer))
        .collect()
}

pub fn set_timer(c: &Connection, t: &TimerRecord) -> Result<(), Error> {
    c.prepare_cached(&format!(
        "INSERT INTO timers ({TIMER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (namespace, instance_id, event) DO UPDATE SET state = excluded.state, due_at = excluded.due_at, created_at = excluded.created_at"
    ))
    .and_then(|mut s| s.execute(params![t.namespace, t.instance_id, t.event, t.state, ts(&t.due_at), ts(&t.created_at)]))
    .map_err(db_err)?;
    Ok(())
}

pub fn timer(
    c: &Connection,
    ns: &str,
    id: &str,
    event: &str,
) -> Result<Option<TimerRecord>, Error> {
    Ok(timers_query(
        c,
        &format!("SELECT {TIMER_COLS} FROM timers WHERE namespace = ?1 AND instance_id = ?2 AND event = ?3"),
        &[&ns, &id, &event],
    )?
    .into_iter()
    .next())
}

pub fn delete_timer(c: &Connection, ns: &str, id: &str, event: &str) -> Result<bool, Error> {
    c.prepare_cached("DELETE FROM timers WHERE namespace = ?1 AND instance_id = ?2 AND event = ?3")
        .and_then(|mut s| s.execute(params![ns, id, event]))
        .map(|n| n > 0)
        .map_err(db_err)
}

pub fn delete_timers(c: &Connection, ns: &str, id: &str) -> Result<(), Error> {
    c.prepare_cached("DELETE FROM timers WHERE namespace = ?1 AND instance_id = ?2")
        .and_then(|mut s| s.execute(params![ns, id]))
        .map(|_| ())
        .map_err(db_err)
}

pub fn due_timers_of(
    c: &Connection,
    ns: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<TimerRecord>, Error> {
    timers_query(
        c,
        &format!(
            "SELECT {TIMER_COLS} FROM timers WHERE namespace = ?1 AND instance_id = ?2 AND due_at <= ?3 ORDER BY due_at, event"
        ),
        &[&ns, &id, &ts(&now)],
    )
}

pub fn due_timers(
    c: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<TimerRecord>, Error> {
    timers_query(
        c,
        &format!(
            "SELECT {TIMER_COLS} FROM timers WHERE due_at <= ?1 ORDER BY due_at, namespace, instance_id, event LIMIT ?2"
        ),
        &[&ts(&now), &(limit as i64)],
    )
}

pub fn timers(c: &Connection, ns: &str, id: &str) -> Result<Vec<TimerRecord>, Error> {
    timers_query(
        c,
        &format!(
            "SELECT {TIMER_COLS} FROM timers WHERE namespace = ?1 AND instance_id = ?2 ORDER BY due_at, event"
        ),
        &[&ns, &id],
    )
}

const APPROVAL_COLS: &str = "id, namespace, instance_id, state, prompt, approvers, quorum, status, decisions, created_at, decided_at, decided_by, reason";

fn decode_approval(v: Vec<SqlValue>) -> Result<ApprovalRecord, Error> {
    let st = text(&v[7])?;
    Ok(ApprovalRecord {
        id: text(&v[0])?.to_string(),
        namespace: text(&v[1])?.to_string(),
        instance_id: text(&v[2])?.to_string(),
        state: text(&v[3])?.to_string(),
        prompt: opt_text(&v[4])?,
        approvers: parse_json(text(&v[5])?, "approvers")?,
        quorum: int(&v[6])? as u32,
        status: ApprovalStatus::parse(st)
            .ok_or_else(|| Error::Corrupt(format!("bad approval status `{st}`")))?,
        decisions: parse_json(text(&v[8])?, "decisions")?,
        created_at: parse_ts(text(&v[9])?)?,
        decided_at: opt_text(&v[10])?.map(|t| parse_ts(&t)).transpose()?,
        decided_by: opt_text(&v[11])?,
        reason: opt_text(&v[12])?,
    })
}

fn approvals_query(
    c: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<ApprovalRecord>, Error> {
    let mut s = c.prepare_cached(sql).map_err(db_err)?;
    let rows = s.query_map(args, |r| row(r, 13)).map_err(db_err)?;
    rows.map(|r| r.map_err(db_err).and_then(decode_approval))
        .collect()
}

pub fn insert_approval(c: &Connection, a: &ApprovalRecord) -> Result<(), Error> {
    let r = c
        .prepare_cached(&format!(
            "INSERT INTO approvals ({APPROVAL_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ))
        .and_then(|mut s| {
            s.execute(params![
                a.id,
                a.namespace,
                a.instance_id,
                a.state,
                a.prompt,
                json(&a.approvers),
                a.quorum,
                a.status.as_str(),
                json(&a.decisions),
                ts(&a.created_at),
                a.decided_at.as_ref().map(ts),
                a.decided_by,
                a.reason
            ])
        });
    conflict_if_duplicate(r, || format!("approval `{}` exists", a.id))
}

pub fn update_approval(c: &Connection, a: &ApprovalRecord) -> Result<(), Error> {
    let n = c
        .prepare_cached(
            "UPDATE approvals SET status = ?2, decisions = ?3, decided_at = ?4, decided_by = ?5, reason = ?6 WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                a.id,
                a.status.as_str(),
                json(&a.decisions),
                a.decided_at.as_ref().map(ts),
                a.decided_by,
                a.reason
            ])
        })
        .map_err(db_err)?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::NotFound(format!("approval `{}`", a.id)))
    }
}

pub fn approval(c: &Connection, id: &str) -> Result<Option<ApprovalRecord>, Error> {
    Ok(approvals_query(
        c,
        &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?1"),
        &[&id],
    )?
    .into_iter()
    .next())
}

/// The instance's pending approvals: one indexed lookup, for the write path.
pub fn pending_approvals(c: &Connection, ns: &str, id: &str) -> Result<Vec<ApprovalRecord>, Error> {
    approvals_query(
        c,
        &format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE namespace = ?1 AND instance_id = ?2 AND status = 'pending' ORDER BY created_at, id"
        ),
        &[&ns, &id],
    )
}

pub fn approvals(
    c: &Connection,
    ns: &str,
    st: Option<ApprovalStatus>,
    id: Option<&str>,
) -> Result<Vec<ApprovalRecord>, Error> {
    approvals_query(
        c,
        &format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE namespace = ?1 AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR instance_id = ?3) ORDER BY created_at, id"
        ),
        &[&ns, &st.map(|s| s.as_str()), &id],
    )
}

const CHECKPOINT_COLS: &str =
    "namespace, instance_id, name, seq, version, configuration, context, status, created_at";

fn decode_checkpoint(v: Vec<SqlValue>) -> Result<CheckpointRecord, Error> {
    Ok(CheckpointRecord {
        namespace: text(&v[0])?.to_string(),
        instance_id: text(&v[1])?.to_string(),
        name: text(&v[2])?.to_string(),
        seq: int(&v[3])? as u64,
        version: int(&v[4])? as u64,
        configuration: parse_json(text(&v[5])?, "configuration")?,
        context: parse_json(text(&v[6])?, "context")?,
        status: status(text(&v[7])?)?,
        created_at: parse_ts(text(&v[8])?)?,
    })
}

pub fn insert_checkpoint(c: &Connection, k: &CheckpointRecord) -> Result<(), Error> {
    let r = c
        .prepare_cached(&format!("INSERT INTO checkpoints ({CHECKPOINT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"))
        .and_then(|mut s| {
            s.execute(params![
                k.namespace,
                k.instance_id,
                k.name,
                k.seq as i64,
                k.version as i64,
                json(&k.configuration),
                json(&k.context),
                k.status.as_str(),
                ts(&k.created_at)
            ])
        });
    conflict_if_duplicate(r, || {
        format!("checkpoint `{}` of `{}` exists", k.name, k.instance_id)
    })
}

pub fn checkpoints(
    c: &Connection,
    ns: &str,
    id: &str,
    name: Option<&str>,
) -> Result<Vec<CheckpointRecord>, Error> {
    let mut s = c
        .prepare_cached(&format!(
            "SELECT {CHECKPOINT_COLS} FROM checkpoints WHERE namespace = ?1 AND instance_id = ?2 AND (?3 IS NULL OR name = ?3) ORDER BY seq, name"
        ))
        .map_err(db_err)?;
    let rows = s
        .query_map(params![ns, id, name], |r| row(r, 9))
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err).and_then(decode_checkpoint))
        .collect()
}

pub fn history_at(
    c: &Connection,
    ns: &str,
    id: &str,
    seq: u64,
) -> Result<Option<HistoryRecord>, Error> {
    let r = c
        .prepare_cached(&format!("SELECT {HISTORY_COLS} FROM history WHERE namespace = ?1 AND instance_id = ?2 AND seq = ?3"))
        .and_then(|mut s| s.query_row(params![ns, id, seq as i64], history_row).optional())
        .map_err(db_err)?;
    r.map(decode_history).transpose()
}

const INBOX_COLS: &str = "namespace, instance_id, seq, event, payload, actor, reason, idempotency_key, created_at, token_id, on_behalf_of, addressed_to";

fn decode_inbox(v: Vec<SqlValue>) -> Result<InboxRecord, Error> {
    Ok(InboxRecord {
        namespace: text(&v[0])?.to_string(),
        instance_id: text(&v[1])?.to_string(),
        seq: int(&v[2])? as u64,
        event: text(&v[3])?.to_string(),
        payload: parse_json(text(&v[4])?, "payload")?,
        actor: text(&v[5])?.to_string(),
        reason: text(&v[6])?.to_string(),
        idempotency_key: opt_text(&v[7])?,
        created_at: parse_ts(text(&v[8])?)?,
        token_id: opt_text(&v[9])?,
        on_behalf_of: opt_text(&v[10])?,
        addressed_to: opt_text(&v[11])?,
    })
}

pub fn push_inbox(c: &Connection, e: &InboxRecord) -> Result<(), Error> {
    // `seq` is assigned here: one past the instance's last queued event.
    let r = c
        .prepare_cached(&format!(
            "INSERT INTO inbox ({INBOX_COLS}) VALUES (?1, ?2, \
             (SELECT COALESCE(MAX(seq), 0) + 1 FROM inbox WHERE namespace = ?1 AND instance_id = ?2), ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ))
        .and_then(|mut s| {
            s.execute(params![e.namespace, e.instance_id, e.event, json(&e.payload), e.actor, e.reason, e.idempotency_key, ts(&e.created_at), e.token_id, e.on_behalf_of, e.addressed_to])
        });
    conflict_if_duplicate(r, || "inbox entry exists".to_string())
}

pub fn inbox(c: &Connection, ns: &str, id: &str) -> Result<Vec<InboxRecord>, Error> {
    let mut s = c
        .prepare_cached(&format!(
            "SELECT {INBOX_COLS} FROM inbox WHERE namespace = ?1 AND instance_id = ?2 ORDER BY seq"
        ))
        .map_err(db_err)?;
    let rows = s
        .query_map(params![ns, id], |r| row(r, 12))
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err).and_then(decode_inbox))
        .collect()
}

pub fn take_inbox(c: &Connection, ns: &str, id: &str) -> Result<Vec<InboxRecord>, Error> {
    let out = inbox(c, ns, id)?;
    c.prepare_cached("DELETE FROM inbox WHERE namespace = ?1 AND instance_id = ?2")
        .and_then(|mut s| s.execute(params![ns, id]))
        .map_err(db_err)?;
    Ok(out)
}

pub fn inbox_key(
    c: &Connection,
    ns: &str,
    id: &str,
    key: &str,
) -> Result<Option<InboxRecord>, Error> {
    Ok(inbox(c, ns, id)?
        .into_iter()
        .find(|e| e.idempotency_key.as_deref() == Some(key)))
}

pub fn delete_instance(c: &Connection, ns: &str, id: &str) -> Result<bool, Error> {
    let mut existed = false;
    // Everything recorded of it, table by table (`Tx::delete_instance`'s contract).
    for table in [
        "instances",
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
        let col = if table == "instances" {
            "id"
        } else {
            "instance_id"
        };
        let n = c
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE namespace = ?1 AND {col} = ?2"
            ))
            .and_then(|mut s| s.execute(params![ns, id]))
            .map_err(db_err)?;
        if table == "instances" {
            existed = n > 0;
        }
    }
    c.prepare_cached(
        "DELETE FROM children WHERE namespace = ?1 AND (parent_id = ?2 OR child_id = ?2)",
    )
    .and_then(|mut s| s.execute(params![ns, id]))
    .map_err(db_err)?;
    Ok(existed)
}

pub fn delete_history_before(
    c: &Connection,
    ns: &str,
    id: &str,
    before: u64,
) -> Result<u64, Error> {
    c.prepare_cached("DELETE FROM history WHERE namespace = ?1 AND instance_id = ?2 AND seq < ?3")
        .and_then(|mut s| s.execute(params![ns, id, before as i64]))
        .map(|n| n as u64)
        .map_err(db_err)
}

pub fn replace_history(c: &Connection, h: &HistoryRecord) -> Result<(), Error> {
    let n = c
        .prepare_cached(
            "UPDATE history SET kind = ?4, version = ?5, event = ?6, payload = ?7, actor = ?8, reason = ?9, from_configuration = ?10, \
             to_configuration = ?11, context = ?12, status = ?13, addressed_to = ?14 WHERE namespace = ?1 AND instance_id = ?2 AND seq = ?3",
        )
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
                h.addressed_to
            ])
        })
        .map_err(db_err)?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "history seq {} of `{}`",
            h.seq, h.instance_id
        )))
    }
}

pub fn finished_before(
    c: &Connection,
    ns: &str,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<String>, Error> {
    let mut s = c
        .prepare_cached(
            "SELECT id FROM instances WHERE namespace = ?1 AND status IN ('completed', 'failed', 'cancelled') \
             AND updated_at < ?2 ORDER BY updated_at LIMIT ?3",
        )
        .map_err(db_err)?;
    let rows = s
        .query_map(params![ns, ts(&before), limit as i64], |r| {
            r.get::<_, String>(0)
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

pub fn figures(c: &Connection, ns: Option<&str>) -> Result<Vec<Figure>, Error> {
    let mut s = c
        .prepare_cached(
            "SELECT namespace, kind, name, detail, value FROM figures \
             WHERE (?1 IS NULL OR namespace = ?1) AND value <> 0 ORDER BY namespace, kind, name, detail",
        )
        .map_err(db_err)?;
    let rows = s
        .query_map(params![ns], |r| {
            Ok(Figure {
                namespace: r.get(0)?,
                kind: r.get(1)?,
                name: r.get(2)?,
                detail: r.get(3)?,
                value: r.get(4)?,
            })
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

pub fn add_figure(c: &Connection, f: &Figure) -> Result<(), Error> {
    c.prepare_cached(
        "INSERT INTO figures (namespace, kind, name, detail, value) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT DO UPDATE SET value = value + excluded.value",
    )
    .and_then(|mut s| s.execute(params![f.namespace, f.kind, f.name, f.detail, f.value]))
    .map_err(db_err)?;
    Ok(())
}

pub fn timers_due(
    c: &Connection,
    now: DateTime<Utc>,
    cap: usize,
) -> Result<Vec<(String, u64)>, Error> {
    let mut s = c
        .prepare_cached(
            "SELECT namespace, count(*) FROM (SELECT namespace FROM timers WHERE due_at <= ?1 LIMIT ?2) \
             GROUP BY namespace ORDER BY namespace",
        )
        .map_err(db_err)?;
    let rows = s
        .query_map(params![ts(&now), cap.min(i64::MAX as usize) as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}
