//! The SQLite store as the source of a copy ([`cairn_store::Export`]).

use cairn_store::{Error, Export, RowSink};
use rusqlite::types::ValueRef;

use crate::{SqliteStore, db_err};

impl Export for SqliteStore {
    fn export(&self, table: &str, row: &mut RowSink<'_>) -> Result<u64, Error> {
        let table = cairn_store::table(table)?;
        self.read(|c| {
            let mut stmt = c
                .prepare(&format!("SELECT * FROM {table}"))
                .map_err(db_err)?;
            let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
            let mut rows = stmt.query([]).map_err(db_err)?;
            let mut n = 0;
            let mut values = Vec::with_capacity(columns.len());
            while let Some(r) = rows.next().map_err(db_err)? {
                values.clear();
                for i in 0..columns.len() {
                    values.push(match r.get_ref(i).map_err(db_err)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(v) => Some(v.to_string()),
                        ValueRef::Real(v) => Some(v.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    });
                }
                row(&columns, &values)?;
                n += 1;
            }
            Ok(n)
        })
    }

    fn count(&self, table: &str) -> Result<u64, Error> {
        let table = cairn_store::table(table)?;
        self.read(|c| {
            c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(db_err)
        })
    }
}

/// The SQLite store as the destination of a copy: every table in one transaction, on a
/// connection of its own (the caller holds the data directory, so the writer is idle).
/// The triggers count what is copied into the figures as the engine's writes would; the
/// copied figures add only what no trigger keeps (time spent in states).
impl cairn_store::Import for SqliteStore {
    fn import(
        &self,
        source: &dyn Export,
        progress: &mut dyn FnMut(),
    ) -> Result<Vec<(&'static str, u64)>, Error> {
        let mut conn = rusqlite::Connection::open(self.path()).map_err(db_err)?;
        crate::configure(&conn)?;
        for t in cairn_store::TABLES {
            let there: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .map_err(db_err)?;
            if there > 0 {
                return Err(Error::Conflict(format!(
                    "the store already holds Cairn data ({there} rows in `{t}`); copy into an empty one"
                )));
            }
        }
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mut copied = Vec::with_capacity(cairn_store::TABLES.len());
        for t in cairn_store::TABLES {
            let verb = if *t == "figures" {
                "INSERT OR IGNORE"
            } else {
                "INSERT"
            };
            let mut insert: Option<(Vec<String>, rusqlite::CachedStatement<'_>)> = None;
            let n = source.export(t, &mut |cols, values| {
                if insert.as_ref().is_none_or(|(c, _)| c != cols) {
                    let marks = vec!["?"; cols.len()].join(", ");
                    let stmt = tx
                        .prepare_cached(&format!(
                            "{verb} INTO {t} ({}) VALUES ({marks})",
                            cols.join(", ")
                        ))
                        .map_err(db_err)?;
                    insert = Some((cols.to_vec(), stmt));
                }
                let stmt = &mut insert.as_mut().expect("prepared above").1;
                // Text into columns of INTEGER or REAL affinity is stored as a number.
                stmt.execute(rusqlite::params_from_iter(values.iter()))
                    .map_err(|e| Error::Database(format!("copying `{t}`: {e}")))?;
                progress();
                Ok(())
            })?;
            drop(insert);
            copied.push((*t, n));
        }
        tx.commit().map_err(db_err)?;
        Ok(copied)
    }
}
