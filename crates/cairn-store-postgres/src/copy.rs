//! The PostgreSQL store as the destination of a copy ([`cairn_store::Import`]: one
//! transaction, each table by `COPY`, every value read by its column type's input
//! function, log positions kept) and
//! as a source ([`cairn_store::Export`]).

use crate::PgStore;
use crate::conn::PgClient;
use cairn_store::{Error, Export, Import, RowSink, TABLES};

/// A table's columns and their types, in order.
fn columns(c: &mut PgClient, table: &str) -> Result<Vec<(String, String)>, Error> {
    Ok(c.query(
        "SELECT column_name::text, format_type(atttypid, atttypmod) FROM information_schema.columns c \
         JOIN pg_attribute a ON a.attrelid = $1::text::regclass AND a.attname = c.column_name \
         WHERE c.table_schema = current_schema() AND c.table_name = $2 ORDER BY c.ordinal_position",
        &[&table, &table],
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

fn count(c: &mut PgClient, table: &str) -> Result<u64, Error> {
    let n: i64 = c
        .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
        .get(0);
    Ok(n as u64)
}

/// Appends `v` to `out` as a value of COPY's text format.
fn escape(v: &str, out: &mut String) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

impl Export for PgStore {
    fn export(&self, table: &str, row: &mut RowSink<'_>) -> Result<u64, Error> {
        let table = cairn_store::table(table)?;
        self.with_conn(|c| {
            let cols = columns(&mut c.client, table)?;
            let names: Vec<String> = cols.iter().map(|(n, _)| n.clone()).collect();
            let select = names
                .iter()
                .map(|n| format!("{n}::text"))
                .collect::<Vec<_>>()
                .join(", ");
            let rows = c
                .client
                .query(&format!("SELECT {select} FROM {table}"), &[])?;
            let mut values = Vec::with_capacity(names.len());
            for r in &rows {
                values.clear();
                for i in 0..names.len() {
                    values.push(r.get::<_, Option<String>>(i));
                }
                row(&names, &values)?;
            }
            Ok(rows.len() as u64)
        })
    }

    fn count(&self, table: &str) -> Result<u64, Error> {
        let table = cairn_store::table(table)?;
        self.with_conn(|c| count(&mut c.client, table))
    }
}

impl Import for PgStore {
    fn import(
        &self,
        source: &dyn Export,
        progress: &mut dyn FnMut(),
    ) -> Result<Vec<(&'static str, u64)>, Error> {
        self.with_conn(|c| {
            for t in TABLES {
                let there = count(&mut c.client, t)?;
                if there > 0 {
                    return Err(Error::Conflict(format!(
                        "the database already holds Cairn data ({there} rows in `{t}`); copy into an empty one"
                    )));
                }
            }
            let tx = &mut c.client;
            tx.batch_execute("BEGIN")?;
            let r = import_in(tx, source, progress);
            match r {
                Ok(copied) => {
                    tx.batch_execute("COMMIT")?;
                    Ok(copied)
                }
                Err(e) => {
                    let _ = tx.batch_execute("ROLLBACK");
                    Err(e)
                }
            }
        })
    }
}

/// The copy, inside its transaction.
fn import_in(
    tx: &mut PgClient,
    source: &dyn Export,
    progress: &mut dyn FnMut(),
) -> Result<Vec<(&'static str, u64)>, Error> {
    let xid: i64 = tx
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])?
        .get(0);
    let mut copied = Vec::with_capacity(TABLES.len());
    for t in TABLES {
        let types = columns(tx, t)?;
        // The source's columns, from its first row (none: nothing to copy).
        let mut cols: Option<Vec<String>> = None;
        let peeked = source.export(t, &mut |c, _| {
            cols = Some(c.to_vec());
            Err(Error::Closed)
        });
        let Some(cols) = cols else {
            peeked?;
            copied.push((*t, 0));
            continue;
        };
        if let Some(c) = cols.iter().find(|c| !types.iter().any(|(n, _)| n == *c)) {
            return Err(Error::Corrupt(format!(
                "`{t}.{c}` has no column in PostgreSQL"
            )));
        }
        // COPY's text format: each value is read by its column type's input
        // function, as the `$n::text::type` casts of an INSERT would.
        let mut writer = tx.copy_in(&format!("COPY {t} ({}) FROM STDIN", cols.join(", ")))?;
        let mut line = String::new();
        let n = source.export(t, &mut |c, values| {
            if c != cols.as_slice() {
                return Err(Error::Corrupt(format!(
                    "`{t}` changed its columns mid-copy"
                )));
            }
            line.clear();
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    line.push('\t');
                }
                match v {
                    None => line.push_str("\\N"),
                    Some(v) => escape(v, &mut line),
                }
            }
            line.push('\n');
            writer.write_all(line.as_bytes())?;
            progress();
            Ok(())
        })?;
        writer.finish().map_err(|e| match e {
            Error::Database(m) => Error::Database(format!("copying `{t}`: {m}")),
            other => other,
        })?;
        copied.push((*t, n));
    }
    // The triggers counted the rows copied as changes; the figures copied are
    // those counts already (and the time spent in states, which no trigger keeps).
    // TRUNCATE, not DELETE: a bulk copy leaves millions of deltas, and deleted rows would
    // stay behind as dead tuples every fold walks until a vacuum.
    tx.batch_execute("TRUNCATE figure_deltas")?;
    // Log positions are kept, so event streams resume where they were; they must
    // stay below the positions this database gives from now on.
    let max_position: i64 = tx
        .query_one("SELECT COALESCE(MAX(position), 0) FROM log", &[])?
        .get(0);
    if max_position >= xid << 20 {
        return Err(Error::Refused(format!(
            "the log's positions (up to {max_position}) would not stay below the database's new ones; copy into a database of a busier cluster"
        )));
    }
    for (table, col) in [("instances", "seq"), ("outbox", "seq")] {
        tx.execute(
                    &format!("SELECT setval(pg_get_serial_sequence('{table}', '{col}'), GREATEST((SELECT MAX({col}) FROM {table}), 1))"),
                    &[],
                )?;
    }
    Ok(copied)
}
