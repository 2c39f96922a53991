//! SQL for tasks and their attempts.

use cairn_store::{AttemptRecord, Error, TaskRecord, TaskStatus};
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params, params_from_iter};

use crate::db_err;
use crate::tx::{conflict_if_duplicate, int, json, opt_text, parse_json, parse_ts, text, ts};

const TASK_COLS: &str = "id, namespace, instance_id, state, queue, action, input, status, attempt, retry, timeout_ms, heartbeat_ms, available_at, lease_owner, lease_expires_at, output, error, created_at, updated_at";

use crate::tx::row;

fn opt_int(v: &SqlValue) -> Result<Option<i64>, Error> {
    match v {
        SqlValue::Null => Ok(None),
        other => int(other).map(Some),
    }
}

fn decode(v: Vec<SqlValue>) -> Result<TaskRecord, Error> {
    let st = text(&v[7])?;
    Ok(TaskRecord {
        id: text(&v[0])?.to_string(),
        namespace: text(&v[1])?.to_string(),
        instance_id: text(&v[2])?.to_string(),
        state: text(&v[3])?.to_string(),
        queue: text(&v[4])?.to_string(),
        action: text(&v[5])?.to_string(),
        input: parse_json(text(&v[6])?, "task input")?,
        status: TaskStatus::parse(st)
            .ok_or_else(|| Error::Corrupt(format!("bad task status `{st}`")))?,
        attempt: int(&v[8])? as u32,
        retry: parse_json(text(&v[9])?, "retry policy")?,
        timeout_ms: opt_int(&v[10])?.map(|x| x as u64),
        heartbeat_ms: opt_int(&v[11])?.map(|x| x as u64),
        available_at: parse_ts(text(&v[12])?)?,
        lease_owner: opt_text(&v[13])?,
        lease_expires_at: opt_text(&v[14])?.map(|t| parse_ts(&t)).transpose()?,
        output: opt_text(&v[15])?
            .map(|o| parse_json(&o, "task output"))
            .transpose()?,
        error: opt_text(&v[16])?,
        created_at: parse_ts(text(&v[17])?)?,
        updated_at: parse_ts(text(&v[18])?)?,
    })
}

fn query(c: &Connection, sql: &str, args: Vec<SqlValue>) -> Result<Vec<TaskRecord>, Error> {
    let mut s = c.prepare_cached(sql).map_err(db_err)?;
    let rows = s
        .query_map(params_from_iter(args), |r| row(r, 19))
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err).and_then(decode)).collect()
}

pub fn insert_task(c: &Connection, t: &TaskRecord) -> Result<(), Error> {
    let r = c
        .prepare_cached(&format!(
            "INSERT INTO tasks ({TASK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        ))
        .and_then(|mut s| {
            s.execute(params![
                t.id,
                t.namespace,
                t.instance_id,
                t.state,
                t.queue,
                t.action,
                json(&t.input),
                t.status.as_str(),
                t.attempt,
                json(&t.retry),
                t.timeout_ms.map(|x| x as i64),
                t.heartbeat_ms.map(|x| x as i64),
                ts(&t.available_at),
                t.lease_owner,
                t.lease_expires_at.as_ref().map(ts),
                t.output.as_ref().map(json),
                t.error,
                ts(&t.created_at),
                ts(&t.updated_at)
            ])
        });
    conflict_if_duplicate(r, || format!("task `{}` exists", t.id))
}

pub fn update_task(c: &Connection, t: &TaskRecord) -> Result<(), Error> {
    let n = c
        .prepare_cached(
            "UPDATE tasks SET status = ?2, attempt = ?3, available_at = ?4, lease_owner = ?5, lease_expires_at = ?6, \
             output = ?7, error = ?8, updated_at = ?9 WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                t.id,
                t.status.as_str(),
                t.attempt,
                ts(&t.available_at),
                t.lease_owner,
                t.lease_expires_at.as_ref().map(ts),
                t.output.as_ref().map(json),
                t.error,
                ts(&t.updated_at)
            ])
        })
        .map_err(db_err)?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::NotFound(format!("task `{}`", t.id)))
    }
}

