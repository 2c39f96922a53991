//! `cairn bench W3`: crash recovery (docs/benchmarks.md W3).
//!
//! The bench runs the workload in a child process (`--w3-phase 1`): it starts `n`
//! workflows of five slow steps, each step a task that in-process workers execute (a sleep
//! of `--step-ms`) and complete. Every execution is reported on the child's stdout before
//! it begins and after its completion is acknowledged. Once every workflow has finished
//! step 2, the bench kills the child with SIGKILL and starts a second one on the same data
//! (`--w3-phase 2`), which runs until every workflow is completed. The report counts the
//! steps executed again after the restart (none that had completed may be; at most the
//! one in flight per workflow), the time from restart to all completed, and `verify` over
//! every instance.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use cairn_engine::{Config, Engine, StartRequest};
use cairn_store_any::{SqliteOptions as Options, SqliteStore};
use serde_json::{Value, json};

use super::bench::{Args, bench_dir, round};
use crate::Failure;

const W3: &str = r#"
machine: w3-slow
description: five slow steps, each a task for a worker
initial: s1
states:
  s1: { task: { queue: w3, action: step, retry: { max_attempts: 5, initial: 100ms } }, on: { task.done: s2 } }
  s2: { task: { queue: w3, action: step, retry: { max_attempts: 5, initial: 100ms } }, on: { task.done: s3 } }
  s3: { task: { queue: w3, action: step, retry: { max_attempts: 5, initial: 100ms } }, on: { task.done: s4 } }
  s4: { task: { queue: w3, action: step, retry: { max_attempts: 5, initial: 100ms } }, on: { task.done: s5 } }
  s5: { task: { queue: w3, action: step, retry: { max_attempts: 5, initial: 100ms } }, on: { task.done: done } }
  done: { type: final }
"#;

const NS: &str = "bench";

/// How long the workload may go without reporting anything before the bench gives up.
fn stall_limit(a: &Args) -> Duration {
    Duration::from_secs(30).max(lease(a) * 10)
}

fn lease(a: &Args) -> Duration {
    Duration::from_millis((a.step_ms * 5).max(1000))
}

fn open(dir: &Path) -> Result<Engine<SqliteStore>, Failure> {
    let store =
        SqliteStore::open(dir, Options::default()).map_err(|e| Failure::from(anyhow!("{e}")))?;
    Ok(Engine::new(
        store,
        Arc::new(cairn_engine::SystemClock),
        Config::default(),
    ))
}

pub fn run(data: Option<PathBuf>, a: Args) -> Result<(), Failure> {
    if a.mode != "inproc" {
        return Err(Failure::usage(anyhow!(
            "W3 runs in-process only (its process is the one killed)"
        )));
    }
    if a.n() == 0 {
        return Err(Failure::usage(anyhow!("W3 needs --n of at least 1")));
    }
    if let Some(phase) = a.w3_phase {
        let dir = data.ok_or_else(|| Failure::usage(anyhow!("W3 phases need --data")))?;
        return child(&dir, &a, phase);
    }
    let (dir, _tmp) = bench_dir(data, "w3");
    if dir.join("cairn.db").exists() {
        return Err(Failure::usage(anyhow!(
            "W3 needs an empty data directory; {} holds a database",
            dir.display()
        )));
    }
    parent(&dir, &a)
}

/// What one run of the workload process reported.
#[derive(Default)]
struct Phase {
    /// Executions begun, per (instance, state).
    starts: HashMap<(String, String), u32>,
    /// Executions whose completion was acknowledged.
    done: HashSet<(String, String)>,
    ready: Option<Duration>,
    completed: Option<Duration>,
}

impl Phase {
    fn take(&mut self, line: &Value, t0: Instant) -> Option<(String, String)> {
        let key = || {
            (
                line["i"].as_str().unwrap_or_default().to_string(),
                line["s"].as_str().unwrap_or_default().to_string(),
            )
        };
        match line["e"].as_str() {
            Some("start") => *self.starts.entry(key()).or_default() += 1,
            Some("done") => {
                self.done.insert(key());
                return Some(key());
            }
            Some("ready") => self.ready = Some(t0.elapsed()),
            Some("all_completed") => self.completed = Some(t0.elapsed()),
            _ => {}
        }
        None
    }
}

