//! `cairn bench W4 [--instances N]`: N instances (default 1,000,000) of a 10-state
//! machine, spread evenly over its states, 10 history rows each, with a label whose value
//! 1% of them share. Ten template instances are run by the engine on a scratch store (one
//! ending in each state: a start and nine events); their rows are copied N/10 times into
//! the data directory through the store's bulk import, with their ids, sequence numbers,
//! log positions and label values made unique, so the data is what the engine writes; a
//! sample is replayed by `verify`. Then `cairn serve` is started on it: time to the first
//! answered request, idle resident memory, `get` and filtered `list` latencies over HTTP;
//! and W1-events and W1-tasks in-process with that data present, against an empty store.
//! One JSON line. On SQLite (a data directory), or with `--database` on PostgreSQL (an
//! empty database the bench may fill; the empty store to compare with is a scratch
//! database beside it, dropped afterwards).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use cairn_engine::{Config, Engine, SendRequest, StartRequest};
use cairn_store::{Error, Export, Import, RowSink};
use cairn_store_any::{AnyStore, SqliteOptions, SqliteStore};
use serde_json::{Value, json};

use super::bench::{Args, InProc, TempDir, W1, W1_TASKS, percentile, round, w1, w1_tasks};
use super::memory::rss_mb;
use super::w5::node;
use crate::Failure;

const MACHINE: &str = r#"
machine: w4-ten
description: ten states in a chain; `stay` is a step that stays
initial: s0
states:
  s0: { on: { next: s1, stay: s0 } }
  s1: { on: { next: s2, stay: s1 } }
  s2: { on: { next: s3, stay: s2 } }
  s3: { on: { next: s4, stay: s3 } }
  s4: { on: { next: s5, stay: s4 } }
  s5: { on: { next: s6, stay: s5 } }
  s6: { on: { next: s7, stay: s6 } }
  s7: { on: { next: s8, stay: s7 } }
  s8: { on: { next: s9, stay: s8 } }
  s9: { on: { stay: s9 } }
"#;

const NS: &str = "bench";
/// The label value of the templates, replaced in each copy.
const LABEL: &str = "LABEL-OF-THE-TEMPLATE";

fn template_id(k: u64) -> String {
    format!("template-{k}")
}

fn instance_id(i: u64) -> String {
    format!("w4-{i}")
}

/// The templates' rows, copied `copies` times: copy `c` of template `k` is instance
/// `c * 10 + k`, in state `s{k}`, labelled `team=t{i % 100}`.
struct Copies<'a> {
    template: &'a SqliteStore,
    copies: u64,
}

