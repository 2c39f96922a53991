//! Crash test of tasks: `cairn serve` is SIGKILLed again and again while `cairn worker`
//! processes run a five-task workflow on many instances; it restarts on the same data and
//! port each time. Afterwards every instance has finished, no task completion was applied
//! twice (each step's `task.done` is in history exactly once, with the state it was
//! addressed to), every completion a worker was told had applied is there, and `verify`
//! passes. On SQLite, and on PostgreSQL (whose units send their writes pipelined, with
//! their next read or their commit).

#[path = "it/common.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_engine::Config;
use cairn_store::{HistoryKind, Reader, TaskStatus};
use cairn_store_any::SqliteOptions as Options;

const MACHINE: &str = r#"
machine: steps
initial: s1
states:
  s1: { task: { queue: work, action: a, retry: { max_attempts: 50, initial: 100ms, max: 1s } }, on: { task.done: s2 } }
  s2: { task: { queue: work, action: b, retry: { max_attempts: 50, initial: 100ms, max: 1s } }, on: { task.done: s3 } }
  s3: { task: { queue: work, action: c, retry: { max_attempts: 50, initial: 100ms, max: 1s } }, on: { task.done: s4 } }
  s4: { task: { queue: work, action: d, retry: { max_attempts: 50, initial: 100ms, max: 1s } }, on: { task.done: s5 } }
  s5: { task: { queue: work, action: e, retry: { max_attempts: 50, initial: 100ms, max: 1s } }, on: { task.done: done } }
  done: { type: final }
"#;

const INSTANCES: usize = 60;
const KILLS: usize = 8;

use cairn_store_any::testing::TestDb;
use common::{free_port, serve_with};

fn cli(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_SERVER", url)
        .output()
        .unwrap()
}

#[test]
fn killing_the_server_under_workers_applies_no_completion_twice() {
    kill_under_workers(None);
}

#[test]
fn killing_a_postgres_node_under_workers_applies_no_completion_twice() {
    let db = TestDb::create().unwrap();
    kill_under_workers(Some(&db.url));
}

