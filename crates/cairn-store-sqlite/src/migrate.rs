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
];

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
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(())
}
