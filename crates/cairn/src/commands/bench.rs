//! `cairn bench WORKLOAD`: the workloads of BENCHMARKS.md, one JSON line per run.
//!
//! `W1-events`: a chain of five states and a final one; a workflow is a start and five
//! `next` events, each a durable transition. With `--acks`, every acknowledged event is
//! printed as it is acknowledged (the crash test reads these), and `--n 0` runs until
//! killed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use cairn_engine::{Config, Engine, SendRequest, StartRequest};
use cairn_store_sqlite::{Options, SqliteStore};
use serde_json::json;

use crate::Failure;

const W1: &str = r#"
machine: w1-chain
description: five durable steps in a chain
initial: s1
states:
  s1: { on: { next: s2 } }
  s2: { on: { next: s3 } }
  s3: { on: { next: s4 } }
  s4: { on: { next: s5 } }
  s5: { on: { next: done } }
  done: { type: final }
"#;

const W2: &str = r#"
machine: w2-approval
description: one step, an approval gate, completion
initial: step
states:
  step: { on: { next: gate } }
  gate:
    approval: { prompt: "Continue?" }
    on: { approve: done }
  done: { type: final }
"#;

#[derive(clap::Args)]
pub struct Args {
    /// The workload: W1-events or W2.
    workload: String,
    /// Workflows to run; 0 runs until killed.
    #[arg(long, default_value_t = 2000)]
    n: u64,
    /// Workflows in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// `inproc` (an engine in this process); `http` arrives with `cairn serve`.
    #[arg(long, default_value = "inproc")]
    mode: String,
    /// Commit every transition alone (to measure what group commit gains).
    #[arg(long)]
    no_group_commit: bool,
    /// Print each acknowledged event as a JSON line.
    #[arg(long)]
    acks: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(data: Option<PathBuf>, a: Args) -> Result<(), Failure> {
    if !matches!(a.workload.as_str(), "W1-events" | "W2") {
        return Err(Failure::usage(anyhow!(
            "unknown workload `{}`; available: W1-events, W2",
            a.workload
        )));
    }
    if a.mode != "inproc" {
        return Err(Failure::usage(anyhow!(
            "mode `{}` is not available yet; use --mode inproc",
            a.mode
        )));
    }
    let _tmp;
    let dir = match data {
        Some(d) => d,
        None => {
            let t = std::env::temp_dir().join(format!("cairn-bench-{}", std::process::id()));
            _tmp = TempDir(t.clone());
            t
        }
    };
    let options = Options {
        group_commit: !a.no_group_commit,
        ..Options::default()
    };
    let store = SqliteStore::open(&dir, options).map_err(|e| Failure::from(anyhow!("{e}")))?;
    let durability = store.durability().map_err(|e| anyhow!("{e}"))?.label();
    let engine = Engine::new(
        store,
        Arc::new(cairn_engine::SystemClock),
        Config::default(),
    );
    engine
        .apply("bench", W1, None, Some("w1.yaml"))
        .map_err(crate::client::failure)?;
    if a.workload == "W2" {
        return w2(&engine, &durability, &a);
    }

    let run_id = uuid_like();
    let next = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(a.n as usize)));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let started = Instant::now();
    let threads: Vec<_> = (0..a.concurrency.max(1))
        .map(|_| {
            let (engine, next, latencies, out, run_id) = (
                engine.clone(),
                Arc::clone(&next),
                Arc::clone(&latencies),
                Arc::clone(&out),
                run_id.clone(),
            );
            let (n, acks) = (a.n, a.acks);
            std::thread::spawn(move || -> Result<(), cairn_engine::Error> {
                loop {
                    let w = next.fetch_add(1, Ordering::Relaxed);
                    if n > 0 && w >= n {
                        return Ok(());
                    }
                    let t = Instant::now();
                    let id = format!("{run_id}-{w}");
                    engine.start(
                        "bench",
                        StartRequest {
                            machine: "w1-chain".into(),
                            id: Some(id.clone()),
                            ..Default::default()
                        },
                    )?;
                    if acks {
                        ack(&out, &id, 1, "");
                    }
                    for step in 0..5 {
                        let key = format!("{id}:{step}");
                        let req = SendRequest {
                            event: "next".into(),
                            key: Some(key.clone()),
                            ..Default::default()
                        };
                        let sent = engine.send("bench", &id, req)?;
                        if acks {
                            ack(&out, &id, sent.instance.version, &key);
                        }
                    }
                    if let Ok(mut l) = latencies.lock() {
                        l.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow!("a bench thread panicked"))?
            .map_err(crate::client::failure)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let n = l.len() as f64;
    let line = json!({
        "peer": "cairn",
        "workload": a.workload,
        "mode": a.mode,
        "durability": durability,
        "group_commit": !a.no_group_commit,
        "n": l.len(),
        "concurrency": a.concurrency,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "workflows_per_s": (n / seconds * 10.0).round() / 10.0,
        "step_commits_per_s": (n * 6.0 / seconds * 10.0).round() / 10.0,
        "p50_ms": (percentile(&l, 0.50) * 100.0).round() / 100.0,
        "p99_ms": (percentile(&l, 0.99) * 100.0).round() / 100.0,
    });
    println!("{line}");
    Ok(())
}

/// W2: start, one step, then time the approval call until the instance is completed
/// (in-process, `approve` returns once the completing transition is committed).
fn w2(engine: &Engine<SqliteStore>, durability: &str, a: &Args) -> Result<(), Failure> {
    engine
        .apply("bench", W2, None, Some("w2.yaml"))
        .map_err(crate::client::failure)?;
    let n = if a.n == 0 { 500 } else { a.n };
    let run_id = uuid_like();
    let mut rounds = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for w in 0..n {
        let id = format!("{run_id}-{w}");
        engine
            .start(
                "bench",
                StartRequest {
                    machine: "w2-approval".into(),
                    id: Some(id.clone()),
                    ..Default::default()
                },
            )
            .map_err(crate::client::failure)?;
        engine
            .send(
                "bench",
                &id,
                SendRequest {
                    event: "next".into(),
                    ..Default::default()
                },
            )
            .map_err(crate::client::failure)?;
        let t = Instant::now();
        let d = engine
            .decide(
                "bench",
                &id,
                cairn_engine::DecideRequest::approve("bench", ""),
            )
            .map_err(crate::client::failure)?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if d.instance.status != cairn_core::Status::Completed {
            return Err(Failure::from(anyhow!(
                "W2 instance {id} is {} after its approval",
                d.instance.status.as_str()
            )));
        }
        rounds.push(ms);
    }
    let seconds = started.elapsed().as_secs_f64();
    rounds.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        json!({
            "peer": "cairn",
            "workload": "W2",
            "mode": a.mode,
            "durability": durability,
            "n": n,
            "concurrency": 1,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "workflows_per_s": (n as f64 / seconds * 10.0).round() / 10.0,
            "approval_round_trip_p50_ms": (percentile(&rounds, 0.50) * 1000.0).round() / 1000.0,
            "approval_round_trip_p99_ms": (percentile(&rounds, 0.99) * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}

fn ack(out: &Mutex<std::io::Stdout>, id: &str, version: u64, key: &str) {
    use std::io::Write;
    if let Ok(mut o) = out.lock() {
        let _ = writeln!(o, "{}", json!({"ack": id, "version": version, "key": key}));
        let _ = o.flush();
    }
}

/// A run id unique enough to keep runs on one data directory apart.
fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    format!("r{:x}{:x}", t.as_secs(), t.subsec_nanos())
}

/// Removes a temporary data directory when the bench ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
