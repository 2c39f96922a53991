//! SQL of machine versions, triggers and schedules.

use cairn_store::{Error, MachineRecord, ScheduleRecord, TriggerRecord};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::*;

// The definition is read as text and parsed here: one that cannot be read back (stored
// by an older Cairn, too deep for the JSON reader) comes back null, so the row can still
// be listed, reported and deleted (see `Tx::machine`).
pub(crate) const MACHINE_COLS: &str =
    "namespace, name, version, digest, definition::text AS definition, created_at";

pub(crate) const MACHINE_INSERT_COLS: &str =
    "namespace, name, version, digest, definition, created_at";

pub(crate) fn machine_row(r: &Row) -> Result<MachineRecord, Error> {
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

pub(crate) fn schedule_row(r: &Row) -> Result<ScheduleRecord, Error> {
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
