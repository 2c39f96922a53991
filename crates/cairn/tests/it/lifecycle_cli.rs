//! The lifecycle commands end to end on a data directory: the seed 002 story (pause,
//! queued events, resume, cancel), approvals, checkpoints and fork, exports, backup and
//! restore, stats, rm, and timers through `cairn tick`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

struct Dir {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    root: PathBuf,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    Dir {
        data: tmp.path().join("data"),
        root: tmp.path().to_path_buf(),
        _tmp: tmp,
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn run(d: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_DATA", d)
        .env("USER", "tester")
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
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("cairn {args:?} printed no JSON ({e}): {out}"))
}

#[test]
fn seed_002_pause_queues_events_resume_applies_them_cancel_ends_it() {
    let d = dir();
    let wf = examples().join("research-workflow.yaml");
    ok(&d.data, &["apply", wf.to_str().unwrap()]);
    ok(&d.data, &["start", "research-workflow", "--id", "run1"]);
    ok(
        &d.data,
        &[
            "send",
            "run1",
            "describe",
            "--payload",
            r#"{"task": "fit the CMB"}"#,
        ],
    );
    ok(&d.data, &["send", "run1", "plan"]);
    ok(
        &d.data,
        &[
            "send",
            "run1",
            "planned",
            "--payload",
            r#"{"plan": ["fetch", "fit"]}"#,
        ],
    );

    let p = ok(&d.data, &["pause", "run1", "--reason", "maintenance"]);
    assert_eq!(p["status"], "paused");
    let (code, _, err) = run(&d.data, &["pause", "run1"]);
    assert_eq!(code, 4, "{err}");
    for ev in ["pause", "resume", "need_approval"] {
        let s = ok(&d.data, &["send", "run1", ev]);
        assert_eq!(
            (s["queued"].as_bool(), s["version"].as_u64()),
            (Some(true), Some(4)),
            "{ev}: {s}"
        );
    }
    assert_eq!(
        ok(&d.data, &["show", "run1"])["configuration"],
        json!(["executing"])
    );
    assert_eq!(
        ok(&d.data, &["ls", "--status", "paused"])["instances"][0]["id"],
        "run1"
    );

    let r = ok(&d.data, &["resume", "run1"]);
    assert_eq!(
        (
            r["status"].as_str(),
            r["configuration"].clone(),
            r["version"].as_u64()
        ),
        (Some("running"), json!(["waiting_approval"]), Some(7))
    );
    let kinds: Vec<String> = ok(&d.data, &["history", "run1"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["event"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(format!("({})", t["kind"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "(start)",
            "describe",
            "plan",
            "planned",
            "(pause)",
            "(resume)",
            "pause",
            "resume",
            "need_approval"
        ]
    );

    let pending = ok(&d.data, &["approvals"]);
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["state"], "waiting_approval");
    let a = ok(
        &d.data,
        &["approve", "run1", "--actor", "pi", "--reason", "go on"],
    );
    assert_eq!(
        (
            a["approval"]["status"].as_str(),
            a["instance"]["configuration"].clone()
        ),
        (Some("approved"), json!(["executing"]))
    );
    let (code, _, err) = run(&d.data, &["approve", "run1"]);
    assert_eq!(code, 4, "deciding when none is pending is refused: {err}");
    assert!(err.contains("no pending approval"), "{err}");

    let c = ok(&d.data, &["cancel", "run1", "--reason", "superseded"]);
    assert_eq!(c["status"], "cancelled");
    let (code, _, err) = run(&d.data, &["send", "run1", "finish"]);
    assert_eq!(code, 4);
    assert!(err.contains("cancelled"), "{err}");
    let (code, _, _) = run(&d.data, &["resume", "run1"]);
    assert_eq!(code, 4);
    assert_eq!(ok(&d.data, &["verify"])["ok"], true);
}

const GATES: &str = r##"
machine: gates
context: { n: 0 }
initial: work
states:
  work:
    on: { go: gates, tick: { assign: { n: "context.n + 1" } } }
  gates:
    type: parallel
    states:
      # A decision reaches only the region that asked (outcomes are addressed); the
      # guards show that the payload names the requesting state too.
      legal:
        initial: ask
        states:
          ask:
            approval: "Legal ok?"
            on:
              approve: { target: ok, guard: "event.payload.approval == 'gates.legal.ask'" }
              reject: "#back"
          ok: { type: final }
      money:
        initial: ask
        states:
          ask:
            approval: "Budget ok?"
            on: { approve: { target: ok, guard: "event.payload.approval == 'gates.money.ask'" } }
          ok: { type: final }
    on_done: done
  back: { on: { retry: work } }
  done: { type: final }
"##;

#[test]
fn approvals_reject_checkpoint_fork_export_stats_and_rm() {
    let d = dir();
    let file = d.root.join("gates.yaml");
    std::fs::write(&file, GATES).unwrap();
    ok(&d.data, &["apply", file.to_str().unwrap()]);
    ok(&d.data, &["start", "gates", "--id", "g"]);
    ok(&d.data, &["send", "g", "tick"]);
    ok(&d.data, &["checkpoint", "g", "before-gates"]);
    ok(&d.data, &["send", "g", "go"]);
    let pending = ok(&d.data, &["approvals", "--instance", "g"]);
    assert_eq!(pending.as_array().unwrap().len(), 2);
    // `show` says what the instance waits for: both approvals, by state and prompt.
    let (code, out, err) = run(&d.data, &["show", "g"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("  waits for approval ").count(), 2, "{out}");
    assert!(out.contains(" in gates.money.ask: "), "{out}");
    let shown = ok(&d.data, &["show", "g"]);
    assert_eq!(
        (
            shown["configuration"].as_array().map(Vec::len),
            shown["waiting"]["approvals"].as_array().map(Vec::len),
            shown["waiting"]["tasks"].as_array().map(Vec::len)
        ),
        (Some(2), Some(2), Some(0))
    );
    // The decision is not an event a client sends: the refusal and `accepts` say how.
    let (code, _, err) = run(&d.data, &["send", "g", "approve"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("event `approve` is reserved: an approver decides it: `cairn approve ID`"),
        "{err}"
    );
    let (code, out, err) = run(&d.data, &["accepts", "g"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l.starts_with("approve")
            && l.contains("(an approver decides it: `cairn approve ID`")),
        "{out}"
    );
    // Two pending: the decision must name one.
    let (code, _, err) = run(&d.data, &["approve", "g"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--approval"), "{err}");
    let money = pending
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["state"] == "gates.money.ask")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let legal = pending
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["state"] == "gates.legal.ask")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        &d.data,
        &["approve", "g", "--approval", &money, "--actor", "cfo"],
    );
    let (code, _, _) = run(&d.data, &["reject", "g", "--approval", &legal]);
    assert_eq!(code, 2, "reject needs --reason");
    let r = ok(
        &d.data,
        &[
            "reject",
            "g",
            "--approval",
            &legal,
            "--reason",
            "missing DPA",
            "--actor",
            "counsel",
        ],
    );
    assert_eq!(r["instance"]["configuration"], json!(["back"]));
    assert_eq!(r["transition"]["reason"], "missing DPA");
    let all = ok(
        &d.data,
        &["approvals", "--status", "all", "--instance", "g"],
    );
    let statuses: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "approved").count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == "rejected").count(), 1);

    let f = ok(
        &d.data,
        &[
            "fork",
            "g",
            "--from",
            "before-gates",
            "--id",
            "g2",
            "--patch",
            r#"{"n": 41}"#,
        ],
    );
    assert_eq!(
        (
            f["id"].as_str(),
            f["configuration"].clone(),
            f["context"]["n"].clone()
        ),
        (Some("g2"), json!(["work"]), json!(41))
    );
    let f3 = ok(&d.data, &["fork", "g", "--from", "3", "--id", "g3"]);
    assert_eq!(
        f3["configuration"],
        json!(["gates.legal.ask", "gates.money.ask"])
    );
    assert_eq!(
        ok(&d.data, &["approvals", "--instance", "g3"])
            .as_array()
            .unwrap()
            .len(),
        2,
        "approvals requested afresh"
    );
    let (code, _, err) = run(&d.data, &["fork", "g", "--from", "nope"]);
    assert_eq!(code, 3, "{err}");

    let e = ok(&d.data, &["export", "g", "--format", "json"]);
    assert_eq!(e["instance"]["id"], "g");
    assert_eq!(e["approvals"].as_array().unwrap().len(), 2);
    assert_eq!(e["checkpoints"][0]["name"], "before-gates");
    let (code, md, _) = run(&d.data, &["export", "g", "--format", "markdown"]);
    assert_eq!(code, 0);
    assert!(md.starts_with("# Instance `g`"), "{md}");
    assert!(
        md.contains("## Approvals") && md.contains("missing DPA") && md.contains("## Checkpoints"),
        "{md}"
    );
    let (code, jsonl, _) = run(&d.data, &["export", "g", "--format", "jsonl"]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as u64,
        e["instance"]["version"].as_u64().unwrap()
    );
    assert!(lines.iter().all(|l| l["instance"] == "g"));
    let (code, _, err) = run(&d.data, &["export", "g", "--format", "pdf"]);
    assert_eq!(code, 2, "{err}");

    let s = ok(&d.data, &["stats"]);
    assert_eq!(s["instances"]["gates"]["running"], 3);
    assert_eq!(
        s["transitions"], 5,
        "g: start, tick, go, approve, reject; fork bases are not transitions"
    );
    assert!(
        s["mean_time_in_state_ms"]["gates"]["work"]
            .as_f64()
            .is_some()
    );

    ok(&d.data, &["rm", "g3"]);
    let (code, _, _) = run(&d.data, &["show", "g3"]);
    assert_eq!(code, 3);
    ok(&d.data, &["cancel", "g2"]);
    let removed = ok(&d.data, &["rm", "--finished-before", "0s"]);
    assert_eq!(removed["deleted"], json!(["g2"]));
    assert_eq!(ok(&d.data, &["verify"])["ok"], true);
}

#[test]
fn backup_and_restore_then_verify_and_continue() {
    let d = dir();
    let wf = examples().join("research-workflow.yaml");
    ok(&d.data, &["apply", wf.to_str().unwrap()]);
    ok(&d.data, &["start", "research-workflow", "--id", "kept"]);
    ok(
        &d.data,
        &["send", "kept", "describe", "--payload", r#"{"task": "x"}"#],
    );
    let backup = d.root.join("backup.db");
    let b = ok(&d.data, &["backup", backup.to_str().unwrap()]);
    assert!(b["bytes"].as_u64().unwrap() > 0);
    let (code, _, err) = run(&d.data, &["backup", backup.to_str().unwrap()]);
    assert_ne!(code, 0, "an existing backup is never overwritten: {err}");
    // Changes after the backup are lost by the restore, as they should be.
    ok(
        &d.data,
        &["start", "research-workflow", "--id", "after-backup"],
    );
    ok(&d.data, &["restore", backup.to_str().unwrap()]);
    let (code, _, _) = run(&d.data, &["show", "after-backup"]);
    assert_eq!(code, 3);
    assert_eq!(ok(&d.data, &["verify"])["ok"], true);
    ok(&d.data, &["send", "kept", "plan"]);
    assert_eq!(
        ok(&d.data, &["show", "kept"])["configuration"],
        json!(["planning"])
    );
    // Garbage is refused and changes nothing.
    let junk = d.root.join("junk.db");
    std::fs::write(&junk, "definitely not sqlite").unwrap();
    let (code, _, err) = run(&d.data, &["restore", junk.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(ok(&d.data, &["show", "kept"])["version"], 3);
}

#[test]
fn tick_fires_due_timers_once() {
    let d = dir();
    let file = d.root.join("t.yaml");
    std::fs::write(&file, "machine: t\ninitial: wait\nstates:\n  wait: { after: { 1ms: late }, on: { go: done } }\n  late: {}\n  done: {}\n").unwrap();
    ok(&d.data, &["apply", file.to_str().unwrap()]);
    ok(&d.data, &["start", "t", "--id", "a"]);
    ok(&d.data, &["start", "t", "--id", "b"]);
    ok(&d.data, &["send", "b", "go"]);
    // A 1 ms timer is due by the time the next process runs.
    let t = ok(&d.data, &["tick"]);
    assert_eq!(t["timers_fired"], 1);
    assert_eq!(ok(&d.data, &["tick"])["timers_fired"], 0);
    assert_eq!(
        ok(&d.data, &["show", "a"])["configuration"],
        json!(["late"])
    );
    assert_eq!(
        ok(&d.data, &["show", "b"])["configuration"],
        json!(["done"])
    );
    let h = ok(&d.data, &["history", "a"]);
    assert_eq!(h[1]["event"], "timer.wait.1ms");
}

/// Every command that changes an instance prints one shape: what happened (with the
/// transition when there is one), then the instance on one line.
#[test]
fn commands_that_change_an_instance_print_one_shape() {
    let d = dir();
    let file = d.root.join("gates.yaml");
    std::fs::write(&file, GATES).unwrap();
    ok(&d.data, &["apply", file.to_str().unwrap()]);
    ok(&d.data, &["start", "gates", "--id", "s"]);
    let lines = |args: &[&str]| -> Vec<String> {
        let (code, out, err) = run(&d.data, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out.lines().map(str::to_string).collect()
    };
    let sent = lines(&["send", "s", "tick"]);
    assert_eq!(sent[0], "tick: work -> work  version 2", "{sent:?}");
    assert!(
        sent[1].starts_with("s  gates@1  running  [work]  version 2"),
        "{sent:?}"
    );
    let paused = lines(&["pause", "s"]);
    assert_eq!(paused[0], "paused");
    assert!(
        paused[1].starts_with("s  gates@1  paused  [work]"),
        "{paused:?}"
    );
    let queued = lines(&["send", "s", "go"]);
    assert!(queued[0].starts_with("queued: "), "{queued:?}");
    assert_eq!(lines(&["resume", "s"])[0], "resumed");
    let pending = ok(&d.data, &["approvals", "--instance", "s"]);
    let first = pending[0]["id"].as_str().unwrap();
    let decided = lines(&["approve", "s", "--approval", first, "--actor", "pi"]);
    assert!(
        decided[0].starts_with("approved approval ") && decided[0].contains(" -> "),
        "{decided:?}"
    );
    assert!(
        decided[1].starts_with("s  gates@1  running  ["),
        "{decided:?}"
    );
    // A stored machine's diagram by name, the instance's active states marked.
    let (code, out, err) = run(
        &d.data,
        &["diagram", "gates", "--instance", "s", "--format", "dot"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("digraph \"gates\"") && out.contains("style=\"rounded,filled\""),
        "{out}"
    );
    let (code, _, err) = run(&d.data, &["diagram", "nosuch"]);
    assert_eq!(code, 3, "an unknown machine is not found: {err}");
}
