//! The embedded CLI on a data directory: apply, machines, start, send, show, ls, history,
//! accepts, verify, with `--json`, exit codes, and the one-writer lock.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const ORDER: &str = r##"
machine: order
description: an order
context: { items: 0 }
initial: open
states:
  open:
    on:
      add: { target: open, assign: { items: "context.items + event.payload.qty" } }
      submit: { target: review.waiting, guard: "context.items > 0" }
  review:
    initial: waiting
    states:
      waiting: { on: { ok: "#shipped" } }
  shipped: { type: final }
"##;

fn cairn(data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_DATA", data)
        .env_remove("CAIRN_NAMESPACE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(data: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = cairn(data, &all);
    assert_eq!(code, 0, "cairn {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn the_write_path_commands_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("order.yaml");
    std::fs::write(&file, ORDER).unwrap();
    let f = file.to_str().unwrap();

    assert_eq!(
        json(&data, &["apply", f]),
        serde_json::json!({"machine": "order", "version": 1, "created": true})
    );
    assert_eq!(json(&data, &["apply", f])["created"], false);
    std::fs::write(&file, ORDER.replace("an order", "an order, v2")).unwrap();
    assert_eq!(json(&data, &["apply", f])["version"], 2);
    let machines = json(&data, &["machines"]);
    assert_eq!(
        (
            machines[0]["name"].as_str(),
            machines[0]["version"].as_u64()
        ),
        (Some("order"), Some(2))
    );

    let i = json(
        &data,
        &[
            "start",
            "order",
            "--id",
            "o1",
            "--label",
            "team=red",
            "--input",
            "{\"items\": 0}",
        ],
    );
    for field in [
        "id",
        "namespace",
        "machine",
        "machine_version",
        "status",
        "configuration",
        "context",
        "version",
        "created_at",
        "updated_at",
    ] {
        assert!(i.get(field).is_some(), "instance lacks `{field}`: {i}");
    }
    assert_eq!(
        (
            i["status"].as_str(),
            i["version"].as_u64(),
            i["machine_version"].as_u64()
        ),
        (Some("running"), Some(1), Some(2))
    );
    json(&data, &["start", "order", "--id", "o2"]);

    let s = json(
        &data,
        &[
            "send",
            "o1",
            "add",
            "--payload",
            "{\"qty\": 2}",
            "--key",
            "k1",
            "--actor",
            "ann",
            "--reason",
            "restock",
        ],
    );
    // An instance at the top level, with the transition beside it.
    assert_eq!(
        (s["version"].as_u64(), s["replayed"].as_bool()),
        (Some(2), Some(false))
    );
    assert_eq!(s["configuration"], serde_json::json!(["open"]));
    assert_eq!(s["transition"]["event"], "add");
    let again = json(
        &data,
        &[
            "send",
            "o1",
            "add",
            "--payload",
            "{\"qty\": 2}",
            "--key",
            "k1",
        ],
    );
    assert_eq!(
        (
            again["transition"]["version"].as_u64(),
            again["replayed"].as_bool()
        ),
        (Some(2), Some(true))
    );
    json(&data, &["send", "o1", "submit", "--expect-version", "2"]);

    let (code, _, err) = cairn(
        &data,
        &[
            "send",
            "o1",
            "add",
            "--payload",
            "{\"qty\": 1}",
            "--key",
            "k1",
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("idempotency key `k1`"), "{err}");
    let (code, _, err) = cairn(&data, &["send", "o1", "ok", "--expect-version", "2"]);
    assert_eq!(code, 4);
    assert!(err.contains("is at version 3, not 2"), "{err}");
    let (code, _, err) = cairn(&data, &["send", "o1", "add"]);
    assert_eq!(code, 4);
    assert!(err.contains("accepted now: ok"), "{err}");
    let (code, _, err) = cairn(&data, &["send", "o1", "ok", "--payload", "{bad"]);
    assert_eq!(code, 2);
    assert!(err.contains("`--payload` is not valid JSON"), "{err}");
    let (code, _, err) = cairn(&data, &["send", "o1", "timer.x"]);
    assert_eq!(code, 2);
    assert!(err.contains("reserved"), "{err}");
    let (code, _, err) = cairn(&data, &["show", "nope"]);
    assert_eq!(code, 3);
    assert!(err.contains("no instance `nope`"), "{err}");
    let (code, _, _) = cairn(&data, &["start", "order", "--id", "o1"]);
    assert_eq!(code, 4);

    let ids = |v: Value| -> Vec<String> {
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(json(&data, &["ls", "--state", "review"])), ["o1"]);
    assert_eq!(ids(json(&data, &["ls", "--label", "team=red"])), ["o1"]);
    assert_eq!(
        ids(json(
            &data,
            &["ls", "--status", "running", "--machine", "order"]
        )),
        ["o1", "o2"]
    );
    let page = json(&data, &["ls", "--limit", "1"]);
    assert_eq!(ids(page.clone()), ["o1"]);
    let next = page["next"].as_str().unwrap().to_string();
    assert_eq!(
        ids(json(&data, &["ls", "--limit", "1", "--after", &next])),
        ["o2"]
    );

    assert_eq!(json(&data, &["accepts", "o1"]), serde_json::json!(["ok"]));
    json(&data, &["send", "o1", "ok", "--actor", "bob"]);
    let h = json(&data, &["history", "o1"]);
    let events: Vec<Value> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].clone())
        .collect();
    assert_eq!(
        events,
        [Value::Null, "add".into(), "submit".into(), "ok".into()]
    );
    assert_eq!(h[1]["actor"], "ann");
    let seqs = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["seq"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(json(&data, &["history", "o1", "--tail", "2"])), [3, 4]);
    assert_eq!(
        seqs(json(
            &data,
            &["history", "o1", "--tail", "2", "--before", "3"]
        )),
        [1, 2]
    );
    assert_eq!(h[1]["reason"], "restock");
    assert_eq!(h[3]["to"], serde_json::json!(["shipped"]));
    assert_eq!(json(&data, &["show", "o1"])["status"], "completed");

    let v = json(&data, &["verify"]);
    assert_eq!(
        (v["ok"].as_bool(), v["checked"].as_u64()),
        (Some(true), Some(2))
    );
    let (code, out, _) = cairn(&data, &["verify", "o1"]);
    assert_eq!(code, 0);
    assert!(out.contains("ok      o1  (4 versions)"), "{out}");

    // Namespaces are isolated.
    let (code, _, _) = cairn(&data, &["--namespace", "other", "show", "o1"]);
    assert_eq!(code, 3);
}

#[test]
fn the_cli_refuses_a_data_directory_another_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "bench",
            "W1-events",
            "--n",
            "0",
            "--concurrency",
            "1",
            "--acks",
            "--data",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(common::Killed)
        .unwrap();
    // Wait for its first acknowledgement: by then it holds the lock.
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.contains("\"ack\""), "{line}");
    let (code, _, err) = cairn(dir.path(), &["ls"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("in use by another process") && err.contains("--server"),
        "{err}"
    );
    // Once the holder is gone, the directory opens again.
    let (code, _, err) = cairn(dir.path(), &["ls", "--namespace", "bench"]);
    assert_eq!(code, 0, "{err}");
}

