//! Every CLI command against a running `cairn serve` through `--server`, with the same
//! output shapes and exit codes as embedded mode, and a `cairn worker` claiming over HTTP.
//! On PostgreSQL too, with `CAIRN_TEST_BACKEND=postgres` (`scripts/test` runs both).

use crate::common;

use std::path::Path;
use std::process::Child;

use serde_json::json;

struct Server {
    child: Child,
    url: String,
    _store: cairn_store_any::testing::Backend,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path) -> Server {
    let store = cairn_store_any::testing::Backend::new();
    let extra: Vec<String> = match store.database() {
        Some(url) => vec!["--database".into(), url.into()],
        None => Vec::new(),
    };
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (child, url, _) =
        common::spawn_serve(data, "127.0.0.1:0", &extra).expect("cairn serve started");
    Server {
        child,
        url,
        _store: store,
    }
}

use common::{ok_at as ok, run_at as run};

#[test]
fn the_cli_works_against_a_server_with_the_same_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = serve(&tmp.path().join("data"));
    let u = s.url.as_str();
    let machine = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/coding-agent.yaml");
    assert_eq!(
        ok(u, &["apply", machine.to_str().unwrap()])["created"],
        true
    );
    assert_eq!(ok(u, &["machines"])[0]["name"], "coding-agent");
    let i = ok(
        u,
        &[
            "start",
            "coding-agent",
            "--id",
            "ca",
            "--input",
            r#"{"request": "x"}"#,
            "--label",
            "team=core",
        ],
    );
    assert_eq!(
        (i["version"].as_u64(), i["configuration"].clone()),
        (Some(1), json!(["planning"]))
    );
    assert_eq!(
        ok(u, &["accepts", "ca"]),
        json!(["task.done", "task.failed"])
    );

    // A worker over HTTP completes the plan task.
    let (code, out, err) = run(
        u,
        &[
            "worker",
            "--queue",
            "agents",
            "--max-tasks",
            "1",
            "--",
            "sh",
            "-c",
            "cat >/dev/null; echo '{\"plan\": \"p\"}'",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("completed"), "{out}");
    assert_eq!(
        ok(u, &["show", "ca"])["configuration"],
        json!(["plan_review"])
    );
    assert_eq!(
        ok(u, &["tasks", "--instance", "ca"])[0]["status"],
        "completed"
    );

    ok(u, &["checkpoint", "ca", "reviewing-plan"]);
    let pending = ok(u, &["approvals"]);
    assert_eq!(pending[0]["state"], "plan_review");
    let d = ok(
        u,
        &["reject", "ca", "--reason", "too short", "--actor", "ann"],
    );
    assert_eq!(d["instance"]["configuration"], json!(["planning"]));
    assert_eq!(
        ok(u, &["ls", "--label", "team=core", "--state", "planning"])["instances"][0]["id"],
        "ca"
    );
    let f = ok(
        u,
        &["fork", "ca", "--from", "reviewing-plan", "--id", "ca2"],
    );
    assert_eq!(f["configuration"], json!(["plan_review"]));
    assert_eq!(ok(u, &["pause", "ca2"])["status"], "paused");
    assert_eq!(ok(u, &["resume", "ca2"])["status"], "running");
    ok(u, &["approve", "ca2", "--actor", "bob"]);
    assert_eq!(
        ok(u, &["show", "ca2"])["configuration"],
        json!(["implementing.coding"])
    );
    assert_eq!(ok(u, &["cancel", "ca2"])["status"], "cancelled");
    let h = ok(u, &["history", "ca"]);
    assert_eq!(h.as_array().unwrap().last().unwrap()["reason"], "too short");
    let tail = ok(u, &["history", "ca", "--tail", "2"]);
    assert_eq!(
        tail.as_array().unwrap()[..],
        h.as_array().unwrap()[h.as_array().unwrap().len() - 2..]
    );
    assert_eq!(ok(u, &["export", "ca"])["instance"]["id"], "ca");
    assert!(ok(u, &["stats"])["transitions"].as_u64().unwrap() >= 3);
    assert_eq!(ok(u, &["verify"])["ok"], true);
    assert_eq!(ok(u, &["tick"])["timers_fired"], 0);
    let backup = tmp.path().join("b.db");
    if cairn_store_any::testing::on_postgres() {
        // PostgreSQL is backed up with its own tools: the server says so.
        let (code, _, err) = run(u, &["backup", backup.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(err.contains("no online backup"), "{err}");
    } else {
        // The server streams the copy; the file is written here, and nothing stays there.
        let bytes = ok(u, &["backup", backup.to_str().unwrap()])["bytes"]
            .as_u64()
            .unwrap();
        assert!(bytes > 0);
        assert_eq!(std::fs::metadata(&backup).unwrap().len(), bytes);
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("data"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("backup"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let (code, _, err) = run(u, &["backup", backup.to_str().unwrap()]);
        assert_eq!(code, 4, "an existing file is never overwritten: {err}");
    }
    ok(u, &["rm", "ca2"]);

    // The same exit codes as embedded mode.
    assert_eq!(run(u, &["show", "nope"]).0, 3);
    assert_eq!(run(u, &["send", "ca", "nope"]).0, 4);
    assert_eq!(run(u, &["send", "ca", "task.done"]).0, 2);
    assert_eq!(run(u, &["send", "ca", "x", "--expect-version", "1"]).0, 4);
    assert_eq!(
        run(u, &["start", "coding-agent", "--id", "ca"]).0,
        2,
        "input_schema requires a request"
    );
    assert_eq!(
        run(
            u,
            &[
                "start",
                "coding-agent",
                "--id",
                "ca",
                "--input",
                r#"{"request": "y"}"#
            ]
        )
        .0,
        4,
        "the id exists"
    );
    assert_eq!(run(u, &["approve", "ca"]).0, 4);
    let (code, _, err) = run(u, &["restore", backup.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("stop `cairn serve`"), "{err}");
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "machine: b\ninitial: x\nstates: {a: {}}\n").unwrap();
    let (code, _, err) = run(u, &["apply", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a child state"), "{err}");
    let (code, _, err) = run("http://127.0.0.1:1", &["ls"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the server"), "{err}");
}
