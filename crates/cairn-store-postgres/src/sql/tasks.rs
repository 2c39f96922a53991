//! SQL of tasks, leases and attempts.

use cairn_store::{AttemptRecord, Error, TaskRecord, TaskStatus};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::*;

pub(crate) const TASK_COLS: &str = "t.id, t.namespace, t.instance_id, t.state, t.queue, t.action, t.input, t.status, t.attempt, t.retry, t.timeout_ms, t.heartbeat_ms, \
     t.available_at, t.lease_owner, t.lease_expires_at, t.output, t.error, t.created_at, t.updated_at";

pub(crate) fn task_row(r: &Row) -> Result<TaskRecord, Error> {
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

/// Held for the unit's next round trip.
pub fn insert_task<C: GenericClient>(db: &mut Db<C>, t: &TaskRecord) -> Result<(), Error> {
    db.later(
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
        Expect {
            conflict: Some(format!("task `{}` exists", t.id)),
            miscount: None,
        },
    )
}

/// Held for the unit's next round trip; the statement checks that the task exists.
pub fn update_task<C: GenericClient>(db: &mut Db<C>, t: &TaskRecord) -> Result<(), Error> {
    db.later(
        "WITH w AS (UPDATE tasks SET status = $2, attempt = $3, available_at = $4, lease_owner = $5, lease_expires_at = $6, \
         output = $7, error = $8, updated_at = $9 WHERE id = $1 RETURNING 1) \
         SELECT cairn_expect_rows((SELECT count(*) FROM w), 1)",
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
        Expect {
            conflict: None,
            miscount: Some(Error::NotFound(format!("task `{}`", t.id))),
        },
    )
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

pub fn task_instances<C: GenericClient>(
    db: &mut Db<C>,
    ids: &[String],
) -> Result<Vec<(String, String, String)>, Error> {
    db.query(
        "SELECT id, namespace, instance_id FROM tasks WHERE id = ANY($1)",
        &[&ids],
    )?
    .iter()
    .map(|r| Ok((get(r, "id")?, get(r, "namespace")?, get(r, "instance_id")?)))
    .collect()
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

/// Held for the unit's next round trip.
pub fn put_attempt<C: GenericClient>(db: &mut Db<C>, a: &AttemptRecord) -> Result<(), Error> {
    db.later(
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
        Expect::none(),
    )
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
