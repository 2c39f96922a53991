//! The seed 000 and seed 004 stories end to end through the CLI (embedded mode).
//!
//! Seed 000: an agent task's lifecycle PENDING -> RUNNING -> PAUSED_FOR_HITL ->
//! COMPLETED / FAILED, with the work done by `cairn worker` and the human in the loop by
//! `cairn approve` / `reject`; an A -> B trigger with a condition and an output transform;
//! a cron schedule starting tasks.
//!
//! Seed 004: an orchestration run whose phases are child instances (a map state, one
//! phase at a time), executions as task attempts with retries, a manual intervention (an
//! approval) when retries run out, and findings counted into a guard that blocks a phase's
//! completion above a threshold until a human accepts it.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{ok_in as ok, run_in as run};

fn apply(dir: &Path, data: &Path, name: &str, text: &str) {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    ok(data, &["apply", f.to_str().unwrap()]);
}

/// Runs `cairn worker` on `queue` for `n` tasks with the shell `script` as the command.
fn work(data: &Path, queue: &str, n: usize, script: &str) -> String {
    let (code, out, err) = run(
        data,
        &[
            "worker",
            "--queue",
            queue,
            "--lease",
            "5s",
            "--max-tasks",
            &n.to_string(),
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(code, 0, "worker: {err}");
    out
}

fn states(data: &Path, id: &str) -> Vec<String> {
    let h = ok(data, &["history", id]);
    let mut out: Vec<String> = Vec::new();
    for r in h.as_array().unwrap() {
        let to: Vec<String> = r["to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        let s = to.join(",");
        if out.last() != Some(&s) && !s.is_empty() {
            out.push(s);
        }
    }
    out
}

const AGENT_TASK: &str = r#"
machine: agent-task
context: { prompt: "" }
initial: pending
states:
  pending: { on: { start: running } }
  running:
    task: { queue: agents, action: work, input: "{'prompt': context.prompt}",
            retry: { max_attempts: 2, initial: 10ms, jitter: 0 } }
    on:
      task.done: { target: paused_for_hitl, assign: { output: "event.payload" } }
      task.failed: { target: failed, assign: { error: "event.payload.error" } }
  paused_for_hitl:
    approval: { prompt: "Accept the agent's output?" }
    on:
      approve: completed
      reject: { target: running, assign: { feedback: "event.reason" } }
  completed: { type: final }
  failed: { type: final, status: failed }
"#;

const FOLLOW_UP: &str = r#"
machine: follow-up
initial: queued
states:
  queued: { on: { go: done } }
  done: { type: final }
"#;

#[test]
fn seed_000_task_lifecycle_trigger_and_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    apply(tmp.path(), &d, "agent-task.yaml", AGENT_TASK);
    apply(tmp.path(), &d, "follow-up.yaml", FOLLOW_UP);
    // A -> B: when a task completes successfully, start its follow-up with its first
    // artifact (the output transform).
    ok(
        &d,
        &[
            "trigger",
            "add",
            "a-to-b",
            "--machine",
            "agent-task",
            "--on-status",
            "completed",
            "--when",
            "context.output.success",
            "--start",
            "follow-up",
            "--input",
            "{'input': context.output.artifacts[0]}",
            "--id",
            "instance.id + '-next'",
        ],
    );

    ok(
        &d,
        &[
            "start",
            "agent-task",
            "--id",
            "t1",
            "--input",
            r#"{"prompt": "write the docs"}"#,
        ],
    );
    let pending = ok(&d, &["ls", "--state", "pending"]);
    assert_eq!(pending["instances"][0]["id"], "t1");
    ok(&d, &["send", "t1", "start"]);
    let tasks = ok(&d, &["tasks", "--queue", "agents", "--status", "pending"]);
    assert_eq!(tasks[0]["input"]["prompt"], "write the docs");

    let done = r#"cat > /dev/null; echo '{"success": true, "artifacts": ["docs.md", "notes.md"]}'"#;
    work(&d, "agents", 1, done);
    assert_eq!(
        ok(&d, &["show", "t1"])["configuration"][0],
        "paused_for_hitl"
    );
    let approvals = ok(&d, &["approvals", "--instance", "t1"]);
    assert_eq!(approvals[0]["prompt"], "Accept the agent's output?");
    ok(
        &d,
        &["reject", "t1", "--actor", "lead", "--reason", "too short"],
    );
    let t1 = ok(&d, &["show", "t1"]);
    assert_eq!(t1["configuration"][0], "running");
    assert_eq!(t1["context"]["feedback"], "too short");
    work(&d, "agents", 1, done);
    ok(
        &d,
        &["approve", "t1", "--actor", "lead", "--reason", "good"],
    );
    assert_eq!(ok(&d, &["show", "t1"])["status"], "completed");
    assert_eq!(
        states(&d, "t1"),
        [
            "pending",
            "running",
            "paused_for_hitl",
            "running",
            "paused_for_hitl",
            "completed"
        ]
    );
    // The trigger fired once, with the transformed output.
    let next = ok(&d, &["show", "t1-next"]);
    assert_eq!(next["machine"], "follow-up");
    assert_eq!(next["context"]["input"], "docs.md");

    // FAILED: the worker fails both attempts; the task fails and no follow-up starts.
    ok(&d, &["start", "agent-task", "--id", "t2"]);
    ok(&d, &["send", "t2", "start"]);
    let out = work(
        &d,
        "agents",
        2,
        "cat > /dev/null; echo 'model unavailable' >&2; exit 1",
    );
    assert_eq!(out.matches("failed").count(), 2, "{out}");
    let t2 = ok(&d, &["show", "t2"]);
    assert_eq!(t2["status"], "failed");
    assert!(
        t2["context"]["error"]
            .as_str()
            .unwrap()
            .contains("model unavailable"),
        "{t2}"
    );
    let (code, _, _) = run(&d, &["show", "t2-next"]);
    assert_eq!(code, 3, "no follow-up for a failed task");

    // A cron schedule starts tasks.
    ok(
        &d,
        &[
            "schedule",
            "add",
            "nightly",
            "--cron",
            "* * * * * *",
            "--machine",
            "agent-task",
            "--input",
            r#"{"prompt": "nightly report"}"#,
        ],
    );
    std::thread::sleep(Duration::from_millis(1100));
    ok(&d, &["tick"]);
    let scheduled = ok(&d, &["ls", "--machine", "agent-task", "--state", "pending"]);
    let items = scheduled["instances"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{scheduled}");
    assert!(items[0]["id"].as_str().unwrap().starts_with("nightly-"));
    assert_eq!(items[0]["context"]["prompt"], "nightly report");
    let v = ok(&d, &["verify"]);
    assert_eq!(v["ok"], true, "{v}");
}

const PHASE: &str = r#"
machine: phase
context: { max_major: 1, findings: [] }
initial: executing
states:
  executing:
    task: { queue: exec, action: execute, input: "{'phase': context.name}",
            retry: { max_attempts: 2, initial: 10ms, jitter: 0 } }
    on:
      task.done: { target: verifying, assign: { findings: "event.payload.findings" } }
      task.failed: { target: intervention, assign: { last_error: "event.payload.error" } }
  intervention:
    approval: { prompt: "Retries ran out: run the phase again?" }
    on: { approve: executing, reject: failed }
  verifying:
    always:
      - { target: blocked, guard: "size(context.findings.filter(f, f.severity == 'major' && !f.resolved)) > context.max_major" }
      - { target: done }
  blocked:
    approval: { prompt: "Too many major findings: accept the phase anyway?" }
    on: { approve: done, reject: failed }
  done: { type: final }
  failed: { type: final, status: failed }
"#;

const RUN: &str = r#"
machine: run
initial: phases
states:
  phases:
    map: { machine: phase, items: "context.phases", key: "item", input: "{'name': item}",
           concurrency: 1 }
    on_done: { target: completed, assign: { summary: "event.payload" } }
    on: { child.failed: { target: failed, assign: { failed_phase: "event.payload.key" } } }
  completed: { type: final }
  failed: { type: final, status: failed }
"#;

#[test]
fn seed_004_run_with_phases_retries_intervention_and_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    apply(tmp.path(), &d, "phase.yaml", PHASE);
    apply(tmp.path(), &d, "run.yaml", RUN);
    let fixed = tmp.path().join("build-fixed");
    // The executor: `build` fails until it is fixed; `verify` reports two major findings.
    let script = format!(
        r#"input=$(cat)
case "$input" in
  *'"build"'*) [ -e {fixed} ] || {{ echo "compile error" >&2; exit 1; }}; echo '{{"findings": []}}' ;;
  *'"verify"'*) echo '{{"findings": [{{"severity": "major", "resolved": false}}, {{"severity": "major", "resolved": false}}, {{"severity": "minor", "resolved": false}}]}}' ;;
  *) echo '{{"findings": [{{"severity": "major", "resolved": true}}]}}' ;;
esac"#,
        fixed = fixed.display()
    );
    ok(
        &d,
        &[
            "start",
            "run",
            "--id",
            "r",
            "--input",
            r#"{"phases": ["plan", "build", "verify"]}"#,
        ],
    );
    // One phase at a time.
    assert_eq!(ok(&d, &["show", "r.plan"])["status"], "running");
    assert_eq!(run(&d, &["show", "r.build"]).0, 3);

    // plan passes (its one major finding is resolved); build fails twice: retries run out.
    work(&d, "exec", 3, &script);
    assert_eq!(ok(&d, &["show", "r.plan"])["status"], "completed");
    let build = ok(&d, &["show", "r.build"]);
    assert_eq!(build["configuration"][0], "intervention", "{build}");
    assert!(
        build["context"]["last_error"]
            .as_str()
            .unwrap()
            .contains("compile error")
    );
    // The executions are the task's attempts.
    let export = ok(&d, &["export", "r.build", "--format", "json"]);
    let attempts = export["tasks"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a["outcome"] == "failed"));

    // Manual intervention: the operator fixes the build and runs the phase again.
    std::fs::write(&fixed, "").unwrap();
    ok(
        &d,
        &[
            "approve",
            "r.build",
            "--actor",
            "operator",
            "--reason",
            "fixed the toolchain",
        ],
    );
    work(&d, "exec", 2, &script);
    assert_eq!(ok(&d, &["show", "r.build"])["status"], "completed");
    // verify reports two unresolved major findings, above the threshold of one: blocked.
    let verify = ok(&d, &["show", "r.verify"]);
    assert_eq!(verify["configuration"][0], "blocked", "{verify}");
    assert_eq!(
        ok(&d, &["show", "r"])["status"],
        "running",
        "the run cannot complete"
    );
    ok(
        &d,
        &[
            "approve",
            "r.verify",
            "--actor",
            "lead",
            "--reason",
            "accepted risk",
        ],
    );

    let r = ok(&d, &["show", "r"]);
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["context"]["summary"]["completed"], 3);
    let tree = ok(&d, &["tree", "r"]);
    let phases: Vec<&str> = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["r.plan", "r.build", "r.verify"]);
    let v = ok(&d, &["verify"]);
    assert_eq!(v["ok"], true, "{v}");
}
