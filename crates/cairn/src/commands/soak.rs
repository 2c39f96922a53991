//! `cairn bench soak [--minutes M]`: W1-events at concurrency 32 (or `--concurrency`) for
//! M minutes (default 10) on a SQLite data directory, with retention deleting finished
//! workflows and log entries every two seconds, printing one JSON line per minute: throughput, p99, the
//! largest the WAL file grew (sampled every 20 ms) against its limit, the writer's
//! checkpoints that started it over, and the database's size.
//! It shows the write path holds up under sustained load: the WAL stays within its
//! bound plus a batch, and throughput does not fall away.
//!
//! `cairn bench stats [--n N]`: `GET /v1/stats` (the engine's `stats`) at N instances
//! (1,000,000 by default, written in bulk units with a start record each, a fifth of
//! them finished): p50 and p99 of 200 calls, which read the figures the units keep.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use cairn_engine::{Config, Engine, Retention, SendRequest, StartRequest};
use cairn_store_any::{SqliteOptions as Options, SqliteStore};
use serde_json::json;

use super::bench::{Args, bench_dir, percentile, round};
use crate::Failure;

const CHAIN: &str = r#"
machine: soak-chain
initial: s1
states:
  s1: { on: { next: s2 } }
  s2: { on: { next: s3 } }
  s3: { on: { next: s4 } }
  s4: { on: { next: s5 } }
  s5: { on: { next: done } }
  done: { type: final }
"#;

