//! `cairn tasks` lists tasks; `cairn worker --queue Q -- COMMAND [ARGS]...` is a
//! ready-made worker: it claims tasks and runs COMMAND once per task, with the task input
//! as JSON on stdin and these variables set: `CAIRN_TASK_ID`, `CAIRN_TASK_ATTEMPT`
//! (together the idempotency key of the command's own side effects), `CAIRN_TASK_ACTION`,
//! `CAIRN_TASK_STATE`, `CAIRN_INSTANCE`, `CAIRN_NAMESPACE`. Exit status 0 completes the
//! task with stdout as output (JSON, else `{"stdout": text}`); any other status fails the
//! attempt (retried per the state's policy) with the end of stderr as the error. While the
//! command runs its lease is renewed by heartbeats. Between tasks the worker also fires
//! due timers and reclaims expired leases.

use std::process::Command;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::{Value, json};

use crate::client::Client;
use crate::commands::lifecycle::parse_duration;
use crate::{Failure, Global};

const MAX_OUTPUT: usize = 1024 * 1024;
const MAX_ERROR: usize = 4096;

#[derive(clap::Args)]
pub struct Tasks {
    /// Only this queue's tasks.
    #[arg(long)]
    queue: Option<String>,
    /// pending, leased, completed, failed or cancelled.
    #[arg(long)]
    status: Option<String>,
    /// Only this instance's tasks.
    #[arg(long)]
    instance: Option<String>,
}

