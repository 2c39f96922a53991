//! `cairn migrate-store`: a SQLite data directory with instances mid-flight (tasks leased,
//! approvals pending, timers set, checkpoints, children, triggers, schedules, tokens,
//! idempotency keys) copied into PostgreSQL; every instance's export is the same on both
//! sides, the work carries on on PostgreSQL, and a second migration into the now
//! non-empty database is refused.

use crate::common;

use std::path::Path;

use cairn_store_any::testing::TestDb;
use common::{ok_in, run_in};
use serde_json::{Value, json};

const PARENT: &str = r#"
machine: parent
initial: waiting
states:
  waiting:
    spawn: { machine: child, id: "instance.id + '-kid'" }
    after: { 1h: late }
    on:
      child.done: done
  late: { type: final }
  done: { type: final }
"#;

const CHILD: &str =
    "machine: child\ninitial: a\nstates:\n  a: { on: { go: b } }\n  b: { type: final }\n";

fn on_pg(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json", "--database", url];
    all.extend_from_slice(args);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(&all)
        .env("CAIRN_DATA", "/nonexistent/never-opened")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn a_data_directory_moves_to_postgres_with_everything_and_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let file = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    ok_in(
        &d,
        &[
            "apply",
            examples.join("coding-agent.yaml").to_str().unwrap(),
        ],
    );
    ok_in(&d, &["apply", &file("child.yaml", CHILD)]);
    ok_in(&d, &["apply", &file("parent.yaml", PARENT)]);
    for id in ["ca1", "ca2"] {
        ok_in(
            &d,
            &[
                "start",
                "coding-agent",
                "--id",
                id,
                "--input",
                r#"{"request": "x"}"#,
                "--label",
                "team=a",
            ],
        );
    }
    ok_in(&d, &["checkpoint", "ca1", "begin"]);
    // ca1: its plan task done, waiting for a human; ca2: its task leased to a worker.
    let (code, _, err) = run_in(
        &d,
        &[
            "worker",
            "--queue",
            "agents",
            "--max-tasks",
            "1",
            "--",
            "sh",
            "-c",
            "cat > /dev/null; echo '{\"plan\": \"p\"}'",
        ],
    );
    assert_eq!(code, 0, "{err}");
    ok_in(&d, &["start", "parent", "--id", "p1"]);
    ok_in(&d, &["send", "p1-kid", "go", "--key", "k1"]);
    ok_in(&d, &["start", "parent", "--id", "p2"]);
    ok_in(
        &d,
        &[
            "trigger",
            "add",
            "t1",
            "--machine",
            "child",
            "--on-status",
            "completed",
            "--send",
            "nudge",
            "--to",
            "'nobody'",
        ],
    );
    ok_in(
        &d,
        &[
            "schedule",
            "add",
            "s1",
            "--cron",
            "0 3 * * *",
            "--machine",
            "child",
        ],
    );
    ok_in(&d, &["token", "create", "--role", "viewer", "--scope", "a"]);
    let ids: Vec<String> = ok_in(&d, &["ls", "--limit", "100"])["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 6);
    let before: Vec<Value> = ids
        .iter()
        .map(|id| ok_in(&d, &["export", id, "--format", "json"]))
        .collect();

    let db = TestDb::create().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--json",
            "migrate-store",
            "--from",
            d.to_str().unwrap(),
            "--to",
            &db.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["instances_verified"], 6);
    assert!(report["rows"]["history"].as_u64().unwrap() > 6, "{report}");

    // The same figures (counts and time spent in states), instances and records.
    assert_eq!(on_pg(&db.url, &["stats"]), ok_in(&d, &["stats"]));
    for (id, b) in ids.iter().zip(&before) {
        assert_eq!(
            &on_pg(&db.url, &["export", id, "--format", "json"]),
            b,
            "{id}"
        );
    }
    assert_eq!(
        on_pg(&db.url, &["trigger", "ls"]).as_array().unwrap().len(),
        1
    );
    assert_eq!(
        on_pg(&db.url, &["schedule", "ls"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        on_pg(&db.url, &["token", "ls"]).as_array().unwrap().len(),
        1
    );
    assert_eq!(
        on_pg(&db.url, &["ls", "--label", "team=a"])["instances"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The work carries on: a key used before the move still replays, the approval is
    // decided, the child tree still reports to its parent.
    let again = on_pg(&db.url, &["send", "p1-kid", "go", "--key", "k1"]);
    assert_eq!(again["replayed"], true, "{again}");
    on_pg(&db.url, &["approve", "ca1", "--actor", "ann"]);
    assert_eq!(
        on_pg(&db.url, &["show", "ca1"])["configuration"],
        json!(["implementing.coding"])
    );
    assert_eq!(on_pg(&db.url, &["show", "p1"])["status"], "completed");
    on_pg(&db.url, &["send", "p2-kid", "go"]);
    assert_eq!(on_pg(&db.url, &["show", "p2"])["status"], "completed");
    on_pg(&db.url, &["start", "child", "--id", "fresh"]);
    let v = on_pg(&db.url, &["verify"]);
    assert_eq!(
        (v["ok"].clone(), v["checked"].clone()),
        (json!(true), json!(7)),
        "{v}"
    );

    // Into a database that holds Cairn data: refused, nothing touched.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "migrate-store",
            "--from",
            d.to_str().unwrap(),
            "--to",
            &db.url,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds Cairn data"));
    // Bad arguments say what is wrong.
    let (code, _, err) = run_in(
        &d,
        &["migrate-store", "--from", "/nonexistent", "--to", &db.url],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no Cairn data directory"), "{err}");
    let (code, _, err) = run_in(
        &d,
        &[
            "migrate-store",
            "--from",
            d.to_str().unwrap(),
            "--to",
            "mysql://x",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("expected a PostgreSQL URL"), "{err}");
}