impl Export for Copies<'_> {
    fn export(&self, table: &str, row: &mut RowSink<'_>) -> Result<u64, Error> {
        let mut rows: Vec<(Vec<String>, Vec<Option<String>>)> = Vec::new();
        self.template.export(table, &mut |cols, values| {
            rows.push((cols.to_vec(), values.to_vec()));
            Ok(())
        })?;
        if matches!(table, "machines" | "meta" | "figures") {
            // The triggers count the copied rows into the figures; the figures copied add
            // the time in states, per copy.
            let mut n = 0;
            for (cols, mut values) in rows {
                if table == "figures"
                    && let Some(v) = col(&cols, "value").and_then(|i| values[i].as_mut())
                {
                    let x: i64 = v.parse().unwrap_or(0);
                    *v = (x * self.copies as i64).to_string();
                }
                row(&cols, &values)?;
                n += 1;
            }
            return Ok(n);
        }
        let mut n = 0;
        let mut position = 0i64;
        for c in 0..self.copies {
            for (cols, values) in &rows {
                let mut values = values.clone();
                let key = if table == "instances" {
                    "id"
                } else {
                    "instance_id"
                };
                let Some(k) = col(cols, key)
                    .and_then(|i| values[i].as_deref())
                    .and_then(|id| id.strip_prefix("template-"))
                    .and_then(|k| k.parse::<u64>().ok())
                else {
                    continue;
                };
                let i = c * 10 + k;
                let label = format!("t{}", i % 100);
                for (j, name) in cols.iter().enumerate() {
                    let Some(v) = values[j].as_mut() else {
                        continue;
                    };
                    match name.as_str() {
                        "id" | "instance_id" if v.starts_with("template-") => {
                            *v = instance_id(i);
                        }
                        "seq" if table == "instances" => *v = (i + 1).to_string(),
                        "position" => {
                            position += 1;
                            *v = position.to_string();
                        }
                        _ if v.contains(LABEL) => *v = v.replace(LABEL, &label),
                        _ => {}
                    }
                }
                row(cols, &values)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn count(&self, table: &str) -> Result<u64, Error> {
        Ok(self.template.count(table)? * self.copies)
    }
}

fn col(cols: &[String], name: &str) -> Option<usize> {
    cols.iter().position(|c| c == name)
}

fn open(dir: &Path) -> Result<SqliteStore, Failure> {
    SqliteStore::open(dir, SqliteOptions::default()).map_err(|e| Failure::from(anyhow!("{e}")))
}

/// Runs the ten templates on a scratch store in `dir`.
fn templates(dir: &Path) -> Result<SqliteStore, Failure> {
    let engine = Engine::new(
        open(dir)?,
        Arc::new(cairn_engine::SystemClock),
        Config::default(),
    );
    engine
        .apply(NS, MACHINE, None, None)
        .map_err(crate::client::failure)?;
    for k in 0..10 {
        engine
            .start(
                NS,
                StartRequest {
                    machine: "w4-ten".into(),
                    id: Some(template_id(k)),
                    labels: [("team".to_string(), LABEL.to_string())].into(),
                    ..Default::default()
                },
            )
            .map_err(crate::client::failure)?;
        for step in 0..9 {
            let event = if step < k { "next" } else { "stay" };
            engine
                .send(
                    NS,
                    &template_id(k),
                    SendRequest {
                        event: event.into(),
                        ..Default::default()
                    },
                )
                .map_err(crate::client::failure)?;
        }
    }
    Ok(engine.store().clone())
}

/// p50 and p99 in ms of `times` calls of `f`.
fn timed(
    times: usize,
    mut f: impl FnMut(usize) -> Result<(), String>,
) -> Result<(f64, f64), Failure> {
    let mut l = Vec::with_capacity(times);
    for i in 0..times {
        let t = Instant::now();
        f(i).map_err(|e| anyhow!("{e}"))?;
        l.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    l.sort_by(|a, b| a.total_cmp(b));
    Ok((
        round(percentile(&l, 0.5), 2),
        round(percentile(&l, 0.99), 2),
    ))
}

/// W1-events and W1-tasks in-process on the store in `dir`, or the database `database`.
fn throughput(dir: &Path, database: Option<&str>, a: &Args) -> Result<(f64, f64), Failure> {
    let engine = cairn_runtime::open(dir, database, SqliteOptions::default(), Config::default())
        .map_err(|e| anyhow!("{e}"))?;
    for def in [W1, W1_TASKS] {
        engine
            .apply(NS, def, None, None)
            .map_err(crate::client::failure)?;
    }
    let driver: Arc<dyn super::bench::Driver> = Arc::new(InProc(engine));
    let events = w1(Arc::clone(&driver), a)?["workflows_per_s"]
        .as_f64()
        .unwrap_or(0.0);
    let tasks = w1_tasks(driver, a, a.workers.max(1))?["workflows_per_s"]
        .as_f64()
        .unwrap_or(0.0);
    Ok((events, tasks))
}

/// Copies the templates into `dest`, through its bulk import.
fn load(dest: &AnyStore, copies: &Copies<'_>) -> Result<(), Failure> {
    let r = match dest {
        AnyStore::Sqlite(s) => s.import(copies, &mut || {}),
        AnyStore::Postgres(p) => p.import(copies, &mut || {}),
    };
    r.map(|_| ()).map_err(|e| anyhow!("loading: {e}").into())
}

/// A scratch PostgreSQL database beside the bench's, dropped with this guard.
struct Scratch {
    url: String,
    name: String,
    of: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = cairn_store_any::drop_database(&self.of, &self.name);
    }
}

pub fn run(
    data: Option<std::path::PathBuf>,
    database: Option<String>,
    a: &Args,
) -> Result<(), Failure> {
    let n = a.instances.unwrap_or(1_000_000).max(10) / 10 * 10;
    let database = database.as_deref();
    // Under `--data` (kept, and empty to begin with), else a temporary directory.
    let (base, _tmp) = match data {
        Some(d) => (d, None),
        None => {
            let t = std::env::temp_dir().join(format!("cairn-w4-{}", std::process::id()));
            (t.clone(), Some(TempDir(t)))
        }
    };
    let (scratch, data, empty) = (
        base.join("templates"),
        base.join("data"),
        base.join("empty"),
    );
    // Load.
    let loaded = Instant::now();
    {
        let template = templates(&scratch)?;
        let dest = AnyStore::open(&data, database).map_err(|e| anyhow!("{e}"))?;
        load(
            &dest,
            &Copies {
                template: &template,
                copies: n / 10,
            },
        )?;
    }
    let load_s = loaded.elapsed().as_secs_f64();
    // On PostgreSQL, what an operator does after a bulk load: VACUUM (ANALYZE), so the
    // planner knows the tables and autovacuum does not set upon them mid-measurement.
    let settled = Instant::now();
    if database.is_some() {
        let dest = AnyStore::open(&data, database).map_err(|e| anyhow!("{e}"))?;
        cairn_store::Store::vacuum(&dest).map_err(|e| anyhow!("vacuuming after the load: {e}"))?;
    }
    let settle_s = settled.elapsed().as_secs_f64();
    // A sample replays to its stored state.
    let (bytes, verified) = {
        let engine =
            cairn_runtime::open(&data, database, SqliteOptions::default(), Config::default())
                .map_err(|e| anyhow!("{e}"))?;
        let mut ok = 0;
        for s in 0..100u64 {
            let i = (s * 7919 + 13) % n;
            let v = engine
                .verify(NS, &instance_id(i))
                .map_err(crate::client::failure)?;
            if !v.ok {
                return Err(anyhow!(
                    "instance {} does not replay: {:?}",
                    instance_id(i),
                    v.problem
                )
                .into());
            }
            ok += 1;
        }
        let bytes = cairn_store::Store::space(engine.store())
            .map_err(|e| anyhow!("{e}"))?
            .bytes;
        (bytes, ok)
    };
    // The server on that data.
    let spawned = Instant::now();
    let store_args = match database {
        Some(url) => vec!["--database".to_string(), url.to_string()],
        None => vec!["--data".to_string(), data.display().to_string()],
    };
    let (server, url) = node(&store_args)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| -> Result<Value, String> {
        let mut r = agent
            .get(format!("{url}{path}"))
            .call()
            .map_err(|e| e.to_string())?;
        if r.status().as_u16() != 200 {
            return Err(format!("GET {path}: {}", r.status()));
        }
        r.body_mut().read_json::<Value>().map_err(|e| e.to_string())
    };
    let first = format!("/v1/instances/{}?namespace={NS}", instance_id(n / 2));
    let ready_ms = loop {
        if get(&first).is_ok() {
            break spawned.elapsed().as_secs_f64() * 1000.0;
        }
        if spawned.elapsed() > Duration::from_secs(60) {
            return Err(anyhow!("the server did not answer within a minute").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::thread::sleep(Duration::from_secs(1));
    let idle_mb = rss_mb(server.pid()).unwrap_or(0.0);
    let pick = |i: usize| (i as u64).wrapping_mul(2_654_435_761) % n;
    let get_ms = timed(1000, |i| {
        get(&format!(
            "/v1/instances/{}?namespace={NS}",
            instance_id(pick(i))
        ))
        .map(|_| ())
    })?;
    let by_state = timed(200, |i| {
        let v = get(&format!(
            "/v1/instances?namespace={NS}&state=s{}&limit=50",
            i % 10
        ))?;
        match v["instances"].as_array().map(Vec::len) {
            Some(50) => Ok(()),
            other => Err(format!("a page by state held {other:?} instances")),
        }
    })?;
    let by_label = timed(200, |i| {
        let v = get(&format!(
            "/v1/instances?namespace={NS}&label=team=t{}&limit=50",
            i % 100
        ))?;
        match v["instances"].as_array().map(Vec::len) {
            Some(k) if k == 50.min((n / 100) as usize) => Ok(()),
            other => Err(format!("a page by label held {other:?} instances")),
        }
    })?;
    drop(server);
    // Throughput with the data present, and on an empty store.
    let (events_full, tasks_full) = throughput(&data, database, a)?;
    let (events_empty, tasks_empty) = match database {
        Some(url) => {
            let name = format!("cairn_w4_empty_{}", std::process::id());
            let scratch = Scratch {
                url: cairn_store_any::create_database(url, &name)
                    .map_err(|e| anyhow!("a scratch database for the empty store: {e}"))?,
                name,
                of: url.to_string(),
            };
            throughput(&empty, Some(&scratch.url), a)?
        }
        None => throughput(&empty, None, a)?,
    };
    let ratio = |x: f64, y: f64| if y > 0.0 { round(x / y, 2) } else { 0.0 };
    let line = json!({
        "peer": "cairn",
        "workload": "W4",
        "backend": if database.is_some() { "postgres" } else { "sqlite" },
        "instances": n,
        "history_rows": n * 10,
        "load_seconds": round(load_s, 1),
        "vacuum_seconds": round(settle_s, 1),
        "verified_sample": verified,
        "database_mb": round(bytes as f64 / 1_048_576.0, 1),
        "ready_ms": round(ready_ms, 1),
        "idle_rss_mb": round(idle_mb, 1),
        "get_p50_ms": get_ms.0, "get_p99_ms": get_ms.1,
        "list_by_state_p50_ms": by_state.0, "list_by_state_p99_ms": by_state.1,
        "list_by_label_p50_ms": by_label.0, "list_by_label_p99_ms": by_label.1,
        "w1_events_per_s": events_full, "w1_events_empty_per_s": events_empty,
        "w1_events_ratio": ratio(events_full, events_empty),
        "w1_tasks_per_s": tasks_full, "w1_tasks_empty_per_s": tasks_empty,
        "w1_tasks_ratio": ratio(tasks_full, tasks_empty),
    });
    println!("{line}");
    Ok(())
}