pub fn tasks(g: &Global, c: &dyn Client, a: Tasks) -> Result<(), Failure> {
    let status = match &a.status {
        Some(s) => Some(cairn_store::TaskStatus::parse(s).ok_or_else(|| {
            Failure::usage(anyhow!("unknown task status `{s}`; expected pending, leased, completed, failed or cancelled"))
        })?),
        None => None,
    };
    let list = c.tasks(a.queue.as_deref(), status, a.instance.as_deref())?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("serialises")
        );
    } else {
        for t in list {
            println!(
                "{}  {}  queue {}  action {}  {}  attempt {}  instance {} ({}){}",
                t.id,
                t.status,
                t.queue,
                t.action,
                t.lease_owner
                    .as_deref()
                    .map(|w| format!("by {w}"))
                    .unwrap_or_default(),
                t.attempt,
                t.instance,
                t.state,
                t.error
                    .as_deref()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Worker {
    /// The queue(s) to take tasks from; repeatable.
    #[arg(long, required = true)]
    queue: Vec<String>,
    /// The worker's name, recorded with every attempt.
    #[arg(long)]
    name: Option<String>,
    /// The lease of a claim, renewed while the command runs (e.g. 30s).
    #[arg(long, default_value = "30s")]
    lease: String,
    /// Stop after handling this many tasks.
    #[arg(long)]
    max_tasks: Option<u64>,
    /// Stop when no task is waiting.
    #[arg(long)]
    until_idle: bool,
    /// How many tasks to run at once, each its own command (claims only as many as run).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// The command to run per task, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

pub fn worker(g: &Global, c: &(dyn Client + Sync), a: Worker) -> Result<(), Failure> {
    let lease = parse_duration("--lease", &a.lease)?
        .to_std()
        .map_err(|_| Failure::usage(anyhow!("`--lease` must be positive")))?;
    let name = a.name.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
            std::process::id()
        )
    });
    if a.concurrency == 0 {
        return Err(Failure::usage(anyhow!(
            "`--concurrency` must be at least 1"
        )));
    }
    // `concurrency` loops, each claiming one task, running its command and reporting:
    // never more tasks claimed than commands running.
    let handled = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let loops: Vec<_> = (0..a.concurrency)
            .map(|_| s.spawn(|| work(g, c, &a, &name, lease, &handled)))
            .collect();
        let mut result = Ok(());
        for l in loops {
            let r = l
                .join()
                .unwrap_or_else(|_| Err(Failure::from(anyhow!("a worker thread panicked"))));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// Takes a slot of `--max-tasks` (given back when no task comes of it); false when all
/// are taken.
fn take_slot(a: &Worker, handled: &std::sync::atomic::AtomicU64) -> bool {
    use std::sync::atomic::Ordering;
    let slot = handled.fetch_add(1, Ordering::SeqCst);
    if a.max_tasks.is_some_and(|m| slot >= m) {
        handled.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    true
}

fn give_back(handled: &std::sync::atomic::AtomicU64) {
    handled.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
}

/// One worker loop: claim a task, run its command, report its outcome and claim the next
/// task in the same round trip, until done.
fn work(
    g: &Global,
    c: &(dyn Client + Sync),
    a: &Worker,
    name: &str,
    lease: Duration,
    handled: &std::sync::atomic::AtomicU64,
) -> Result<(), Failure> {
    let claim = |wait_ms| cairn_api::ClaimRequest {
        queues: a.queue.clone(),
        worker: name.to_string(),
        batch: 1,
        wait_ms,
        lease_ms: Some(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)),
    };
    // A task handed out with the last report.
    let mut next: Option<cairn_api::Claimed> = None;
    loop {
        let task = match next.take() {
            Some(t) => t,
            None => {
                if !take_slot(a, handled) {
                    return Ok(());
                }
                let claimed = match c.claim(&a.queue, name, 1, lease) {
                    Ok(c) => c,
                    // The server is unreachable (restarting, say): wait and try again.
                    Err(f) if f.code == 1 => {
                        give_back(handled);
                        eprintln!("worker: {:#}; retrying", f.error);
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                    Err(f) => return Err(f),
                };
                let Some(task) = claimed.into_iter().next() else {
                    give_back(handled);
                    // Idle: keep timers and leases moving, then wait a little. An
                    // unreachable server is retried with the next claim; anything else
                    // stops us.
                    if let Err(f) = c.tick(&cairn_engine::Retention::default())
                        && f.code != 1
                    {
                        return Err(f);
                    }
                    if a.until_idle {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                };
                task
            }
        };
        let outcome = run_one(c, &a.command, &task, lease);
        let (kind, output, error) = match &outcome {
            Ok(output) => (cairn_api::OutcomeKind::Completed, output.clone(), None),
            Err(e) => (cairn_api::OutcomeKind::Failed, Value::Null, Some(e.clone())),
        };
        // The next task comes with this report, when there is a slot for it.
        let more = take_slot(a, handled);
        let request = cairn_api::ReportRequest {
            outcomes: vec![cairn_api::OutcomeRequest {
                task: task.id.clone(),
                attempt: task.attempt,
                outcome: kind,
                output,
                error,
                retryable: true,
                tokens: None,
                cost: None,
            }],
            claim: more.then(|| claim(0)),
        };
        let mut reported = c.report(request.clone());
        // A report that did not reach the server is sent again; if the first one did land,
        // the repeat is answered as applied, and nothing is applied twice (a task the lost
        // answer handed out comes back when its lease expires).
        for _ in 0..120 {
            match &reported {
                Err(f) if f.code == 1 => {
                    std::thread::sleep(Duration::from_millis(500));
                    reported = c.report(request.clone());
                }
                _ => break,
            }
        }
        let reported = reported?;
        next = reported.claimed.into_iter().next();
        if more && next.is_none() {
            give_back(handled);
        }
        let verdict = reported.outcomes.into_iter().next();
        let line = match (&outcome, verdict) {
            (Ok(_), Some(v)) if v.applied => {
                json!({"task": task.id, "attempt": task.attempt, "action": task.action, "outcome": "completed"})
            }
            (Err(error), Some(v)) if v.applied => {
                json!({"task": task.id, "attempt": task.attempt, "action": task.action, "outcome": "failed", "error": error})
            }
            // Stale: reclaimed or cancelled meanwhile.
            (_, Some(v)) if v.problem.as_ref().is_some_and(|p| p.status == 409) => {
                let why = v.problem.map(|p| p.detail).unwrap_or_default();
                json!({"task": task.id, "attempt": task.attempt, "action": task.action, "outcome": "stale", "error": why})
            }
            (_, v) => {
                let why = v
                    .and_then(|v| v.problem)
                    .map_or_else(|| "no verdict".to_string(), |p| p.detail);
                return Err(Failure::from(anyhow!(
                    "task {} attempt {}: the report was refused: {why}",
                    task.id,
                    task.attempt
                )));
            }
        };
        if g.json {
            println!("{line}");
        } else {
            // A stale attempt says why its result was discarded (lease expired, cancelled).
            let said = match (line["outcome"].as_str(), line["error"].as_str()) {
                (Some("stale"), Some(why)) if why.contains("timed out") => format!(
                    "timed out (lease {} s), result discarded",
                    lease.as_secs_f64()
                ),
                (Some("stale"), Some(why)) if why.contains("was cancelled") => {
                    "cancelled (its state was left), result discarded".to_string()
                }
                (Some("stale"), Some(why)) => format!("stale, result discarded: {why}"),
                (outcome, _) => outcome.unwrap_or("").to_string(),
            };
            println!(
                "{} {} attempt {}: {said}",
                task.action, task.id, task.attempt
            );
        }
    }
}

/// Runs the command for one task: Ok(output) on exit 0, Err(error) otherwise.
fn run_one(
    c: &dyn Client,
    command: &[String],
    task: &cairn_api::Claimed,
    lease: Duration,
) -> Result<Value, String> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("CAIRN_TASK_ID", &task.id)
        .env("CAIRN_TASK_ATTEMPT", task.attempt.to_string())
        .env("CAIRN_TASK_ACTION", &task.action)
        .env("CAIRN_TASK_STATE", &task.state)
        .env("CAIRN_INSTANCE", &task.instance)
        .env("CAIRN_NAMESPACE", &task.namespace);
    let mut beat = || match c.heartbeat(&task.id, task.attempt, lease) {
        // The attempt is stale (reclaimed or cancelled): stop working on it.
        Err(f) if f.code != 1 => Err(format!("abandoned: {:#}", f.error)),
        // The server is unreachable for now: keep working, beat again later.
        _ => Ok(()),
    };
    let run = cairn_runtime::run_process(
        cmd,
        task.input.to_string().into_bytes(),
        MAX_OUTPUT + 1,
        MAX_ERROR,
        None,
        lease / 3,
        &mut beat,
    )
    .map_err(|e| format!("cannot run `{}`: {e}", command[0]))?;
    if let Some(why) = run.abandoned {
        return Err(why);
    }
    let status = run.status.expect("no timeout was set");
    if !status.success() {
        let detail = tail(&run.stderr.bytes, MAX_ERROR);
        return Err(match (status.code(), detail.is_empty()) {
            (Some(code), true) => format!("exit status {code}"),
            (Some(code), false) => format!("exit status {code}: {detail}"),
            (None, _) => format!(
                "killed by a signal{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            ),
        });
    }
    if run.stdout.bytes.len() > MAX_OUTPUT {
        return Err(format!(
            "the output is over the limit of {MAX_OUTPUT} bytes"
        ));
    }
    let text = String::from_utf8_lossy(&run.stdout.bytes);
    Ok(serde_json::from_str(text.trim()).unwrap_or_else(|_| json!({"stdout": text.trim()})))
}
