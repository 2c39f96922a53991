//! Embedded, forward-only migrations, tracked in `PRAGMA user_version`. An applied
//! migration is never edited: a schema change is the next file in `migrations/`.

use cairn_store::Error;
use rusqlite::Connection;

use crate::db_err;

/// Every migration, in order; the schema version is how many have been applied.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_lifecycle.sql"),
    include_str!("../migrations/0003_tasks.sql"),
    include_str!("../migrations/0004_tokens.sql"),
    include_str!("../migrations/0005_orchestration.sql"),
    include_str!("../migrations/0006_actors.sql"),
    include_str!("../migrations/0007_machine_deletion.sql"),
    include_str!("../migrations/0008_deletion_indexes.sql"),
    include_str!("../migrations/0009_meta.sql"),
    include_str!("../migrations/0010_incremental_vacuum.sql"),
    include_str!("../migrations/0011_figures.sql"),
    include_str!("../migrations/0012_addressed_outcomes.sql"),
    include_str!("../migrations/0013_instances_by_seq.sql"),
];

/// The migration that adds `figures`: after its SQL, the time spent in states so far is
/// replayed from history.
const FIGURES: usize = 11;

/// The time spent in states by every instance so far, replayed from its history (as each
/// unit has kept it since), and when each of its active leaves was entered.
fn backfill_dwell(tx: &rusqlite::Transaction<'_>) -> Result<(), Error> {
    use std::collections::{BTreeMap, HashMap};
    let instances: Vec<(String, String, String)> = {
        let mut s = tx
            .prepare("SELECT namespace, id, machine FROM instances")
            .map_err(db_err)?;
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db_err)?
    };
    let mut history = tx
        .prepare(
            "SELECT from_configuration, to_configuration, created_at FROM history \
             WHERE namespace = ?1 AND instance_id = ?2 ORDER BY seq",
        )
        .map_err(db_err)?;
    let mut set = tx
        .prepare("UPDATE instances SET entered = ?3 WHERE namespace = ?1 AND id = ?2")
        .map_err(db_err)?;
    // (namespace, machine, state) -> (milliseconds, visits)
    let mut sums: HashMap<(String, String, String), (i64, i64)> = HashMap::new();
    for (ns, id, machine) in instances {
        let mut entered = BTreeMap::new();
        let mut rows = history.query(rusqlite::params![ns, id]).map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            let text = |i| r.get::<_, String>(i).map_err(db_err);
            let from: Vec<String> = crate::tx::parse_json(&text(0)?, "configuration")?;
            let to: Vec<String> = crate::tx::parse_json(&text(1)?, "configuration")?;
            let at = crate::tx::parse_ts(&text(2)?)?;
            for (leaf, ms) in cairn_store::dwell(&mut entered, &from, &to, at) {
                let e = sums.entry((ns.clone(), machine.clone(), leaf)).or_default();
                e.0 += ms;
                e.1 += 1;
            }
        }
        let entered = serde_json::to_string(&entered)
            .map_err(|e| Error::Database(format!("entered times: {e}")))?;
        set.execute(rusqlite::params![ns, id, entered])
            .map_err(db_err)?;
    }
    let mut add = tx
        .prepare("INSERT INTO figures (namespace, kind, name, detail, value) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(db_err)?;
    for ((ns, machine, state), (ms, visits)) in sums {
        add.execute(rusqlite::params![ns, "dwell_ms", machine, state, ms])
            .map_err(db_err)?;
        add.execute(rusqlite::params![
            ns,
            "dwell_visits",
            machine,
            state,
            visits
        ])
        .map_err(db_err)?;
    }
    Ok(())
}

/// The schema version of a database.
pub fn schema_version(conn: &Connection) -> Result<usize, Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map(|v| v as usize)
        .map_err(db_err)
}

/// Applies every migration the database lacks, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), Error> {
    migrate_to(conn, MIGRATIONS.len())
}

/// The first line of a migration that cannot run in a transaction (`VACUUM`): it is run
/// alone, then the schema version is set; it must be safe to run again.
const OUTSIDE_A_TRANSACTION: &str = "-- cairn: outside a transaction";

/// Applies migrations up to `target` (tests use it to build each earlier schema).
pub fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), Error> {
    let current = schema_version(conn)?;
    if current > MIGRATIONS.len() {
        return Err(Error::Corrupt(format!(
            "the database has schema version {current}, newer than this Cairn knows ({}); upgrade Cairn",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        if sql.starts_with(OUTSIDE_A_TRANSACTION) {
            conn.execute_batch(sql).map_err(db_err)?;
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db_err)?;
            continue;
        }
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute_batch(sql).map_err(db_err)?;
        if i + 1 == FIGURES {
            backfill_dwell(&tx)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(())
}