/// `cairn bench soak` with a 1 MiB WAL limit: under sustained load (and retention of
/// instances and of the log) the WAL never grows past its limit by more than a commit
/// (the one that crossed it), and one more for each time readers held up the checkpoint.
#[test]
fn the_wal_stays_within_its_limit_under_sustained_load() {
    const LIMIT: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "bench",
            "soak",
            "--minutes",
            "3",
            "--report-every",
            "3",
            "--concurrency",
            "8",
            "--wal-limit",
            &LIMIT.to_string(),
            "--data",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert!(l["workflows"].as_u64().unwrap() > 0, "{l}");
        assert!(l["wal_restarts"].as_u64().unwrap() > 0, "{l}");
        let wal = l["wal_max_bytes"].as_u64().unwrap();
        let commit = l["wal_commit_bytes_max"].as_u64().unwrap();
        let held_up = l["wal_restarts_busy_total"].as_u64().unwrap();
        assert!(commit > 0 && commit < LIMIT, "{l}");
        assert!(wal > 0 && wal <= LIMIT + commit * (1 + held_up), "{l}");
    }
    // Log retention ran: the oldest entries are gone and the horizon says so.
    let store =
        cairn_store_any::SqliteStore::open(dir.path(), cairn_store_any::SqliteOptions::default())
            .unwrap();
    let horizon = cairn_store::Reader::log_horizon(&store).unwrap();
    assert!(horizon > 0);
    let first = cairn_store::Reader::log(&store, 0, 1).unwrap();
    assert!(first.iter().all(|e| e.position > horizon), "{first:?}");
}

