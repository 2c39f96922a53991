//! `cairn bench WORKLOAD`: the workloads of docs/benchmarks.md, one JSON line per run.
//!
//! - `W1-events`: a chain of five states and a final one; a workflow is a start and five
//!   `next` events, each a durable transition.
//! - `W2`: one step, an approval gate, completion; the approval call is timed until the
//!   instance is completed (the call returns once the completing transition committed).
//!
//! `--mode inproc` drives an engine in this process; `--mode http` starts `cairn serve`'s
//! app in this process on 127.0.0.1 and drives it over HTTP, one connection per client.
//! With `--acks`, W1 prints every acknowledged event as it is acknowledged (the crash test
//! reads these), and `--n 0` runs until killed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use cairn_engine::{Config, DecideRequest, Engine, SendRequest, StartRequest};
use cairn_store_any::{SqliteOptions as Options, SqliteStore};
use serde_json::json;

use crate::Failure;

pub(crate) const W1: &str = r#"
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

pub(crate) const W1_TASKS: &str = r#"
machine: w1-tasks
description: five durable steps, each a task for a worker
initial: s1
states:
  s1: { task: { queue: bench, action: step }, on: { task.done: s2 } }
  s2: { task: { queue: bench, action: step }, on: { task.done: s3 } }
  s3: { task: { queue: bench, action: step }, on: { task.done: s4 } }
  s4: { task: { queue: bench, action: step }, on: { task.done: s5 } }
  s5: { task: { queue: bench, action: step }, on: { task.done: done } }
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
    /// The workload: W1-events, W1-tasks, W2, W3, W4, W5 (needs `--database`), soak, stats
    /// or memory.
    workload: String,
    /// Workflows to run (default 2000; W2 500; W3 200; stats: instances, 1,000,000;
    /// memory: queued tasks and pending timers, 100,000); 0 runs W1 until killed.
    #[arg(long)]
    pub(crate) n: Option<u64>,
    /// Workflows in flight at once (W2 runs at 1).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// `inproc` (an engine in this process) or `http` (the server's app, over HTTP).
    #[arg(long, default_value = "inproc")]
    pub(crate) mode: String,
    /// Commit every transition alone (to measure what group commit gains).
    #[arg(long)]
    no_group_commit: bool,
    /// Print each acknowledged event as a JSON line.
    #[arg(long)]
    acks: bool,
    /// W3: how long each step's work takes, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub(crate) step_ms: u64,
    /// W3: which run of the workload process this is (internal).
    #[arg(long, hide = true)]
    pub(crate) w3_phase: Option<u8>,
    /// soak: how many minutes to run (default 10).
    #[arg(long)]
    pub(crate) minutes: Option<u64>,
    /// The WAL's limit in bytes (default the store's, 64 MiB; 0: no limit).
    #[arg(long)]
    pub(crate) wal_limit: Option<u64>,
    /// Meanwhile, start and delete instances in namespace `churn` and vacuum, over and
    /// over (the crash test kills the process during vacuums).
    #[arg(long, hide = true)]
    pub(crate) churn: bool,
    /// soak: seconds per reported "minute" (tests shorten it).
    #[arg(long, hide = true)]
    pub(crate) report_every: Option<u64>,
    /// W4: how many instances to load (default 1,000,000).
    #[arg(long)]
    pub(crate) instances: Option<u64>,
    /// W5: how many nodes each PostgreSQL run has, comma-separated (default 1,2,3).
    #[arg(long, default_value = "1,2,3")]
    pub(crate) nodes: String,
    /// W1-tasks: worker processes' worth of claimers.
    #[arg(long, default_value_t = 4)]
    pub(crate) workers: usize,
    /// W1-tasks: tasks each worker has in hand at once, its handlers running concurrently
    /// (1: one task at a time, each waiting for the previous one's commit).
    #[arg(long, default_value_t = 8)]
    pub(crate) worker_concurrency: usize,
}

impl Args {
    /// Workflows to run: `--n`, else the workload's default.
    pub(crate) fn n(&self) -> u64 {
        self.n.unwrap_or(match self.workload.as_str() {
            "W2" => 500,
            "W3" => 200,
            "stats" => 1_000_000,
            _ => 2000,
        })
    }
    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency.max(1)
    }
}