pub fn run(data: Option<PathBuf>, a: &Args) -> Result<(), Failure> {
    let minutes = a.minutes.unwrap_or(10).max(1);
    let minute = Duration::from_secs(a.report_every.unwrap_or(60).max(1));
    let (dir, _tmp) = bench_dir(data, "soak");
    let options = Options {
        wal_limit: a.wal_limit.unwrap_or(Options::default().wal_limit),
        ..Options::default()
    };
    let wal_limit = options.wal_limit;
    let store = SqliteStore::open(&dir, options).map_err(|e| Failure::from(anyhow!("{e}")))?;
    let engine = Engine::new(
        store,
        Arc::new(cairn_engine::SystemClock),
        Config::default(),
    );
    engine
        .apply("soak", CHAIN, None, None)
        .map_err(crate::client::failure)?;
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    // Completion latencies of the current minute, in milliseconds.
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let wal_max = Arc::new(AtomicU64::new(0));
    let wal_path = dir.join("cairn.db-wal");
    let mut threads = Vec::new();
    for _ in 0..a.concurrency() {
        let (engine, stop, next, latencies) = (
            engine.clone(),
            Arc::clone(&stop),
            Arc::clone(&next),
            Arc::clone(&latencies),
        );
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let id = format!("w{}", next.fetch_add(1, Ordering::Relaxed));
                let t = Instant::now();
                let start = StartRequest {
                    machine: "soak-chain".into(),
                    id: Some(id.clone()),
                    ..Default::default()
                };
                engine.start("soak", start).map_err(|e| e.to_string())?;
                for _ in 0..5 {
                    let req = SendRequest {
                        event: "next".into(),
                        ..Default::default()
                    };
                    engine.send("soak", &id, req).map_err(|e| e.to_string())?;
                }
                if let Ok(mut l) = latencies.lock() {
                    l.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Ok(())
        }));
    }
    // Retention keeps the database from growing: finished workflows and log entries go
    // after 5 s.
    let retention = {
        let (engine, stop) = (engine.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let policy = Retention {
                finished_after: Some(chrono::Duration::seconds(5)),
                max_history: None,
            };
            while !stop.load(Ordering::Relaxed) {
                let _ = engine.enforce_retention("soak", &policy);
                let _ = engine.trim_log(Some(chrono::Duration::seconds(5)), None);
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    let sampler = {
        let (stop, wal_max) = (Arc::clone(&stop), Arc::clone(&wal_max));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let size = std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
                wal_max.fetch_max(size, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let begun = Instant::now();
    let mut restarted = (0, 0);
    for m in 1..=minutes {
        let until = begun + minute * m as u32;
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let mut l = latencies
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        l.sort_by(f64::total_cmp);
        let stats = engine.store().write_stats();
        let restarts = (
            stats.wal_restarts.load(Ordering::Relaxed),
            stats.wal_restarts_busy.load(Ordering::Relaxed),
        );
        let db = std::fs::metadata(dir.join("cairn.db"))
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "{}",
            json!({
                "peer": "cairn",
                "workload": "soak",
                "minute": m,
                "workflows": l.len(),
                "workflows_per_s": round(l.len() as f64 / minute.as_secs_f64(), 1),
                "p99_ms": round(percentile(&l, 0.99), 2),
                "wal_max_bytes": wal_max.swap(0, Ordering::Relaxed),
                "wal_limit": wal_limit,
                "wal_restarts": restarts.0 - restarted.0,
                "wal_restarts_busy": restarts.1 - restarted.1,
                "wal_restarts_busy_total": restarts.1,
                "wal_commit_bytes_max": stats.wal_commit_bytes_max(),
                "db_bytes": db,
                "concurrency": a.concurrency(),
                "durability": "sqlite wal synchronous=FULL",
            })
        );
        restarted = restarts;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Failure::from(anyhow!("a workflow failed: {e}"))),
            Err(_) => return Err(Failure::from(anyhow!("a worker thread panicked"))),
        }
    }
    let _ = retention.join();
    let _ = sampler.join();
    Ok(())
}

pub fn stats(data: Option<PathBuf>, a: &Args) -> Result<(), Failure> {
    use cairn_store::{HistoryKind, HistoryRecord, InstanceRecord, Store};
    let n = a.n();
    let (dir, _tmp) = bench_dir(data, "stats");
    let store = SqliteStore::open(&dir, Options::default()).map_err(|e| anyhow!("{e}"))?;
    let engine = Engine::new(
        store.clone(),
        Arc::new(cairn_engine::SystemClock),
        Config::default(),
    );
    engine
        .apply("stats", CHAIN, None, None)
        .map_err(crate::client::failure)?;
    let filled = Instant::now();
    let now = chrono::Utc::now();
    let mut written = 0;
    while written < n {
        let upto = (written + 10_000).min(n);
        let range = written..upto;
        store
            .write(move |tx| {
                for i in range {
                    let id = format!("s{i}");
                    let (status, leaf) = if i % 5 == 0 {
                        (cairn_core::Status::Completed, "done")
                    } else {
                        (cairn_core::Status::Running, "s1")
                    };
                    let configuration = vec![leaf.to_string()];
                    tx.insert_instance(&InstanceRecord {
                        namespace: "stats".into(),
                        id: id.clone(),
                        machine: "soak-chain".into(),
                        machine_version: 1,
                        status,
                        configuration: configuration.clone(),
                        context: json!({}),
                        version: 1,
                        history_seq: 1,
                        labels: Default::default(),
                        parent: None,
                        last_error: None,
                        created_at: now,
                        updated_at: now,
                        entered: Default::default(),
                    })?;
                    tx.append_history(&HistoryRecord {
                        namespace: "stats".into(),
                        instance_id: id,
                        seq: 1,
                        kind: HistoryKind::Start,
                        version: 1,
                        event: String::new(),
                        payload: json!({}),
                        actor: "bench".into(),
                        reason: String::new(),
                        token_id: None,
                        on_behalf_of: None,
                        addressed_to: None,
                        from_configuration: Vec::new(),
                        to_configuration: configuration,
                        context: json!({}),
                        status,
                        idempotency_key: None,
                        microsteps: json!([]),
                        effects: json!([]),
                        time_in_states_ms: None,
                        created_at: now,
                    })?;
                }
                Ok::<(), cairn_store::Error>(())
            })
            .map_err(|e| anyhow!("{e}"))?;
        written = upto;
    }
    let fill_seconds = filled.elapsed().as_secs_f64();
    let mut l = Vec::with_capacity(200);
    let mut last = None;
    for _ in 0..200 {
        let t = Instant::now();
        last = Some(engine.stats("stats").map_err(crate::client::failure)?);
        l.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    l.sort_by(f64::total_cmp);
    let s = last.unwrap_or_default();
    let counted: u64 = s.instances.values().flat_map(|m| m.values()).sum();
    if counted != n || s.transitions != n {
        return Err(Failure::from(anyhow!(
            "stats counted {counted} instances and {} transitions of {n}",
            s.transitions
        )));
    }
    println!(
        "{}",
        json!({
            "peer": "cairn",
            "workload": "stats",
            "instances": n,
            "fill_seconds": round(fill_seconds, 1),
            "stats_p50_ms": round(percentile(&l, 0.50), 3),
            "stats_p99_ms": round(percentile(&l, 0.99), 3),
        })
    );
    Ok(())
}