#[test]
fn oversized_payloads_are_refused_with_the_limit_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("order.yaml");
    std::fs::write(&file, ORDER).unwrap();
    let data = dir.path().join("data");
    json(&data, &["apply", file.to_str().unwrap()]);
    json(&data, &["start", "order", "--id", "o"]);
    let big = format!("{{\"qty\": 1, \"pad\": \"{}\"}}", "x".repeat(300));
    let (code, _, err) = cairn(
        &data,
        &[
            "--max-payload",
            "256",
            "send",
            "o",
            "add",
            "--payload",
            &big,
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("over the limit of 256 bytes"), "{err}");
    assert_eq!(json(&data, &["show", "o"])["version"], 1);
    assert_eq!(json(&data, &["history", "o"]).as_array().unwrap().len(), 1);
    // Under the default limit of 1 MiB the same payload is fine.
    json(&data, &["send", "o", "add", "--payload", &big]);
}

/// A data directory an older Cairn left with a definition too deep to read back: every
/// command still works, `cairn repair` deletes it, and `cairn machine rm` deletes a
/// version no instance runs on (never one that does).
#[test]
fn repair_and_machine_rm_clean_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let file = data.join("order.yaml");
    std::fs::write(&file, ORDER).unwrap();
    json(data, &["apply", file.to_str().unwrap()]);
    json(data, &["start", "order", "--id", "o"]);
    let deep = format!(
        "{{\"machine\":\"old\",\"context\":{}0{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    {
        let db = rusqlite::Connection::open(data.join("cairn.db")).unwrap();
        db.execute(
            "INSERT INTO machines (namespace, name, version, digest, definition, created_at) VALUES ('default', 'old', 1, 'x', ?1, '2026-01-01T00:00:00Z')",
            [deep],
        )
        .unwrap();
    }
    assert_eq!(json(data, &["machines"]).as_array().unwrap().len(), 2);
    let (code, _, err) = cairn(data, &["start", "old"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cairn repair"), "{err}");
    let dry = json(data, &["repair", "--dry-run"]);
    assert_eq!(dry["deletable"][0]["machine"], "old");
    let done = json(data, &["repair"]);
    assert_eq!(done["deleted"][0]["machine"], "old");
    assert_eq!(json(data, &["machines"]).as_array().unwrap().len(), 1);
    let (code, out, _) = cairn(data, &["repair"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to repair"), "{out}");
    // `order` version 1 runs `o`: refused until `o` is gone.
    let (code, _, err) = cairn(data, &["machine", "rm", "order", "1"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("runs 1 instance"), "{err}");
    json(data, &["rm", "o"]);
    assert_eq!(
        json(data, &["machine", "rm", "order", "1"])["deleted"]["version"],
        1
    );
    assert_eq!(cairn(data, &["machine", "rm", "order", "1"]).0, 3);
    assert_eq!(json(data, &["apply", file.to_str().unwrap()])["version"], 2);
}

/// `cairn show ID | head -c 10`: the reader goes away mid-output; the command ends quietly
/// with the status of a closed pipe (141, as other Unix tools), never a panic report.
#[test]
fn a_closed_output_pipe_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("order.yaml");
    std::fs::write(&file, ORDER).unwrap();
    json(&data, &["apply", file.to_str().unwrap()]);
    let input = format!("{{\"pad\": \"{}\"}}", "x".repeat(100 * 1024));
    json(&data, &["start", "order", "--id", "big", "--input", &input]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--json", "show", "big"])
        .env("CAIRN_DATA", &data)
        .env_remove("CAIRN_NAMESPACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// `bench W1-tasks` with concurrent handlers: every workflow completes, the JSON line
/// names the shape it ran with, and every instance passes `verify`.
#[test]
fn bench_w1_tasks_runs_with_concurrent_handlers_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, out, err) = cairn(
        dir.path(),
        &[
            "bench",
            "W1-tasks",
            "--n",
            "60",
            "--concurrency",
            "8",
            "--workers",
            "2",
            "--worker-concurrency",
            "4",
            "--json",
            "--data",
            data,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            line["n"].as_u64(),
            line["workers"].as_u64(),
            line["worker_concurrency"].as_u64()
        ),
        (Some(60), Some(2), Some(4)),
        "{line}"
    );
    let (code, out, err) = cairn(dir.path(), &["--json", "verify", "--namespace", "bench"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["instances"].as_array().map(Vec::len), Some(60));
}

/// `cairn worker --concurrency N` runs N commands at once (their attempts overlap), claims
/// no more than it runs, and `--max-tasks` counts across them.
#[test]
fn a_worker_runs_several_commands_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.yaml");
    std::fs::write(
        &file,
        "machine: job\ninitial: w\nstates:\n  w:\n    task: { queue: q }\n    on: { task.done: d, task.failed: d }\n  d: { type: final }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (code, _, err) = cairn(&data, &["apply", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for i in 0..6 {
        let (code, _, err) = cairn(&data, &["start", "job", "--id", &format!("j{i}")]);
        assert_eq!(code, 0, "{err}");
    }
    let worker = |extra: &[&str]| {
        let mut args = vec!["--json", "worker", "--queue", "q", "--concurrency", "3"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", "cat > /dev/null; sleep 0.3; echo '{}'"]);
        let (code, out, err) = cairn(&data, &args);
        assert_eq!(code, 0, "{err}");
        out.lines().count()
    };
    assert_eq!(
        worker(&["--max-tasks", "4"]),
        4,
        "--max-tasks counts across loops"
    );
    assert_eq!(worker(&["--until-idle"]), 2, "the rest, then idle");
    let (code, out, err) = cairn(&data, &["--json", "ls"]);
    assert_eq!(code, 0, "{err}");
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = page["instances"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert!(items.iter().all(|i| i["status"] == "completed"), "{page}");
    // The attempts of the first run overlap: three commands ran at once.
    let mut spans: Vec<(String, String)> = Vec::new();
    for i in 0..6 {
        let (_, out, _) = cairn(&data, &["--json", "export", &format!("j{i}")]);
        let e: serde_json::Value = serde_json::from_str(&out).unwrap();
        let a = &e["tasks"][0]["attempts"][0];
        spans.push((
            a["started_at"].as_str().unwrap().to_string(),
            a["ended_at"].as_str().unwrap().to_string(),
        ));
    }
    let overlapping = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlapping, "no two attempts overlapped: {spans:?}");
    let (code, out, err) = cairn(&data, &["--json", "verify"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["checked"].as_u64(), report["failed"].as_u64()),
        (Some(6), Some(0)),
        "{report}"
    );
}

/// `cairn bench memory` on a small burst: the server it starts takes every start, its
/// resident memory is read from /proc at each point, and the claims after the burst find
/// the queue full. (The 100,000 burst and its 200 MB limit are the bench's, not CI's.)
#[test]
fn the_memory_bench_reads_the_servers_memory_through_a_burst() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["bench", "memory", "--n", "3000", "--concurrency", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            line["tasks_queued"].as_u64(),
            line["claimed_after"].as_u64()
        ),
        (Some(3000), Some(2000)),
        "{line}"
    );
    let (idle, peak) = (
        line["rss_idle_mb"].as_f64().unwrap(),
        line["rss_peak_mb"].as_f64().unwrap(),
    );
    assert!(idle > 1.0 && peak >= idle && peak < 200.0, "{line}");
}

/// `cairn bench W4` on 1,000 instances: the copies of the engine's templates replay under
/// `verify`, the server answers on that data, pages filtered by state and by label are
/// full, and W1 runs with the data present and on an empty store.
#[test]
fn the_scale_bench_loads_what_the_engine_writes_and_serves_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "bench",
            "W4",
            "--instances",
            "1000",
            "--n",
            "50",
            "--concurrency",
            "4",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    common::assert_w4_line(&line);
}
