//! `cairn migrate-store --from DIR --to postgres://...`: copies a SQLite data directory
//! into an empty PostgreSQL database, table by table in one transaction (all or nothing),
//! with a progress bar, then verifies the copy: row counts per table, every instance and
//! its history equal in both stores, and history replayed to the stored state on
//! PostgreSQL. Log positions are kept, so event streams resume where they were.

use std::path::PathBuf;

use anyhow::anyhow;
use cairn_store::Reader;
use cairn_store_any::{AnyStore, PgStore, SqliteStore};
use rusqlite::types::ValueRef;
use serde_json::json;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The SQLite data directory to copy (no server may be running on it).
    #[arg(long)]
    from: PathBuf,
    /// The PostgreSQL database to copy into: `postgres://USER@HOST:PORT/DB`; it must hold
    /// no Cairn data yet.
    #[arg(long)]
    to: String,
}

/// Every table, parents before what refers to them.
const TABLES: &[&str] = &[
    "machines",
    "instances",
    "instance_labels",
    "history",
    "idempotency",
    "log",
    "timers",
    "approvals",
    "checkpoints",
    "inbox",
    "tasks",
    "task_attempts",
    "tokens",
    "children",
    "outbox",
    "triggers",
    "schedules",
    "maps",
    "meta",
    "figures",
];

fn st(e: cairn_store::Error) -> Failure {
    crate::client::failure(cairn_engine::Error::Store(e))
}

fn err(e: impl std::fmt::Display) -> Failure {
    Failure::from(anyhow!("{e}"))
}