/// What a workload needs from Cairn: in-process or over HTTP.
/// A claimed bench task: id, attempt, state, instance.
pub(crate) type Task = (String, u32, String, String);

pub(crate) trait Driver: Send + Sync {
    fn start(&self, machine: &str, id: &str) -> Result<u64, String>;
    /// Sends an event; the instance's version after it.
    fn send(&self, id: &str, event: &str, key: &str) -> Result<u64, String>;
    /// Approves the instance's pending approval; its status after.
    fn approve(&self, id: &str) -> Result<String, String>;
    /// Completes the attempts `done` (task id, attempt) and claims up to `claim` tasks of
    /// queue `bench`, in one call: (task id, attempt, state, instance) of each claimed.
    fn report(
        &self,
        worker: &str,
        done: &[(String, u32)],
        claim: usize,
    ) -> Result<Vec<Task>, String>;
    /// Waits a little for work after an empty claim.
    fn idle(&self);
}

/// An engine in this process, on either backend.
pub(crate) struct InProc<S: cairn_store::Store = SqliteStore>(pub(crate) Engine<S>);

impl<S: cairn_store::Store + Send + Sync> Driver for InProc<S> {
    fn idle(&self) {
        self.0.tasks_ready().wait(Duration::from_millis(50));
    }
    fn report(
        &self,
        worker: &str,
        done: &[(String, u32)],
        claim: usize,
    ) -> Result<Vec<Task>, String> {
        let batch = cairn_engine::Batch {
            outcomes: done
                .iter()
                .map(|(task, attempt)| cairn_engine::Outcome {
                    task: task.clone(),
                    attempt: *attempt,
                    report: cairn_engine::Report::Completed {
                        output: json!({"ok": true}),
                    },
                    usage: cairn_engine::Usage::default(),
                })
                .collect(),
            claim: (claim > 0).then(|| cairn_engine::NextClaim {
                queues: vec!["bench".into()],
                worker: worker.into(),
                batch: claim,
                lease: Duration::from_secs(60),
            }),
            ..Default::default()
        };
        let r = self.0.report(batch).map_err(|e| e.to_string())?;
        if let Some(Err(e)) = r
            .outcomes
            .iter()
            .map(|o| o.result.as_ref())
            .find(|r| r.is_err())
        {
            return Err(format!("an outcome was refused: {e}"));
        }
        Ok(r.claimed
            .into_iter()
            .map(|t| (t.id, t.attempt, t.state, t.instance))
            .collect())
    }
    fn start(&self, machine: &str, id: &str) -> Result<u64, String> {
        let req = StartRequest {
            machine: machine.into(),
            id: Some(id.into()),
            ..Default::default()
        };
        self.0
            .start("bench", req)
            .map(|i| i.version)
            .map_err(|e| e.to_string())
    }
    fn send(&self, id: &str, event: &str, key: &str) -> Result<u64, String> {
        let req = SendRequest {
            event: event.into(),
            key: (!key.is_empty()).then(|| key.to_string()),
            ..Default::default()
        };
        self.0
            .send("bench", id, req)
            .map(|s| s.instance.version)
            .map_err(|e| e.to_string())
    }
    fn approve(&self, id: &str) -> Result<String, String> {
        self.0
            .decide("bench", id, DecideRequest::approve("bench", ""))
            .map(|d| d.instance.status.as_str().to_string())
            .map_err(|e| e.to_string())
    }
}

pub(crate) struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    /// A client of the server at `base`, on a connection of its own.
    pub(crate) fn new(base: &str) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Http {
            base: base.to_string(),
            agent,
        }
    }

    fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let mut resp = self
            .agent
            .post(format!("{}{path}", self.base))
            .send_json(&body)
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
        if status >= 400 {
            return Err(format!("{status}: {}", v["detail"]));
        }
        Ok(v)
    }
}

impl Http {
    /// Claims up to `batch` tasks of `queue` without waiting: how many it got.
    pub(crate) fn claim_raw(&self, queue: &str, batch: usize) -> Result<usize, String> {
        let v = self.post(
            "/v1/tasks/claim",
            json!({"queues": [queue], "worker": "memory", "batch": batch, "lease_ms": 60000}),
        )?;
        Ok(v.as_array().map_or(0, Vec::len))
    }
}

