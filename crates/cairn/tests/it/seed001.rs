//! Seed 001 end to end through the CLI: the coding-agent machine of `examples/` goes plan
//! -> approve -> implement -> approve -> review -> verify, with the plan rejected (with a
//! reason) then approved, the implementation rejected then approved, a checkpoint at every
//! stage, workers run with `cairn worker`, and a worker SIGKILLed in the middle of a task:
//! the run continues exactly where it stood. "List resumable" is `ls --status running`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn run(d: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_DATA", d)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ok(d: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(d, &all);
    assert_eq!(code, 0, "cairn {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|_| Value::String(out))
}

/// Runs one worker task whose command prints `output`.
fn work(d: &Path, output: Value) {
    let script = format!("cat > /dev/null; echo '{output}'");
    let (code, out, err) = run(
        d,
        &[
            "worker",
            "--queue",
            "agents",
            "--lease",
            "1s",
            "--max-tasks",
            "1",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(code, 0, "worker: {err}");
    assert!(
        out.contains("completed"),
        "the worker's task did not complete: {out}"
    );
}

fn config(d: &Path) -> Value {
    ok(d, &["show", "ca"])["configuration"].clone()
}

fn checkpoint(d: &Path, name: &str) {
    ok(d, &["checkpoint", "ca", name]);
}

#[test]
fn seed_001_coding_agent_story_survives_sigkill_and_resumes_where_it_stood() {
    let tmp = tempfile::tempdir().unwrap();
    let d: PathBuf = tmp.path().join("data");
    let machine = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/coding-agent.yaml");
    ok(&d, &["apply", machine.to_str().unwrap()]);
    ok(
        &d,
        &[
            "start",
            "coding-agent",
            "--id",
            "ca",
            "--input",
            r#"{"request": "add authentication"}"#,
        ],
    );
    checkpoint(&d, "workflow_start");

    // Planning: a worker is SIGKILLed in the middle of the plan task.
    let marker = tmp.path().join("working");
    let script = format!(
        "cat > /dev/null; touch '{}'; exec sleep 5",
        marker.display()
    );
    let mut doomed = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "worker",
            "--queue",
            "agents",
            "--lease",
            "1s",
            "--max-tasks",
            "1",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("CAIRN_DATA", &d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(common::Killed)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the doomed worker never started its task"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    // Exactly where it stood: still planning, its task leased to the dead worker.
    assert_eq!(config(&d), json!(["planning"]));
    let tasks = ok(&d, &["tasks", "--instance", "ca"]);
    assert_eq!(
        (tasks[0]["status"].as_str(), tasks[0]["attempt"].as_u64()),
        (Some("leased"), Some(1))
    );
    assert_eq!(
        ok(&d, &["ls", "--status", "running"])["instances"][0]["id"],
        "ca",
        "listed as resumable"
    );
    assert_eq!(ok(&d, &["verify", "ca"])["ok"], true);
    // The next worker reclaims the expired lease and finishes the task (attempt 2).
    work(&d, json!({"plan": "1. login route 2. hash passwords"}));
    let tasks = ok(&d, &["tasks", "--instance", "ca"]);
    assert_eq!(
        (tasks[0]["status"].as_str(), tasks[0]["attempt"].as_u64()),
        (Some("completed"), Some(2))
    );
    assert_eq!(config(&d), json!(["plan_review"]));
    checkpoint(&d, "after_planning");

    // The plan is rejected with a reason, re-planned, then approved.
    ok(
        &d,
        &[
            "reject",
            "ca",
            "--actor",
            "ann",
            "--reason",
            "say how sessions expire",
        ],
    );
    assert_eq!(config(&d), json!(["planning"]));
    assert_eq!(
        ok(&d, &["show", "ca"])["context"]["feedback"],
        "say how sessions expire"
    );
    work(
        &d,
        json!({"plan": "1. login route 2. argon2 3. 24h sessions"}),
    );
    checkpoint(&d, "after_replanning");
    ok(&d, &["approve", "ca", "--actor", "ann", "--reason", "good"]);
    assert_eq!(config(&d), json!(["implementing.coding"]));
    checkpoint(&d, "start_implementation");

    // Implementation: tests fail once, then pass; the implementation is rejected, redone,
    // and approved.
    work(&d, json!({"files": ["auth.rs"]}));
    ok(
        &d,
        &["send", "ca", "done", "--payload", r#"{"passed": false}"#],
    );
    assert_eq!(config(&d), json!(["implementing.coding"]));
    work(&d, json!({"files": ["auth.rs", "auth_test.rs"]}));
    ok(
        &d,
        &["send", "ca", "done", "--payload", r#"{"passed": true}"#],
    );
    assert_eq!(config(&d), json!(["implementation_review"]));
    checkpoint(&d, "after_implementation");
    ok(
        &d,
        &[
            "reject",
            "ca",
            "--actor",
            "bob",
            "--reason",
            "no rate limiting",
        ],
    );
    assert_eq!(config(&d), json!(["implementing.coding"]));
    work(
        &d,
        json!({"files": ["auth.rs", "auth_test.rs", "limits.rs"]}),
    );
    ok(
        &d,
        &["send", "ca", "done", "--payload", r#"{"passed": true}"#],
    );
    ok(&d, &["approve", "ca", "--actor", "bob"]);
    assert_eq!(config(&d), json!(["reviewing"]));
    checkpoint(&d, "after_approval");

    // Between stages: an idle worker (holding the data directory) is SIGKILLed.
    let spawn_idle = || {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["worker", "--queue", "nobody-uses-this", "--", "true"])
            .env("CAIRN_DATA", &d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(common::Killed)
            .unwrap()
    };
    let mut idle = spawn_idle();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Our own probe holds the directory for a moment, so the worker may find it busy
        // and exit: start it again until it is the one holding it.
        if idle.try_wait().unwrap().is_some() {
            idle = spawn_idle();
        }
        let (code, _, err) = run(&d, &["show", "ca"]);
        if code != 0 && err.contains("in use by another process") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle worker never took the directory"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    idle.kill().unwrap();
    idle.wait().unwrap();
    assert_eq!(config(&d), json!(["reviewing"]));

    // Review and verification.
    work(&d, json!({"comments": []}));
    assert_eq!(
        config(&d),
        json!(["verifying.lint.run", "verifying.tests.run"])
    );
    checkpoint(&d, "after_review");
    // `show` lists the two verification tasks it waits for; `history` shows how each
    // attempt so far ended.
    let (code, out, err) = run(&d, &["show", "ca"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("  task ").count(), 2, "{out}");
    assert!(
        out.contains("(test on agents) in verifying.tests.run: pending"),
        "{out}"
    );
    let (code, out, err) = run(&d, &["history", "ca"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l.contains("(attempt)  task ")
            && l.contains("(review) attempt 1 in reviewing: completed")),
        "{out}"
    );
    // Tests and lint run as two tasks; each outcome reaches its own region only.
    work(&d, json!({"passed": 12}));
    let one = config(&d);
    assert!(
        one == json!(["verifying.lint.passed", "verifying.tests.run"])
            || one == json!(["verifying.lint.run", "verifying.tests.passed"]),
        "one task's outcome moved one region: {one}"
    );
    work(&d, json!({"passed": 12}));
    let done = ok(&d, &["show", "ca"]);
    assert_eq!(
        (done["status"].as_str(), done["configuration"].clone()),
        (Some("completed"), json!(["completed"]))
    );
    checkpoint(&d, "after_verification");

    // The record: who approved and rejected what, when, and why; every stage checkpointed.
    let ctx = &done["context"];
    assert_eq!(
        (
            ctx["plan_approved_by"].as_str(),
            ctx["implementation_approved_by"].as_str()
        ),
        (Some("ann"), Some("bob"))
    );
    assert_eq!(
        (
            ctx["plan_rejection_reason"].as_str(),
            ctx["implementation_rejection_reason"].as_str()
        ),
        (Some("say how sessions expire"), Some("no rate limiting"))
    );
    assert_eq!(ctx["attempts"], 2);
    let approvals = ok(&d, &["approvals", "--status", "all", "--instance", "ca"]);
    let decided: Vec<(String, String, String)> = approvals
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["status"].as_str().unwrap().into(),
                a["decided_by"].as_str().unwrap_or("").into(),
                a["reason"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        decided,
        [
            (
                "rejected".into(),
                "ann".into(),
                "say how sessions expire".into()
            ),
            ("approved".into(), "ann".into(), "good".into()),
            ("rejected".into(), "bob".into(), "no rate limiting".into()),
            ("approved".into(), "bob".into(), "".into()),
        ]
    );
    assert!(
        approvals
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["decided_at"].is_string())
    );
    let names: Vec<String> = ok(&d, &["export", "ca"])["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect();
    for stage in [
        "workflow_start",
        "after_planning",
        "after_replanning",
        "start_implementation",
        "after_implementation",
        "after_approval",
        "after_review",
        "after_verification",
    ] {
        assert!(
            names.iter().any(|n| n == stage),
            "no checkpoint {stage}: {names:?}"
        );
    }
    assert!(
        ok(&d, &["ls", "--status", "running"])["instances"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (_, report, _) = run(&d, &["export", "ca", "--format", "markdown"]);
    assert!(
        report.contains("say how sessions expire") && report.contains("no rate limiting"),
        "{report}"
    );
    assert_eq!(ok(&d, &["verify"])["ok"], true);
}
