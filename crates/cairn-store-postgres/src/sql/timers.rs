//! SQL of timers.

use cairn_store::{Error, TimerRecord};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::*;

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

pub(crate) const TIMER_COLS: &str = "namespace, instance_id, event, state, due_at, created_at";

pub(crate) fn timer_row(r: &Row) -> Result<TimerRecord, Error> {
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
