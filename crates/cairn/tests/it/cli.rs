//! End-to-end tests of the `cairn` binary: the seed examples driven through `simulate`,
//! `validate` exit codes and messages, and `diagram`.

use std::io::Write;
use std::process::{Command, Stdio};

use expect_test::{Expect, expect};
use serde_json::Value;

fn cairn(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs `simulate` and prints one compact line per step.
fn simulate(file: &str, input: &str, events: &[&str], expect: Expect) -> Vec<Value> {
    let stdin: String = events.iter().map(|e| format!("{e}\n")).collect();
    let (code, out, err) = cairn(
        &[
            "simulate",
            file,
            "--input",
            input,
            "--now",
            "2026-01-01T00:00:00Z",
        ],
        &stdin,
    );
    assert_eq!(code, 0, "simulate failed: {err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut trace = String::new();
    for l in &lines {
        let conf: Vec<&str> = l["configuration"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        trace.push_str(&format!(
            "{} {} -> {} {}{}\n",
            l["step"],
            l["event"].as_str().unwrap_or("(start)"),
            conf.join(","),
            l["status"].as_str().unwrap(),
            l["rejected"]
                .as_str()
                .map(|r| format!(" REFUSED: {r}"))
                .unwrap_or_default()
        ));
    }
    expect.assert_eq(&trace);
    lines
}

#[test]
fn seed_001_coding_agent_plan_approve_implement_approve_review_verify() {
    let lines = simulate(
        "examples/coding-agent.yaml",
        r#"{"request": "add authentication"}"#,
        &[
            r#"{"event": "task.done", "payload": {"plan": "v1"}}"#,
            r#"{"event": "reject", "actor": "ann", "reason": "too vague"}"#,
            r#"{"event": "task.done", "payload": {"plan": "v2"}}"#,
            r#"{"event": "approve", "actor": "ann"}"#,
            r#"{"event": "task.done", "payload": {"files": 3}}"#,
            r#"{"event": "done", "payload": {"passed": false}}"#,
            r#"{"event": "task.done", "payload": {"files": 4}}"#,
            r#"{"event": "done", "payload": {"passed": true}}"#,
            r#"{"event": "reject", "actor": "bob", "reason": "missing tests"}"#,
            r#"{"event": "task.done", "payload": {"files": 5}}"#,
            r#"{"event": "done", "payload": {"passed": true}}"#,
            r#"{"event": "approve", "actor": "bob"}"#,
            r#"{"event": "task.done", "payload": {"ok": true}}"#,
            // Each verification task's outcome, addressed to its own region.
            r#"{"event": "task.done", "to": "verifying.tests.run", "payload": {"passed": 12}}"#,
            r#"{"event": "task.done", "to": "verifying.lint.run", "payload": {"warnings": 0}}"#,
            r#"{"event": "approve"}"#,
        ],
        expect![[r#"
            0 (start) -> planning running
            1 task.done -> plan_review running
            2 reject -> planning running
            3 task.done -> plan_review running
            4 approve -> implementing.coding running
            5 task.done -> implementing.testing running
            6 done -> implementing.coding running
            7 task.done -> implementing.testing running
            8 done -> implementation_review running
            9 reject -> implementing.coding running
            10 task.done -> implementing.testing running
            11 done -> implementation_review running
            12 approve -> reviewing running
            13 task.done -> verifying.lint.run,verifying.tests.run running
            14 task.done -> verifying.lint.run,verifying.tests.passed running
            15 task.done -> completed completed
            16 approve -> completed completed REFUSED: the instance is completed; it takes no more events
        "#]],
    );
    let last = &lines[lines.len() - 1]["context"];
    assert_eq!(last["plan"], "v2");
    assert_eq!(last["plan_rejection_reason"], "too vague");
    assert_eq!(last["plan_approved_by"], "ann");
    assert_eq!(last["implementation_rejection_reason"], "missing tests");
    assert_eq!(last["implementation_approved_by"], "bob");
    assert_eq!(last["attempts"], 2, "implementing was entered twice");
}

#[test]
fn seed_002_workflow_guards_pause_approval_and_terminal_states() {
    simulate(
        "examples/research-workflow.yaml",
        "{}",
        &[
            r#"{"event": "plan"}"#,
            r#"{"event": "describe", "payload": {"task": "survey CMB priors"}}"#,
            r#"{"event": "plan"}"#,
            r#"{"event": "planned", "payload": {"plan": []}}"#,
            r#"{"event": "planned", "payload": {"plan": ["fetch", "fit"]}}"#,
            r#"{"event": "pause"}"#,
            r#"{"event": "finish"}"#,
            r#"{"event": "resume"}"#,
            r#"{"event": "need_approval"}"#,
            r#"{"event": "approve", "actor": "pi"}"#,
            r#"{"event": "finish"}"#,
            r#"{"event": "cancel"}"#,
        ],
        expect![[r#"
            0 (start) -> draft running
            1 plan -> draft running REFUSED: event `plan` is not accepted in ["draft"]; accepted now: cancel, describe, plan
            2 describe -> draft running
            3 plan -> planning running
            4 planned -> planning running REFUSED: event `planned` is not accepted in ["planning"]; accepted now: cancel, fail, planned
            5 planned -> executing running
            6 pause -> paused running
            7 finish -> paused running REFUSED: event `finish` is not accepted in ["paused"]; accepted now: cancel, resume
            8 resume -> executing running
            9 need_approval -> waiting_approval running
            10 approve -> executing running
            11 finish -> completed completed
            12 cancel -> completed completed REFUSED: the instance is completed; it takes no more events
        "#]],
    );
}

#[test]
fn seed_002_failed_steps_can_be_retried_until_retries_run_out() {
    simulate(
        "examples/research-step.toml",
        "{}",
        &[
            r#"{"event": "start"}"#,
            r#"{"event": "fail", "reason": "timeout"}"#,
            r#"{"event": "retry"}"#,
            r#"{"event": "fail", "reason": "timeout"}"#,
            r#"{"event": "retry"}"#,
            r#"{"event": "fail", "reason": "timeout"}"#,
            r#"{"event": "retry"}"#,
            r#"{"event": "give_up"}"#,
            r#"{"event": "retry"}"#,
        ],
        expect![[r#"
            0 (start) -> pending running
            1 start -> running running
            2 fail -> failed running
            3 retry -> running running
            4 fail -> failed running
            5 retry -> running running
            6 fail -> failed running
            7 retry -> failed running REFUSED: event `retry` is not accepted in ["failed"]; accepted now: cancel, give_up, retry
            8 give_up -> abandoned failed
            9 retry -> abandoned failed REFUSED: the instance is failed; it takes no more events
        "#]],
    );
}

#[test]
fn validate_prints_warnings_and_strict_fails_on_them() {
    let dir = std::env::temp_dir().join(format!("cairn-cli-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("warn.yaml");
    std::fs::write(
        &file,
        "machine: warn\ninitial: a\nstates:\n  a:\n    task: { queue: q }\n    on: { task.done: b }\n  b: { type: final }\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, out, _) = cairn(&["validate", path], "");
    assert_eq!(code, 0, "warnings do not fail validate: {out}");
    assert!(
        out.contains("warn.yaml:4:3: warning[unhandled-outcome]: in state `a`: its task ends with `task.failed`"),
        "{out}"
    );
    assert!(
        out.contains("is valid (2 states, 1 transition, 1 warning)"),
        "{out}"
    );
    let (code, _, err) = cairn(&["validate", path, "--strict"], "");
    assert_eq!(code, 2, "--strict fails on warnings");
    assert!(err.contains("1 warning in"), "{err}");
    let (code, out, _) = cairn(&["--json", "validate", path], "");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            v["valid"].clone(),
            v["warnings"][0]["kind"].clone(),
            v["warnings"][0]["severity"].clone(),
            v["warnings"][0]["state"].clone()
        ),
        (
            serde_json::json!(true),
            serde_json::json!("unhandled-outcome"),
            serde_json::json!("warning"),
            serde_json::json!("a")
        )
    );
    // `apply` prints the same warnings and applies the machine.
    let data = dir.join("data");
    let (code, out, err) = cairn(&["--data", data.to_str().unwrap(), "apply", path], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied machine `warn` version 1"), "{out}");
    assert!(
        err.contains("warn.yaml:4:3: warning[unhandled-outcome]: in state `a`: its task ends with `task.failed`"),
        "{err}"
    );
    // Every example validates without a warning.
    for f in [
        "examples/coding-agent.yaml",
        "examples/research-workflow.yaml",
        "examples/research-step.toml",
    ] {
        let (code, out, err) = cairn(&["validate", f, "--strict"], "");
        assert_eq!(code, 0, "{f}: {out}{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_exit_codes_and_messages() {
    let (code, out, _) = cairn(&["validate", "examples/coding-agent.yaml"], "");
    assert_eq!(code, 0);
    assert!(out.contains("machine `coding-agent` is valid"), "{out}");

    let dir = std::env::temp_dir().join(format!("cairn-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "machine: bad\ninitial: a\nstates:\n  a: { on: { go: nowhere } }\n  b: {}\n",
    )
    .unwrap();
    let (code, _, err) = cairn(&["validate", bad.to_str().unwrap()], "");
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.yaml:4:18: error[unknown-target]: in state `a`"),
        "{err}"
    );
    assert!(err.contains("1 problem in"), "{err}");

    let (code, out, _) = cairn(&["--json", "validate", bad.to_str().unwrap()], "");
    assert_eq!(code, 2);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["kind"], "unknown-target");
    assert_eq!(v["problems"][0]["line"], 4);

    let (code, _, err) = cairn(&["validate", "no/such/file.yaml"], "");
    assert_eq!(code, 2);
    assert!(err.contains("cannot read `no/such/file.yaml`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn simulate_refuses_malformed_event_lines_and_bad_input() {
    let (code, _, err) = cairn(
        &["simulate", "examples/research-step.toml"],
        "{\"event\": \"start\"}\nnot json\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("event line 2: not JSON"), "{err}");
    let (code, _, err) = cairn(
        &["simulate", "examples/research-step.toml"],
        "{\"evnt\": \"start\"}\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("unknown field `evnt`"), "{err}");
    let (code, _, err) = cairn(
        &[
            "simulate",
            "examples/coding-agent.yaml",
            "--input",
            "{\"request\": 5}",
        ],
        "",
    );
    assert_eq!(code, 4);
    assert!(
        err.contains("invalid start input") && err.contains("/request"),
        "{err}"
    );
}

#[test]
fn diagram_renders_mermaid_and_dot_with_active_states() {
    let (code, out, _) = cairn(
        &[
            "diagram",
            "examples/coding-agent.yaml",
            "--format",
            "dot",
            "--active",
            "implementing.coding",
        ],
        "",
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("digraph \"coding-agent\""), "{out}");
    assert!(
        out.contains("s_implementing_coding [label=\"coding\", style=\"rounded,filled\""),
        "{out}"
    );
    let (code, out, _) = cairn(&["diagram", "examples/coding-agent.yaml"], "");
    assert_eq!(code, 0);
    assert!(
        out.contains("s_planning --> s_plan_review: task.done"),
        "{out}"
    );
    let (code, _, err) = cairn(
        &["diagram", "examples/coding-agent.yaml", "--format", "png"],
        "",
    );
    assert_eq!(code, 2);
    assert!(err.contains("unknown diagram format `png`"), "{err}");
    let (code, _, err) = cairn(
        &[
            "diagram",
            "examples/coding-agent.yaml",
            "--active",
            "implementing.codng",
        ],
        "",
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("no such state; did you mean `implementing.coding`?"),
        "{err}"
    );
}