pub fn task(c: &Connection, id: &str) -> Result<Option<TaskRecord>, Error> {
    Ok(query(
        c,
        &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?"),
        vec![SqlValue::Text(id.into())],
    )?
    .into_iter()
    .next())
}

pub fn open_tasks(c: &Connection, ns: &str, id: &str) -> Result<Vec<TaskRecord>, Error> {
    // Sorted here, not by SQLite: an ORDER BY the index does not give costs a sorter
    // (allocated afresh each time) on every transition, for the few rows found.
    let mut open = query(
        c,
        &format!(
            "SELECT {TASK_COLS} FROM tasks WHERE namespace = ? AND instance_id = ? AND status IN ('pending', 'leased')"
        ),
        vec![SqlValue::Text(ns.into()), SqlValue::Text(id.into())],
    )?;
    open.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(open)
}

pub fn task_instances(
    c: &Connection,
    ids: &[String],
) -> Result<Vec<(String, String, String)>, Error> {
    let mut s = c
        .prepare_cached(
            "SELECT id, namespace, instance_id FROM tasks WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .map_err(db_err)?;
    let rows = s
        .query_map(params![json(&ids)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(db_err)?;
    rows.map(|r| r.map_err(db_err)).collect()
}

pub fn claimable(
    c: &Connection,
    queues: &[String],
    namespaces: Option<&[String]>,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<TaskRecord>, Error> {
    if queues.is_empty() || namespaces.is_some_and(|n| n.is_empty()) {
        return Ok(Vec::new());
    }
    let marks = |n: usize| vec!["?"; n].join(", ");
    let mut args: Vec<SqlValue> = queues.iter().map(|q| SqlValue::Text(q.clone())).collect();
    let mut sql = format!(
        "SELECT {TASK_COLS} FROM tasks WHERE queue IN ({}) AND status = 'pending' AND available_at <= ? \
         AND EXISTS (SELECT 1 FROM instances i WHERE i.namespace = tasks.namespace AND i.id = tasks.instance_id)",
        marks(queues.len())
    );
    args.push(SqlValue::Text(ts(&now)));
    if let Some(ns) = namespaces {
        sql.push_str(&format!(" AND namespace IN ({})", marks(ns.len())));
        args.extend(ns.iter().map(|n| SqlValue::Text(n.clone())));
    }
    sql.push_str(" ORDER BY available_at, id LIMIT ?");
    args.push(SqlValue::Integer(limit as i64));
    query(c, &sql, args)
}

pub fn expired(c: &Connection, now: DateTime<Utc>, limit: usize) -> Result<Vec<TaskRecord>, Error> {
    query(
        c,
        &format!(
            "SELECT {TASK_COLS} FROM tasks WHERE status = 'leased' AND lease_expires_at < ? ORDER BY lease_expires_at, id LIMIT ?"
        ),
        vec![SqlValue::Text(ts(&now)), SqlValue::Integer(limit as i64)],
    )
}

pub fn tasks(
    c: &Connection,
    ns: &str,
    queue: Option<&str>,
    status: Option<TaskStatus>,
    id: Option<&str>,
) -> Result<Vec<TaskRecord>, Error> {
    let opt = |v: Option<&str>| v.map_or(SqlValue::Null, |s| SqlValue::Text(s.into()));
    query(
        c,
        &format!(
            "SELECT {TASK_COLS} FROM tasks WHERE namespace = ?1 AND (?2 IS NULL OR queue = ?2) AND (?3 IS NULL OR status = ?3) \
             AND (?4 IS NULL OR instance_id = ?4) ORDER BY created_at, id"
        ),
        vec![
            SqlValue::Text(ns.into()),
            opt(queue),
            opt(status.map(|s| s.as_str())),
            opt(id),
        ],
    )
}

pub fn put_attempt(c: &Connection, a: &AttemptRecord) -> Result<(), Error> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO task_attempts (task_id, attempt, namespace, instance_id, worker, started_at, ended_at, outcome, error, tokens, cost) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.task_id,
            a.attempt,
            a.namespace,
            a.instance_id,
            a.worker,
            ts(&a.started_at),
            a.ended_at.as_ref().map(ts),
            a.outcome,
            a.error,
            a.tokens,
            a.cost
        ])
    })
    .map(|_| ())
    .map_err(db_err)
}