impl Driver for Http {
    /// The server's claim already waited (long poll).
    fn idle(&self) {}
    fn report(
        &self,
        worker: &str,
        done: &[(String, u32)],
        claim: usize,
    ) -> Result<Vec<Task>, String> {
        let outcomes: Vec<_> = done
            .iter()
            .map(|(task, attempt)| json!({"task": task, "attempt": attempt, "outcome": "completed", "output": {"ok": true}}))
            .collect();
        // With nothing to report, the server waits a little for a task (a long poll).
        let wait_ms = if done.is_empty() { 200 } else { 0 };
        let claim = (claim > 0).then(|| json!({"queues": ["bench"], "worker": worker, "batch": claim, "wait_ms": wait_ms, "lease_ms": 60000}));
        let v = self.post(
            "/v1/tasks/report",
            json!({"outcomes": outcomes, "claim": claim}),
        )?;
        if let Some(refused) = v["outcomes"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["applied"] != json!(true)))
        {
            return Err(format!(
                "an outcome was refused: {}",
                refused["problem"]["detail"]
            ));
        }
        Ok(v["claimed"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| {
                        (
                            t["id"].as_str().unwrap_or_default().to_string(),
                            t["attempt"].as_u64().unwrap_or(0) as u32,
                            t["state"].as_str().unwrap_or_default().to_string(),
                            t["instance"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
    fn start(&self, machine: &str, id: &str) -> Result<u64, String> {
        let v = self.post(
            "/v1/instances?namespace=bench",
            json!({"machine": machine, "id": id}),
        )?;
        v["version"]
            .as_u64()
            .ok_or_else(|| "no version".to_string())
    }
    fn send(&self, id: &str, event: &str, key: &str) -> Result<u64, String> {
        let key = (!key.is_empty()).then_some(key);
        let v = self.post(
            &format!("/v1/instances/{id}/events?namespace=bench"),
            json!({"event": event, "key": key}),
        )?;
        v["version"]
            .as_u64()
            .ok_or_else(|| "no version".to_string())
    }
    fn approve(&self, id: &str) -> Result<String, String> {
        let mut resp = self
            .agent
            .get(format!(
                "{}/v1/approvals?namespace=bench&instance={id}",
                self.base
            ))
            .call()
            .map_err(|e| e.to_string())?;
        let list: serde_json::Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
        let aid = list[0]["id"]
            .as_str()
            .ok_or("no pending approval")?
            .to_string();
        let v = self.post(
            &format!("/v1/approvals/{aid}/approve?namespace=bench"),
            json!({"actor": "bench"}),
        )?;
        Ok(v["instance"]["status"].as_str().unwrap_or("").to_string())
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Removes a temporary data directory when the bench ends.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The data directory a benchmark runs in: `data` when given (kept), else a fresh one
/// under the system's temporary directory named `cairn-<what>-<pid>`, removed when the
/// returned guard drops.
pub(crate) fn bench_dir(data: Option<PathBuf>, what: &str) -> (PathBuf, Option<TempDir>) {
    match data {
        Some(d) => (d, None),
        None => {
            let t = std::env::temp_dir().join(format!("cairn-{what}-{}", std::process::id()));
            (t.clone(), Some(TempDir(t)))
        }
    }
}

pub fn run(data: Option<PathBuf>, database: Option<String>, a: Args) -> Result<(), Failure> {
    if a.workload == "W3" {
        return super::w3::run(data, a);
    }
    if a.workload == "W5" {
        return super::w5::run(database, &a);
    }
    if a.workload == "soak" {
        return super::soak::run(data, &a);
    }
    if a.workload == "stats" {
        return super::soak::stats(data, &a);
    }
    if a.workload == "memory" {
        return super::memory::run(&a);
    }
    if a.workload == "W4" {
        return super::w4::run(data, database, &a);
    }
    if !matches!(a.workload.as_str(), "W1-events" | "W1-tasks" | "W2") {
        return Err(Failure::usage(anyhow!(
            "unknown workload `{}`; available: W1-events, W1-tasks, W2, W3, W4, W5, soak, stats, memory",
            a.workload
        )));
    }
    if !matches!(a.mode.as_str(), "inproc" | "http") {
        return Err(Failure::usage(anyhow!(
            "unknown mode `{}`; expected inproc or http",
            a.mode
        )));
    }
    let (dir, _tmp) = bench_dir(data, "bench");
    let options = Options {
        group_commit: !a.no_group_commit,
        wal_limit: a.wal_limit.unwrap_or(Options::default().wal_limit),
        ..Options::default()
    };
    let store = SqliteStore::open(&dir, options).map_err(|e| Failure::from(anyhow!("{e}")))?;
    let durability = store.durability().map_err(|e| anyhow!("{e}"))?.label();
    let engine = Engine::new(
        store,
        Arc::new(cairn_engine::SystemClock),
        Config::default(),
    );
    for def in [W1, W1_TASKS, W2] {
        engine
            .apply("bench", def, None, None)
            .map_err(crate::client::failure)?;
    }
    let _churn = a.churn.then(|| churn(engine.clone()));
    let mut _runtime = None;
    let driver: Arc<dyn Driver> = match a.mode.as_str() {
        "inproc" => Arc::new(InProc(engine)),
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| anyhow!("{e}"))?;
            let ctx = cairn_server::Ctx::new(engine, cairn_server::Settings::default());
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .map_err(|e| anyhow!("{e}"))?;
            let addr = listener.local_addr().map_err(|e| anyhow!("{e}"))?;
            rt.spawn(cairn_server::serve(
                listener,
                cairn_server::app(ctx),
                std::future::pending(),
            ));
            _runtime = Some(rt);
            Arc::new(Http::new(&format!("http://{addr}")))
        }
    };
    let line = match a.workload.as_str() {
        "W2" => w2(driver.as_ref(), &a)?,
        "W1-tasks" => w1_tasks(driver, &a, a.workers.max(1))?,
        _ => w1(driver, &a)?,
    };
    let mut line = line;
    line["peer"] = json!("cairn");
    line["workload"] = json!(a.workload);
    line["mode"] = json!(a.mode);
    line["durability"] = json!(durability);
    line["group_commit"] = json!(!a.no_group_commit);
    println!("{line}");
    Ok(())
}

/// Starts and deletes padded instances in namespace `churn` and vacuums, until dropped: the
/// deletions free pages that each vacuum moves and gives back under the load.
fn churn(engine: Engine<SqliteStore>) -> cairn_runtime::Running {
    let mut round = 0u64;
    let churn = cairn_runtime::Periodic::new("cairn-churn", Duration::from_millis(1), move || {
        round += 1;
        if engine.apply("churn", W1, None, None).is_err() {
            return false;
        }
        let pad = "x".repeat(16 * 1024);
        for i in 0..20 {
            let start = cairn_engine::StartRequest {
                machine: "w1-chain".into(),
                id: Some(format!("c{round}-{i}")),
                input: json!({"pad": pad}),
                ..Default::default()
            };
            let _ = engine.start("churn", start);
        }
        for i in 0..20 {
            let _ = engine.delete("churn", &format!("c{round}-{i}"));
        }
        let _ = engine.vacuum();
        true
    });
    cairn_runtime::Running::spawn(churn).expect("starting a thread")
}

pub(crate) fn w1(driver: Arc<dyn Driver>, a: &Args) -> Result<serde_json::Value, Failure> {
    let run_id = {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        format!("r{:x}{:x}", t.as_secs(), t.subsec_nanos())
    };
    let next = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(a.n() as usize)));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let started = Instant::now();
    let threads: Vec<_> = (0..a.concurrency.max(1))
        .map(|_| {
            let (driver, next, latencies, out, run_id) = (
                Arc::clone(&driver),
                Arc::clone(&next),
                Arc::clone(&latencies),
                Arc::clone(&out),
                run_id.clone(),
            );
            let (n, acks) = (a.n(), a.acks);
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let w = next.fetch_add(1, Ordering::Relaxed);
                    if n > 0 && w >= n {
                        return Ok(());
                    }
                    let t = Instant::now();
                    let id = format!("{run_id}-{w}");
                    driver.start("w1-chain", &id)?;
                    if acks {
                        ack(&out, &id, 1, "");
                    }
                    for step in 0..5 {
                        let key = format!("{id}:{step}");
                        let version = driver.send(&id, "next", &key)?;
                        if acks {
                            ack(&out, &id, version, &key);
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
            .map_err(|e| anyhow!("{e}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let n = l.len() as f64;
    Ok(json!({
        "n": l.len(),
        "concurrency": a.concurrency,
        "seconds": round(seconds, 3),
        "workflows_per_s": round(n / seconds, 1),
        "step_commits_per_s": round(n * 6.0 / seconds, 1),
        "p50_ms": round(percentile(&l, 0.50), 2),
        "p99_ms": round(percentile(&l, 0.99), 2),
    }))
}

/// W1-tasks: clients keep `concurrency` workflows in flight; worker threads claim tasks in
/// batches and complete them; a workflow's latency runs from its start until its fifth
/// task's completion commits (and with it, the instance's completion).
pub(crate) fn w1_tasks(
    driver: Arc<dyn Driver>,
    a: &Args,
    workers: usize,
) -> Result<serde_json::Value, Failure> {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    let n = if a.n() == 0 { 2000 } else { a.n() };
    // Unique per run: W5 runs several times on one database.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run_id = format!(
        "t{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    let started_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let in_flight = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Signalled when a workflow finishes (its entry leaves `started_at`).
    let finished_cv = Arc::new(std::sync::Condvar::new());
    let start = Instant::now();
    let per_worker = a.worker_concurrency.max(1);
    // Each worker: `per_worker` handlers, and a loop that reports what they finished and
    // claims as many tasks as they have room for, in one call (backpressure: it never
    // holds more tasks than handlers). Handlers never wait for a commit.
    let worker_threads: Vec<_> = (0..workers)
        .map(|w| {
            let (driver, started_at, latencies, in_flight, done, stop, finished_cv) = (
                Arc::clone(&driver),
                Arc::clone(&started_at),
                Arc::clone(&latencies),
                Arc::clone(&in_flight),
                Arc::clone(&done),
                Arc::clone(&stop),
                Arc::clone(&finished_cv),
            );
            std::thread::spawn(move || -> Result<(), String> {
                let name = format!("bench-worker-{w}");
                let finish = |instance: &str| {
                    let t0 = started_at.lock().ok().and_then(|mut m| m.remove(instance));
                    if let (Some(t0), Ok(mut l)) = (t0, latencies.lock()) {
                        l.push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                    finished_cv.notify_all();
                };
                let (to_handlers, tasks) = std::sync::mpsc::sync_channel::<Task>(per_worker);
                let (finished, results) = std::sync::mpsc::channel::<Task>();
                let tasks = Arc::new(Mutex::new(tasks));
                std::thread::scope(|s| -> Result<(), String> {
                    for _ in 0..per_worker {
                        let (tasks, finished) = (Arc::clone(&tasks), finished.clone());
                        // The handler: the work is nothing, its result is the task.
                        s.spawn(move || {
                            loop {
                                let next = match tasks.lock() {
                                    Ok(rx) => rx.recv(),
                                    Err(_) => return,
                                };
                                let Ok(task) = next else { return };
                                if finished.send(task).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    drop(finished);
                    let r = (|| -> Result<(), String> {
                        let mut in_hand = 0usize;
                        let mut idle = false;
                        while !stop.load(Ordering::Relaxed) {
                            let mut ended: Vec<Task> = Vec::new();
                            // Full, or idle with tasks in hand: wait for a result.
                            if in_hand > 0 && (in_hand == per_worker || idle) {
                                match results.recv_timeout(Duration::from_millis(50)) {
                                    Ok(t) => ended.push(t),
                                    Err(_) => continue,
                                }
                            }
                            ended.extend(results.try_iter());
                            in_hand -= ended.len();
                            let room = per_worker - in_hand;
                            let reported: Vec<(String, u32)> =
                                ended.iter().map(|t| (t.0.clone(), t.1)).collect();
                            let claimed = driver.report(&name, &reported, room.min(32))?;
                            for t in &ended {
                                if t.2 == "s5" {
                                    finish(&t.3);
                                }
                            }
                            idle = claimed.is_empty();
                            if idle && ended.is_empty() && in_hand == 0 {
                                driver.idle();
                            }
                            in_hand += claimed.len();
                            for t in claimed {
                                if to_handlers.send(t).is_err() {
                                    return Err("the handlers stopped".into());
                                }
                            }
                        }
                        Ok(())
                    })();
                    drop(to_handlers);
                    r
                })
            })
        })
        .collect();
    // `concurrency` clients, each starting a workflow and waiting for it to finish (as in
    // W1-events), so starts commit together rather than one after another.
    let next = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..a.concurrency.max(1))
        .map(|_| {
            let (driver, started_at, in_flight, next, finished_cv, stop, run_id) = (
                Arc::clone(&driver),
                Arc::clone(&started_at),
                Arc::clone(&in_flight),
                Arc::clone(&next),
                Arc::clone(&finished_cv),
                Arc::clone(&stop),
                run_id.clone(),
            );
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let w = next.fetch_add(1, Ordering::Relaxed);
                    if w >= n || stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let id = format!("{run_id}-{w}");
                    started_at
                        .lock()
                        .map_err(|_| "poisoned")?
                        .insert(id.clone(), Instant::now());
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    driver.start("w1-tasks", &id)?;
                    let mut m = started_at.lock().map_err(|_| "poisoned")?;
                    while m.contains_key(&id) && !stop.load(Ordering::Relaxed) {
                        m = finished_cv
                            .wait_timeout(m, Duration::from_millis(100))
                            .map_err(|_| "poisoned")?
                            .0;
                    }
                }
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(1));
        if worker_threads.iter().any(|t| t.is_finished())
            || clients
                .iter()
                .any(|t| t.is_finished() && next.load(Ordering::Relaxed) < n)
        {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    finished_cv.notify_all();
    for t in clients {
        t.join()
            .map_err(|_| anyhow!("a client panicked"))?
            .map_err(|e| anyhow!("{e}"))?;
    }
    for t in worker_threads {
        t.join()
            .map_err(|_| anyhow!("a worker panicked"))?
            .map_err(|e| anyhow!("{e}"))?;
    }
    let mut l = latencies.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let finished = l.len() as f64;
    Ok(json!({
        "n": l.len(),
        "concurrency": a.concurrency,
        "workers": workers,
        "worker_concurrency": per_worker,
        "seconds": round(seconds, 3),
        "workflows_per_s": round(finished / seconds, 1),
        "step_commits_per_s": round(finished * 6.0 / seconds, 1),
        "p50_ms": round(percentile(&l, 0.50), 2),
        "p99_ms": round(percentile(&l, 0.99), 2),
    }))
}

fn w2(driver: &dyn Driver, a: &Args) -> Result<serde_json::Value, Failure> {
    let n = if a.n() == 0 { 500 } else { a.n() };
    let run_id = format!("w2-{}", std::process::id());
    let mut rounds = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for w in 0..n {
        let id = format!("{run_id}-{w}");
        driver
            .start("w2-approval", &id)
            .map_err(|e| anyhow!("{e}"))?;
        driver.send(&id, "next", "").map_err(|e| anyhow!("{e}"))?;
        let t = Instant::now();
        let status = driver.approve(&id).map_err(|e| anyhow!("{e}"))?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if status != "completed" {
            return Err(Failure::from(anyhow!(
                "W2 instance {id} is {status} after its approval"
            )));
        }
        rounds.push(ms);
    }
    let seconds = started.elapsed().as_secs_f64();
    rounds.sort_by(|a, b| a.total_cmp(b));
    Ok(json!({
        "n": n,
        "concurrency": 1,
        "seconds": round(seconds, 3),
        "workflows_per_s": round(n as f64 / seconds, 1),
        "approval_round_trip_p50_ms": round(percentile(&rounds, 0.50), 3),
        "approval_round_trip_p99_ms": round(percentile(&rounds, 0.99), 3),
    }))
}

fn ack(out: &Mutex<std::io::Stdout>, id: &str, version: u64, key: &str) {
    use std::io::Write;
    if let Ok(mut o) = out.lock() {
        let _ = writeln!(o, "{}", json!({"ack": id, "version": version, "key": key}));
        let _ = o.flush();
    }
}
