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