fn spawn(dir: &Path, a: &Args, phase: u8) -> Result<(Child, Receiver<Value>), Failure> {
    let exe = std::env::current_exe().map_err(|e| anyhow!("{e}"))?;
    let mut child = Command::new(exe)
        .arg("--data")
        .arg(dir)
        .args(["bench", "W3", "--n", &a.n().to_string()])
        .args(["--concurrency", &a.concurrency().to_string()])
        .args(["--step-ms", &a.step_ms.to_string()])
        .args(["--w3-phase", &phase.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow!("starting the W3 process: {e}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    Ok((child, rx))
}

fn parent(dir: &Path, a: &Args) -> Result<(), Failure> {
    let n = a.n();
    // Phase 1: run until every workflow has finished step 2, then SIGKILL.
    let t0 = Instant::now();
    let (mut child, rx) = spawn(dir, a, 1)?;
    let mut first = Phase::default();
    let mut step2 = 0u64;
    loop {
        match rx.recv_timeout(stall_limit(a)) {
            Ok(line) => {
                if let Some((_, s)) = first.take(&line, t0)
                    && s == "s2"
                {
                    step2 += 1;
                    if step2 == n {
                        break;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(|e| anyhow!("{e}"))?;
                return Err(Failure::from(anyhow!(
                    "the W3 process ended ({status}) before every workflow finished step 2"
                )));
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                return Err(Failure::from(anyhow!(
                    "W3 phase 1 made no progress for {:?}",
                    stall_limit(a)
                )));
            }
        }
    }
    // Kill with a step in flight, as the workload means: on a loaded machine the other
    // workflows' next steps may not have begun yet when the last one finishes step 2.
    // And read what is already in the pipe before deciding: a start read from a backlog
    // may have finished since (its `done` waiting behind it), and the kill would then
    // land with nothing in flight.
    let deadline = Instant::now() + stall_limit(a);
    loop {
        while let Ok(line) = rx.try_recv() {
            first.take(&line, t0);
        }
        let in_flight = first.starts.keys().any(|k| !first.done.contains(k));
        if in_flight || Instant::now() >= deadline {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                first.take(&line, t0);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // `Child::kill` is SIGKILL on Unix.
    child
        .kill()
        .map_err(|e| anyhow!("killing the W3 process: {e}"))?;
    child.wait().map_err(|e| anyhow!("{e}"))?;
    // Lines written before the kill are still in the pipe.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        first.take(&line, t0);
    }

    // Phase 2: restart on the same data; run until every workflow is completed.
    let t1 = Instant::now();
    let (mut child, rx) = spawn(dir, a, 2)?;
    let mut second = Phase::default();
    loop {
        match rx.recv_timeout(stall_limit(a)) {
            Ok(line) => {
                second.take(&line, t1);
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                return Err(Failure::from(anyhow!(
                    "W3 phase 2 made no progress for {:?}",
                    stall_limit(a)
                )));
            }
        }
    }
    let status = child.wait().map_err(|e| anyhow!("{e}"))?;
    let completed = second.completed.ok_or_else(|| {
        anyhow!("the restarted W3 process ended ({status}) before every workflow completed")
    })?;

    // Re-executions: a step begun again after the restart, or twice in one run.
    let mut reexecuted_completed = 0u64;
    let mut reexecuted_in_flight = 0u64;
    let mut in_flight_per_instance: HashMap<&str, u64> = HashMap::new();
    for (key, &count) in &second.starts {
        let before = first.starts.get(key).copied().unwrap_or(0);
        if before == 0 {
            continue;
        }
        if first.done.contains(key) {
            reexecuted_completed += u64::from(count);
        } else {
            reexecuted_in_flight += u64::from(count);
            *in_flight_per_instance.entry(key.0.as_str()).or_default() += 1;
        }
    }
    let repeated_within_a_run = first
        .starts
        .values()
        .chain(second.starts.values())
        .map(|&c| u64::from(c.saturating_sub(1)))
        .sum::<u64>();
    let in_flight_at_kill = first
        .starts
        .keys()
        .filter(|k| !first.done.contains(*k))
        .count();

    // verify every instance, on the data the restarted process left.
    let engine = open(dir)?;
    let ids = engine
        .instance_ids(Some(NS))
        .map_err(crate::client::failure)?;
    let mut verified_ok = 0u64;
    let mut unfinished = 0u64;
    for (ns, id) in &ids {
        if engine.verify(ns, id).map_err(crate::client::failure)?.ok {
            verified_ok += 1;
        }
        if engine
            .get(ns, id)
            .map_err(crate::client::failure)?
            .status
            .as_str()
            != "completed"
        {
            unfinished += 1;
        }
    }
    let line = json!({
        "peer": "cairn",
        "workload": "W3",
        "mode": "inproc",
        "n": n,
        "steps": 5,
        "step_ms": a.step_ms,
        "concurrency": a.concurrency(),
        "lease_ms": lease(a).as_millis() as u64,
        "steps_completed_before_kill": first.done.len(),
        "steps_in_flight_at_kill": in_flight_at_kill,
        "reexecuted_completed_steps": reexecuted_completed,
        "reexecuted_in_flight_steps": reexecuted_in_flight,
        "max_reexecuted_per_workflow": in_flight_per_instance.values().max().copied().unwrap_or(0),
        "repeated_executions_within_a_run": repeated_within_a_run,
        "restart_to_ready_ms": second.ready.map(|d| round(d.as_secs_f64() * 1000.0, 1)),
        "restart_to_all_completed_ms": round(completed.as_secs_f64() * 1000.0, 1),
        "instances": ids.len(),
        "unfinished": unfinished,
        "verify": if verified_ok == ids.len() as u64 { "ok" } else { "failed" },
        "verified": verified_ok,
    });
    println!("{line}");
    if reexecuted_completed > 0 || verified_ok != ids.len() as u64 || unfinished > 0 {
        return Err(Failure::from(anyhow!(
            "W3 failed its claims: {reexecuted_completed} completed steps re-executed, \
             {} of {} instances verified, {unfinished} unfinished",
            verified_ok,
            ids.len()
        )));
    }
    Ok(())
}

/// One run of the workload process: reports every execution on stdout as it happens.
fn child(dir: &Path, a: &Args, phase: u8) -> Result<(), Failure> {
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = {
        let out = Arc::clone(&out);
        move |v: Value| {
            if let Ok(mut o) = out.lock() {
                let _ = writeln!(o, "{v}");
                let _ = o.flush();
            }
        }
    };
    let engine = open(dir)?;
    let n = a.n();
    let id = |k: u64| format!("w3-{k}");
    if phase == 1 {
        engine
            .apply(NS, W3, None, None)
            .map_err(crate::client::failure)?;
        for k in 0..n {
            let req = StartRequest {
                machine: "w3-slow".into(),
                id: Some(id(k)),
                ..Default::default()
            };
            engine.start(NS, req).map_err(crate::client::failure)?;
        }
    }
    say(json!({"e": "ready"}));
    let (step, lease) = (Duration::from_millis(a.step_ms), lease(a));
    for w in 0..a.concurrency() {
        let (engine, say) = (engine.clone(), say.clone());
        std::thread::spawn(move || {
            let worker = format!("w3-{phase}-{w}");
            loop {
                let claimed = match engine.claim(&["w3".into()], &worker, 1, lease) {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if claimed.is_empty() {
                    engine.tasks_ready().wait(Duration::from_millis(100));
                    continue;
                }
                for t in claimed {
                    say(json!({"e": "start", "i": t.instance, "s": t.state, "attempt": t.attempt}));
                    std::thread::sleep(step);
                    if engine
                        .complete(&t.id, t.attempt, json!({"ok": true}), Default::default())
                        .is_ok()
                    {
                        say(json!({"e": "done", "i": t.instance, "s": t.state}));
                    }
                }
            }
        });
    }
    // Until every workflow is completed.
    let mut pending: Vec<String> = (0..n).map(id).collect();
    while !pending.is_empty() {
        std::thread::sleep(Duration::from_millis(20));
        pending.retain(|i| {
            engine
                .get(NS, i)
                .map(|inst| inst.status.as_str() != "completed")
                .unwrap_or(true)
        });
    }
    say(json!({"e": "all_completed"}));
    std::process::exit(0)
}