fn kill_under_workers(database: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let store: Vec<&str> = database.map_or(Vec::new(), |db| vec!["--database", db]);
    let serve = |data: &std::path::Path, port: u16| serve_with(data, port, &store);
    let mut server = serve(&data, port);
    let file = tmp.path().join("steps.yaml");
    std::fs::write(&file, MACHINE).unwrap();
    assert!(
        cli(&url, &["apply", file.to_str().unwrap()])
            .status
            .success()
    );
    for i in 0..INSTANCES {
        let out = cli(&url, &["start", "steps", "--id", &format!("i{i}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Two workers, each task taking a little while; each prints a line for every outcome
    // the server acknowledged.
    let acks: Vec<std::path::PathBuf> = (0..2)
        .map(|w| tmp.path().join(format!("acks-{w}.jsonl")))
        .collect();
    let workers: Vec<common::Killed> = (0..2)
        .map(|w| {
            Command::new(env!("CARGO_BIN_EXE_cairn"))
                .args([
                    "--json",
                    "worker",
                    "--queue",
                    "work",
                    "--lease",
                    "2s",
                    "--name",
                    &format!("w{w}"),
                    "--",
                    "sh",
                    "-c",
                    "cat >/dev/null; sleep 0.03; echo '{\"ok\": true}'",
                ])
                .env("CAIRN_SERVER", &url)
                .stdout(std::fs::File::create(&acks[w]).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .map(common::Killed)
                .unwrap()
        })
        .collect();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash_tasks seed {seed}");
    for k in 0..KILLS {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(150 + (seed >> 33) % 400));
        if k == KILLS - 1 {
            // The last kill must still land under load, or the test proves little.
            let out = cli(
                &url,
                &["--json", "ls", "--status", "running", "--limit", "1000"],
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            assert!(
                v["instances"].as_array().is_some_and(|a| !a.is_empty()),
                "all work finished before the last kill"
            );
        }
        server.kill().unwrap();
        server.wait().unwrap();
        server = serve(&data, port);
    }
    // Let the workers finish everything.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = cli(
            &url,
            &["--json", "ls", "--status", "running", "--limit", "1000"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["instances"].as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instances still running: {}",
            v["instances"].as_array().map_or(0, |a| a.len())
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(workers);
    server.kill().unwrap();
    server.wait().unwrap();

    let engine =
        cairn_runtime::open(&data, database, Options::default(), Config::default()).unwrap();
    let mut attempts_total = 0;
    for i in 0..INSTANCES {
        let id = format!("i{i}");
        let inst = engine.get("default", &id).unwrap();
        assert_eq!(
            (inst.status.as_str(), inst.configuration.clone()),
            ("completed", vec!["done".to_string()]),
            "{id}"
        );
        let history = engine.history("default", &id).unwrap();
        let done: Vec<_> = history
            .iter()
            .filter(|h| h.kind == HistoryKind::Event && h.event == "task.done")
            .collect();
        assert_eq!(done.len(), 5, "{id}: {} task.done applied", done.len());
        // Each outcome was recorded with the state it was addressed to, in order (and
        // `verify` below replays it with that address).
        assert_eq!(
            done.iter()
                .map(|h| h.addressed_to.as_deref())
                .collect::<Vec<_>>(),
            [Some("s1"), Some("s2"), Some("s3"), Some("s4"), Some("s5")],
            "{id}"
        );
        assert_eq!(inst.version, 6, "{id}: start and five steps");
        let tasks = engine.tasks("default", None, None, Some(&id)).unwrap();
        assert_eq!(tasks.len(), 5, "{id}");
        for t in tasks {
            assert_eq!(t.status, TaskStatus::Completed, "{id} {}", t.action);
            let attempts = engine.store().attempts(&t.id).unwrap();
            assert_eq!(
                attempts
                    .iter()
                    .filter(|a| a.outcome.as_deref() == Some("completed"))
                    .count(),
                1,
                "{id} {}: {attempts:?}",
                t.action
            );
            attempts_total += attempts.len();
        }
        let v = engine.verify("default", &id).unwrap();
        assert!(v.ok, "{id}: {:?}", v.problem);
    }
    // Every outcome a worker was told had applied is there.
    let mut acked = 0;
    for file in &acks {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["outcome"] != "completed" {
                continue;
            }
            let (task, attempt) = (v["task"].as_str().unwrap(), v["attempt"].as_u64().unwrap());
            let attempts = engine.store().attempts(task).unwrap();
            assert!(
                attempts.iter().any(|a| u64::from(a.attempt) == attempt
                    && a.outcome.as_deref() == Some("completed")),
                "acknowledged completion of {task} attempt {attempt} is missing: {attempts:?}"
            );
            acked += 1;
        }
    }
    assert!(acked >= INSTANCES * 5, "{acked} acknowledged completions");
    eprintln!(
        "{INSTANCES} instances, {} task attempts, {acked} acknowledged completions over {KILLS} server kills",
        attempts_total
    );
}

/// `cairn bench W3`: the workload process is SIGKILLed after step 2 of 5 and restarted on
/// the same data. No step that had completed runs again, at most the one in flight per
/// workflow does, every workflow completes, and `verify` passes; the bench's own report
/// is checked against the data it leaves.
#[test]
fn w3_kill_after_step_two_reexecutes_only_steps_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data")
        .arg(dir.path())
        .args([
            "bench",
            "W3",
            "--n",
            "40",
            "--concurrency",
            "16",
            "--step-ms",
            "100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["workload"], "W3");
    assert_eq!(r["reexecuted_completed_steps"], 0, "{r}");
    assert!(
        r["steps_completed_before_kill"].as_u64().unwrap() >= 80,
        "{r}"
    );
    assert!(r["steps_in_flight_at_kill"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["max_reexecuted_per_workflow"].as_u64().unwrap() <= 1,
        "{r}"
    );
    assert_eq!(r["verify"], "ok", "{r}");
    assert_eq!(r["instances"], 40);
    assert_eq!(r["unfinished"], 0);

    // The data agrees: every instance completed, each step's task completed once.
    let store = cairn_store_any::SqliteStore::open(dir.path(), Options::default()).unwrap();
    let engine = cairn_engine::Engine::new(
        store,
        std::sync::Arc::new(cairn_engine::SystemClock),
        Config::default(),
    );
    for (ns, id) in engine.instance_ids(Some("bench")).unwrap() {
        assert_eq!(engine.get(&ns, &id).unwrap().status.as_str(), "completed");
        let dones = engine
            .history(&ns, &id)
            .unwrap()
            .iter()
            .filter(|h| h.kind == HistoryKind::Event && h.event == "task.done")
            .count();
        assert_eq!(dones, 5, "{id}");
        assert!(engine.verify(&ns, &id).unwrap().ok, "{id}");
    }
}