pub fn run(json_out: bool, a: Args) -> Result<(), Failure> {
    if !cairn_store_any::is_postgres_url(&a.to) {
        return Err(Failure::usage(anyhow!(
            "`--to {}`: expected a PostgreSQL URL, postgres://USER@HOST:PORT/DB",
            cairn_store_any::redact(&a.to)
        )));
    }
    if !a.from.join("cairn.db").exists() {
        return Err(Failure::usage(anyhow!(
            "`--from {}`: no Cairn data directory there (no cairn.db)",
            a.from.display()
        )));
    }
    // Opening the store takes the directory's lock: nothing writes to it while we copy.
    let sqlite =
        SqliteStore::open(&a.from, cairn_store_any::SqliteOptions::default()).map_err(st)?;
    let pg = PgStore::open(&a.to, cairn_store_any::PgOptions::default()).map_err(st)?;
    let src = rusqlite::Connection::open_with_flags(
        a.from.join("cairn.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .map_err(err)?;
    let mut dst = postgres::Client::connect(&a.to, postgres::NoTls).map_err(err)?;

    let mut counts = Vec::new();
    for t in TABLES {
        let n: i64 = src
            .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .map_err(err)?;
        counts.push((*t, n));
        let there: i64 = dst
            .query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])
            .map_err(err)?
            .get(0);
        if there > 0 {
            return Err(Failure {
                code: 4,
                error: anyhow!(
                    "the database already holds Cairn data ({there} rows in `{t}`); migrate into an empty one"
                ),
            });
        }
    }
    let total: u64 = counts.iter().map(|(_, n)| *n as u64).sum();
    let bar = super::lifecycle::progress(Some(total), "copying");
    let mut tx = dst.transaction().map_err(err)?;
    let xid: i64 = tx
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .map_err(err)?
        .get(0);
    for t in TABLES {
        copy_table(&src, &mut tx, t, &bar)?;
    }
    // PostgreSQL's triggers counted the rows copied as changes; the figures copied are
    // those counts already (and the time spent in states, which no trigger keeps).
    tx.execute("DELETE FROM figure_deltas", &[]).map_err(err)?;
    let max_position: i64 = tx
        .query_one("SELECT COALESCE(MAX(position), 0) FROM log", &[])
        .map_err(err)?
        .get(0);
    if max_position >= xid << 20 {
        return Err(err(format!(
            "the log's positions (up to {max_position}) would not stay below the database's new ones; migrate into a database of a busier cluster or report this"
        )));
    }
    for (table, col) in [("instances", "seq"), ("outbox", "seq")] {
        tx.execute(
            &format!("SELECT setval(pg_get_serial_sequence('{table}', '{col}'), GREATEST((SELECT MAX({col}) FROM {table}), 1))"),
            &[],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    bar.finish_and_clear();

    // Verify: counts, then every instance and its history, then replay on PostgreSQL.
    for (t, n) in &counts {
        let there: i64 = dst
            .query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])
            .map_err(err)?
            .get(0);
        if there != *n {
            return Err(err(format!("`{t}`: {n} rows copied, {there} found")));
        }
    }
    let ids = sqlite.instance_ids(None).map_err(st)?;
    let bar = super::lifecycle::progress(Some(ids.len() as u64), "verifying");
    for (ns, id) in &ids {
        let a_i = sqlite.instance(ns, id).map_err(st)?;
        let b_i = pg.instance(ns, id).map_err(st)?;
        let a_h = sqlite.history(ns, id, 0, usize::MAX).map_err(st)?;
        let b_h = pg.history(ns, id, 0, i64::MAX as usize).map_err(st)?;
        if a_i != b_i || a_h != b_h {
            return Err(err(format!(
                "instance `{id}` of namespace `{ns}` differs after the copy"
            )));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(sqlite);
    let engine = cairn_engine::Engine::new(
        AnyStore::Postgres(pg),
        std::sync::Arc::new(cairn_engine::SystemClock),
        cairn_engine::Config::default(),
    );
    let verified = ids
        .iter()
        .map(|(ns, id)| engine.verify(ns, id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(crate::client::failure)?;
    let failed: Vec<_> = verified.iter().filter(|v| !v.ok).collect();
    if !failed.is_empty() {
        return Err(err(format!(
            "{} instance(s) do not replay on PostgreSQL, first `{}`: {}",
            failed.len(),
            failed[0].id,
            failed[0].problem.clone().unwrap_or_default()
        )));
    }
    let rows: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(t, n)| (t.to_string(), json!(n)))
        .collect();
    if json_out {
        println!(
            "{}",
            json!({"from": a.from, "to": cairn_store_any::redact(&a.to), "rows": rows, "instances_verified": verified.len(), "ok": true})
        );
    } else {
        println!(
            "copied {total} rows ({} instances) from {} to {}; verified: every instance and its history equal, and replaying",
            ids.len(),
            a.from.display(),
            cairn_store_any::redact(&a.to)
        );
    }
    Ok(())
}

/// Copies one table: every value goes as text and is cast to the target column's type.
fn copy_table(
    src: &rusqlite::Connection,
    dst: &mut postgres::Transaction<'_>,
    table: &str,
    bar: &indicatif::ProgressBar,
) -> Result<(), Failure> {
    let types: Vec<(String, String)> = dst
        .query(
            "SELECT column_name::text, format_type(atttypid, atttypmod) FROM information_schema.columns c \
             JOIN pg_attribute a ON a.attrelid = $1::text::regclass AND a.attname = c.column_name \
             WHERE c.table_schema = current_schema() AND c.table_name = $2 ORDER BY c.ordinal_position",
            &[&table, &table],
        )
        .map_err(err)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut stmt = src
        .prepare(&format!("SELECT * FROM {table}"))
        .map_err(err)?;
    let cols: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let cast: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            types
                .iter()
                .find(|(n, _)| n == c)
                .map(|(_, ty)| format!("${}::text::{ty}", i + 1))
                .ok_or_else(|| err(format!("`{table}.{c}` has no column in PostgreSQL")))
        })
        .collect::<Result<_, _>>()?;
    let insert = dst
        .prepare(&format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            cols.join(", "),
            cast.join(", ")
        ))
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let values: Vec<Option<String>> = (0..cols.len())
            .map(|i| match r.get_ref(i) {
                Ok(ValueRef::Null) | Err(_) => None,
                Ok(ValueRef::Integer(v)) => Some(v.to_string()),
                Ok(ValueRef::Real(v)) => Some(v.to_string()),
                Ok(ValueRef::Text(t)) | Ok(ValueRef::Blob(t)) => {
                    Some(String::from_utf8_lossy(t).into_owned())
                }
            })
            .collect();
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        dst.execute(&insert, &params)
            .map_err(|e| err(format!("copying `{table}`: {e}")))?;
        bar.inc(1);
    }
    Ok(())
}
