//! Child instances, triggers and schedules through the CLI: `ls --parent`, `tree`,
//! `trigger add|ls|rm` and `schedule add|ls|rm` in embedded mode; and a `cairn serve`
//! SIGKILLed while children finish, report to their parents and set off a trigger, and a
//! schedule ticks. Afterwards every parent has heard from its child exactly once, every
//! trigger fired exactly once, no tick ran twice, no child is left running without its
//! parent, the outbox is empty, and `verify` passes for all.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_store::Reader;
use serde_json::Value;

const STEP: &str = r#"
machine: step
initial: working
states:
  working: { on: { finish: { target: done, assign: { result: "event.payload.value" } } } }
  done: { type: final }
"#;

const PARENT: &str = r#"
machine: parent
initial: running
states:
  running:
    spawn: { machine: step, id: "instance.id + '.child'" }
    on: { child.done: { target: finished, assign: { got: "event.payload.output.result" } } }
  finished: { type: final }
"#;

use common::run_in as embedded;

fn ok(data: &Path, args: &[&str]) -> Value {
    let (code, out, err) = embedded(data, args);
    assert_eq!(code, 0, "cairn {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or(Value::String(out))
}

fn apply_both(dir: &Path, run: impl Fn(&[&str])) {
    for (name, text) in [("step.yaml", STEP), ("parent.yaml", PARENT)] {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        run(&["apply", f.to_str().unwrap()]);
    }
}

#[test]
fn tree_and_ls_parent_show_the_children() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    apply_both(tmp.path(), |a| {
        ok(&data, a);
    });
    ok(&data, &["start", "parent", "--id", "p"]);
    let kids = ok(&data, &["--json", "ls", "--parent", "p"]);
    assert_eq!(kids["instances"][0]["id"], "p.child");
    let t = ok(&data, &["--json", "tree", "p"]);
    assert_eq!(t["status"], "running");
    assert_eq!(t["children"][0]["id"], "p.child");
    assert_eq!(t["children"][0]["status"], "running");
    ok(
        &data,
        &["send", "p.child", "finish", "--payload", r#"{"value": 7}"#],
    );
    // The child's outcome reached the parent before the command returned.
    let p = ok(&data, &["--json", "show", "p"]);
    assert_eq!(p["status"], "completed", "{p}");
    assert_eq!(p["context"]["got"], 7);
    let (_, text, _) = embedded(&data, &["tree", "p"]);
    assert!(
        text.starts_with("p  parent@1  completed  [finished]"),
        "{text}"
    );
    assert!(
        text.contains("└─ p.child  step@1  completed  [done]"),
        "{text}"
    );
    let (code, _, err) = embedded(&data, &["tree", "nope"]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn triggers_are_managed_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    apply_both(tmp.path(), |a| {
        ok(&data, a);
    });
    let added = ok(
        &data,
        &[
            "--json",
            "trigger",
            "add",
            "after",
            "--machine",
            "parent",
            "--on-status",
            "completed",
            "--start",
            "step",
            "--input",
            "{'source': instance.id}",
            "--id",
            "instance.id + '.after'",
        ],
    );
    assert_eq!(added["start"]["machine"], "step");
    let (code, _, err) = embedded(
        &data,
        &[
            "trigger",
            "add",
            "bad",
            "--machine",
            "parent",
            "--on-status",
            "done",
            "--start",
            "step",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`on_status` `done`"), "{err}");
    let (code, _, err) = embedded(
        &data,
        &[
            "trigger",
            "add",
            "after",
            "--machine",
            "parent",
            "--on-state",
            "running",
            "--start",
            "step",
        ],
    );
    assert_eq!(code, 4, "a second trigger of the same name: {err}");
    let (_, text, _) = embedded(&data, &["trigger", "ls"]);
    assert!(
        text.contains("after  when parent reaches completed: start step"),
        "{text}"
    );

    ok(&data, &["start", "parent", "--id", "p"]);
    ok(
        &data,
        &["send", "p.child", "finish", "--payload", r#"{"value": 1}"#],
    );
    let after = ok(&data, &["--json", "show", "p.after"]);
    assert_eq!(after["context"]["source"], "p");
    ok(&data, &["trigger", "rm", "after"]);
    let (code, _, _) = embedded(&data, &["trigger", "rm", "after"]);
    assert_eq!(code, 3);
    assert_eq!(
        ok(&data, &["--json", "trigger", "ls"]),
        serde_json::json!([])
    );
}

#[test]
fn schedules_are_managed_from_the_cli_and_ticked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    apply_both(tmp.path(), |a| {
        ok(&data, a);
    });
    let added = ok(
        &data,
        &[
            "--json",
            "schedule",
            "add",
            "every-second",
            "--cron",
            "* * * * * *",
            "--machine",
            "step",
            "--input",
            r#"{"scheduled": true}"#,
        ],
    );
    assert!(added["next_at"].is_string(), "{added}");
    let (code, _, err) = embedded(
        &data,
        &[
            "schedule",
            "add",
            "bad",
            "--cron",
            "* * *",
            "--machine",
            "step",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`cron` `* * *`"), "{err}");
    std::thread::sleep(Duration::from_millis(1100));
    ok(&data, &["tick"]);
    let steps = ok(&data, &["--json", "ls", "--machine", "step"]);
    let started = steps["instances"].as_array().unwrap();
    assert_eq!(started.len(), 1, "{steps}");
    assert!(
        started[0]["id"]
            .as_str()
            .unwrap()
            .starts_with("every-second-")
    );
    assert_eq!(started[0]["context"]["scheduled"], true);
    let (_, text, _) = embedded(&data, &["schedule", "ls"]);
    assert!(
        text.contains("every-second  * * * * * * (UTC)  start step"),
        "{text}"
    );
    ok(&data, &["schedule", "rm", "every-second"]);
    assert_eq!(
        ok(&data, &["--json", "schedule", "ls"]),
        serde_json::json!([])
    );
}

#[test]
fn killing_the_server_while_children_report_loses_and_repeats_nothing() {
    const PARENTS: usize = 40;
    const KILLS: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = common::serve_on(&data, port);
    apply_both(tmp.path(), |a| {
        common::ok_at(&url, a);
    });
    // Each parent that completes starts one `step` through a trigger, with a fresh id:
    // a trigger that fired twice would leave two.
    common::ok_at(
        &url,
        &[
            "trigger",
            "add",
            "after",
            "--machine",
            "parent",
            "--on-status",
            "completed",
            "--start",
            "step",
            "--input",
            "{'source': instance.id}",
        ],
    );
    // A schedule ticking every second through the kills: one instance per tick at most,
    // and one (not several) for the ticks missed while the server was down.
    let began = Instant::now();
    common::ok_at(
        &url,
        &[
            "schedule",
            "add",
            "every-second",
            "--cron",
            "* * * * * *",
            "--machine",
            "step",
            "--input",
            r#"{"scheduled": true}"#,
        ],
    );
    for i in 0..PARENTS {
        common::ok_at(&url, &["start", "parent", "--id", &format!("p{i}")]);
    }
    // A driver finishes the children one by one while the server is killed under it.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let driver = {
        let url = url.clone();
        let progress = std::sync::Arc::clone(&progress);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let (mut i, mut refused) = (0, 0);
            while i < PARENTS {
                assert!(Instant::now() < deadline, "the driver is stuck at p{i}");
                let child = format!("p{i}.child");
                let payload = format!(r#"{{"value": {i}}}"#);
                let (code, _, _) = common::run_at(
                    &url,
                    &[
                        "send",
                        &child,
                        "finish",
                        "--payload",
                        &payload,
                        "--key",
                        "finish",
                    ],
                );
                match code {
                    // Applied, or applied before and repeated with the same key.
                    0 => {
                        i += 1;
                        progress.store(i, std::sync::atomic::Ordering::Relaxed);
                    }
                    // The server is down: the same send again, same key.
                    _ => {
                        refused += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            refused
        })
    };
    // Kill at points spread over the driver's progress, so every kill lands under load.
    for k in 1..=KILLS {
        let at = k * PARENTS / (KILLS + 1);
        while progress.load(std::sync::atomic::Ordering::Relaxed) < at {
            std::thread::sleep(Duration::from_millis(2));
        }
        server.kill().unwrap();
        server.wait().unwrap();
        server = common::serve_on(&data, port);
    }
    let refused = driver.join().unwrap();
    assert!(refused > 0, "no kill landed while the driver was sending");
    // Entries a kill left in the outbox are delivered by the restarted server.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = common::ok_at(
            &url,
            &[
                "ls",
                "--machine",
                "parent",
                "--status",
                "running",
                "--limit",
                "1000",
            ],
        );
        let steps = common::ok_at(&url, &["ls", "--machine", "step", "--limit", "1000"]);
        let count = |key: &str| {
            steps["instances"].as_array().map_or(0, |a| {
                a.iter().filter(|i| !i["context"][key].is_null()).count()
            })
        };
        let (triggered, scheduled) = (count("source"), count("scheduled"));
        if running["instances"].as_array().is_some_and(Vec::is_empty)
            && triggered >= PARENTS
            && scheduled >= 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running: {running}; {triggered} started by the trigger, {scheduled} by the schedule"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The tree over HTTP.
    let tree = common::ok_at(&url, &["tree", "p0"]);
    assert_eq!(tree["children"][0]["id"], "p0.child", "{tree}");
    assert_eq!(tree["children"][0]["status"], "completed");
    // The definitions over HTTP.
    assert_eq!(common::ok_at(&url, &["trigger", "ls"])[0]["name"], "after");
    assert_eq!(common::run_at(&url, &["trigger", "rm", "nope"]).0, 3);
    common::ok_at(&url, &["schedule", "rm", "every-second"]);
    assert_eq!(
        common::ok_at(&url, &["schedule", "ls"]),
        serde_json::json!([])
    );
    server.kill().unwrap();
    server.wait().unwrap();
    let elapsed = began.elapsed();

    let engine = cairn_runtime::open_sqlite(
        &data,
        cairn_store_any::SqliteOptions::default(),
        cairn_engine::Config::default(),
    )
    .unwrap();
    assert!(!engine.store().outbox_waiting().unwrap());
    let mut started_by_trigger = std::collections::HashMap::new();
    let steps = engine
        .list(&cairn_store::InstanceFilter {
            namespace: "default".into(),
            machine: Some("step".into()),
            limit: 10_000,
            ..Default::default()
        })
        .unwrap();
    let scheduled: Vec<_> = steps
        .items
        .iter()
        .filter(|s| s.context["scheduled"] == true)
        .collect();
    assert!(!scheduled.is_empty(), "the schedule never ticked");
    assert!(
        scheduled.len() as u64 <= elapsed.as_secs() + 2,
        "{} scheduled starts in {elapsed:?}: a tick ran more than once",
        scheduled.len()
    );
    for s in &scheduled {
        let v = engine.verify("default", &s.id).unwrap();
        assert!(v.ok, "{}: {:?}", s.id, v.problem);
    }
    for s in &steps.items {
        if let Some(src) = s.context["source"].as_str() {
            *started_by_trigger.entry(src.to_string()).or_insert(0) += 1;
            let v = engine.verify("default", &s.id).unwrap();
            assert!(v.ok, "{}: {:?}", s.id, v.problem);
        }
    }
    for i in 0..PARENTS {
        let (p, c) = (format!("p{i}"), format!("p{i}.child"));
        let parent = engine.get("default", &p).unwrap();
        assert_eq!(parent.status.as_str(), "completed", "{p}");
        assert_eq!(parent.context["got"], i, "{p}");
        let child = engine.get("default", &c).unwrap();
        assert_eq!(child.status.as_str(), "completed", "{c}");
        assert_eq!(child.parent.as_deref(), Some(p.as_str()));
        let heard = engine
            .history("default", &p)
            .unwrap()
            .iter()
            .filter(|h| h.event == "child.done")
            .count();
        assert_eq!(heard, 1, "{p} heard from its child {heard} times");
        assert_eq!(
            started_by_trigger.get(&p).copied(),
            Some(1),
            "{p}: the trigger fired {:?} times",
            started_by_trigger.get(&p)
        );
        for id in [&p, &c] {
            let v = engine.verify("default", id).unwrap();
            assert!(v.ok, "{id}: {:?}", v.problem);
        }
    }
}
