//! `cairn migrate-store --from DIR --to postgres://...`: copies a SQLite data directory
//! into an empty PostgreSQL database, table by table in one transaction (all or nothing),
//! with a progress bar, then verifies the copy: row counts per table, every instance and
//! its history equal in both stores, and history replayed to the stored state on
//! PostgreSQL. Log positions are kept, so event streams resume where they were.

use std::path::PathBuf;

use anyhow::anyhow;
use cairn_store::{Export, Import, Reader};
use cairn_store_any::{AnyStore, PgStore, SqliteStore};
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
    let mut counts = Vec::new();
    for t in cairn_store::TABLES {
        counts.push((*t, sqlite.count(t).map_err(st)?));
    }
    let total: u64 = counts.iter().map(|(_, n)| *n).sum();
    let bar = super::lifecycle::progress(Some(total), "copying");
    // One transaction: all or nothing; refused unless the database holds no Cairn data.
    pg.import(&sqlite, &mut || bar.inc(1)).map_err(st)?;
    bar.finish_and_clear();

    // Verify: counts, then every instance and its history, then replay on PostgreSQL.
    for (t, n) in &counts {
        let there = pg.count(t).map_err(st)?;
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