pub fn attempts(c: &Connection, task_id: &str) -> Result<Vec<AttemptRecord>, Error> {
    let mut s = c
        .prepare_cached(
            "SELECT task_id, attempt, namespace, instance_id, worker, started_at, ended_at, outcome, error, tokens, cost \
             FROM task_attempts WHERE task_id = ?1 ORDER BY attempt",
        )
        .map_err(db_err)?;
    let rows = s
        .query_map(params![task_id], |r| row(r, 11))
        .map_err(db_err)?;
    rows.map(|r| {
        let v = r.map_err(db_err)?;
        Ok(AttemptRecord {
            task_id: text(&v[0])?.to_string(),
            attempt: int(&v[1])? as u32,
            namespace: text(&v[2])?.to_string(),
            instance_id: text(&v[3])?.to_string(),
            worker: text(&v[4])?.to_string(),
            started_at: parse_ts(text(&v[5])?)?,
            ended_at: opt_text(&v[6])?.map(|t| parse_ts(&t)).transpose()?,
            outcome: opt_text(&v[7])?,
            error: opt_text(&v[8])?,
            tokens: opt_int(&v[9])?,
            cost: match &v[10] {
                SqlValue::Null => None,
                SqlValue::Real(f) => Some(*f),
                SqlValue::Integer(i) => Some(*i as f64),
                other => return Err(Error::Corrupt(format!("bad cost {other:?}"))),
            },
        })
    })
    .collect()
}

pub fn insert_token(c: &Connection, t: &cairn_store::TokenRecord) -> Result<(), Error> {
    let r = c
        .prepare_cached("INSERT INTO tokens (id, name, hash, role, namespaces, created_at, revoked_at, subject) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
        .and_then(|mut s| s.execute(params![t.id, t.name, t.hash, t.role, json(&t.namespaces), ts(&t.created_at), t.revoked_at.as_ref().map(ts), t.subject]));
    conflict_if_duplicate(r, || format!("token `{}` exists", t.id))
}

pub fn revoke_token(c: &Connection, id: &str, at: DateTime<Utc>) -> Result<bool, Error> {
    c.prepare_cached("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, ts(&at)]))
        .map(|n| n > 0)
        .map_err(db_err)
}

fn tokens_query(
    c: &Connection,
    sql: &str,
    args: Vec<SqlValue>,
) -> Result<Vec<cairn_store::TokenRecord>, Error> {
    let mut s = c.prepare_cached(sql).map_err(db_err)?;
    let rows = s
        .query_map(params_from_iter(args), |r| row(r, 8))
        .map_err(db_err)?;
    rows.map(|r| {
        let v = r.map_err(db_err)?;
        Ok(cairn_store::TokenRecord {
            id: text(&v[0])?.to_string(),
            name: text(&v[1])?.to_string(),
            hash: text(&v[2])?.to_string(),
            role: text(&v[3])?.to_string(),
            namespaces: parse_json(text(&v[4])?, "token namespaces")?,
            created_at: parse_ts(text(&v[5])?)?,
            revoked_at: opt_text(&v[6])?.map(|t| parse_ts(&t)).transpose()?,
            subject: text(&v[7])?.to_string(),
        })
    })
    .collect()
}

pub fn token_by_hash(
    c: &Connection,
    hash: &str,
) -> Result<Option<cairn_store::TokenRecord>, Error> {
    Ok(tokens_query(c, "SELECT id, name, hash, role, namespaces, created_at, revoked_at, subject FROM tokens WHERE hash = ?", vec![SqlValue::Text(hash.into())])?
        .into_iter()
        .next())
}

pub fn tokens(c: &Connection) -> Result<Vec<cairn_store::TokenRecord>, Error> {
    tokens_query(
        c,
        "SELECT id, name, hash, role, namespaces, created_at, revoked_at, subject FROM tokens ORDER BY created_at, id",
        vec![],
    )
}
