//! Map states on a real store (SQLite or PostgreSQL): one child per item with a concurrency limit and
//! `depends_on` ordering (a DAG), completion with every result, fail-fast and
//! collect-and-continue failure policies, an empty list, leaving the state, and items that
//! cannot be ordered.

use cairn_core::Status;
use cairn_engine::Engine;
use cairn_store_any::AnyStore;
use serde_json::{Value, json};

const PHASE: &str = r#"
machine: phase
initial: working
states:
  working:
    on:
      finish: { target: done, assign: { result: "event.payload.value" } }
      crash: broken
  done: { type: final }
  broken: { type: final, status: failed }
"#;

const RUN: &str = r#"
machine: run
initial: phases
states:
  phases:
    map:
      machine: phase
      items: "context.phases"
      key: "item.name"
      depends_on: "has(item.after) ? item.after : []"
      input: "{'name': item.name, 'n': index}"
      concurrency: 2
    on_done: { target: reviewed, assign: { summary: "event.payload" } }
    on:
      child.failed: { target: failed, assign: { why: "event.payload.error", failed_key: "event.payload.key" } }
      abort: aborted
  reviewed: { type: final }
  failed: { type: final, status: failed }
  aborted: { type: final, status: cancelled }
"#;

use crate::common;

use common::{send, verified};

fn world() -> common::World {
    let w = common::world(&[PHASE, RUN]);
    let run2 = RUN.replace("machine: run", "machine: run2").replace(
        "concurrency: 2",
        "concurrency: 2\n      on_failure: continue",
    );
    w.e.apply("default", &run2, None, None).unwrap();
    w
}

fn start(
    e: &Engine<AnyStore>,
    machine: &str,
    id: &str,
    phases: Value,
) -> Result<(), cairn_engine::Error> {
    common::start(e, machine, id, json!({ "phases": phases }))
}

fn status(e: &Engine<AnyStore>, id: &str) -> Option<Status> {
    e.get("default", id).ok().map(|i| i.status)
}

#[test]
fn items_run_in_dependency_order_within_the_concurrency_and_the_state_completes() {
    let w = world();
    let e = &w.e;
    let phases = json!([
        {"name": "a"}, {"name": "b"}, {"name": "c", "after": ["a", "b"]}, {"name": "d", "after": ["c"]}
    ]);
    start(e, "run", "r", phases).unwrap();
    assert_eq!(status(e, "r.a"), Some(Status::Running));
    assert_eq!(status(e, "r.b"), Some(Status::Running));
    assert_eq!(status(e, "r.c"), None, "c waits for a and b");
    assert_eq!(e.get("default", "r.a").unwrap().context["n"], 0);

    send(e, "r.a", "finish", json!({"value": "A"}));
    assert_eq!(status(e, "r.c"), None, "c still waits for b");
    send(e, "r.b", "finish", json!({"value": "B"}));
    assert_eq!(status(e, "r.c"), Some(Status::Running));
    assert_eq!(status(e, "r.d"), None);
    send(e, "r.c", "finish", json!({"value": "C"}));
    send(e, "r.d", "finish", json!({"value": "D"}));

    let r = e.get("default", "r").unwrap();
    assert_eq!(r.status, Status::Completed, "{:?}", r.context);
    let summary = &r.context["summary"];
    assert_eq!(summary["completed"], 4);
    assert_eq!(summary["failed"], 0);
    let keys: Vec<&str> = summary["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a", "b", "c", "d"]);
    assert_eq!(summary["results"][2]["output"]["result"], "C");
    verified(e, &["r", "r.a", "r.b", "r.c", "r.d"]);
}

#[test]
fn fail_fast_cancels_the_rest_and_continue_skips_the_dependents() {
    let w = world();
    let e = &w.e;
    let phases = json!([{"name": "a"}, {"name": "b"}, {"name": "c", "after": ["a"]}]);
    start(e, "run", "ff", phases.clone()).unwrap();
    send(e, "ff.a", "crash", json!({}));
    let r = e.get("default", "ff").unwrap();
    assert_eq!(r.status, Status::Failed);
    assert_eq!(r.context["failed_key"], "a");
    assert_eq!(status(e, "ff.b"), Some(Status::Cancelled));
    assert_eq!(status(e, "ff.c"), None, "never started");

    start(e, "run2", "go", phases).unwrap();
    send(e, "go.a", "crash", json!({}));
    assert_eq!(
        status(e, "go"),
        Some(Status::Running),
        "collect and continue"
    );
    assert_eq!(
        status(e, "go.c"),
        None,
        "c depends on the failed a: skipped"
    );
    send(e, "go.b", "finish", json!({"value": 1}));
    let r = e.get("default", "go").unwrap();
    assert_eq!(r.status, Status::Completed);
    let s = &r.context["summary"];
    assert_eq!(
        (
            s["completed"].as_u64(),
            s["failed"].as_u64(),
            s["skipped"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    verified(e, &["ff", "ff.a", "ff.b", "go", "go.a", "go.b"]);
}

#[test]
fn an_empty_list_completes_and_leaving_the_state_cancels_the_children() {
    let w = world();
    let e = &w.e;
    start(e, "run", "empty", json!([])).unwrap();
    let r = e.get("default", "empty").unwrap();
    assert_eq!(r.status, Status::Completed);
    assert_eq!(r.context["summary"]["completed"], 0);

    start(
        e,
        "run",
        "ab",
        json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]),
    )
    .unwrap();
    send(e, "ab", "abort", json!({}));
    assert_eq!(status(e, "ab"), Some(Status::Cancelled));
    assert_eq!(status(e, "ab.a"), Some(Status::Cancelled));
    assert_eq!(status(e, "ab.b"), Some(Status::Cancelled));
    assert_eq!(status(e, "ab.c"), None);
    verified(e, &["empty", "ab", "ab.a", "ab.b"]);
}

#[test]
fn items_that_cannot_be_ordered_refuse_the_state() {
    let w = world();
    let e = &w.e;
    let cases = [
        (
            json!([{"name": "a", "after": ["b"]}, {"name": "b", "after": ["a"]}]),
            "on a cycle",
        ),
        (
            json!([{"name": "a", "after": ["zz"]}]),
            "depends on `zz`, which is not an item",
        ),
        (
            json!([{"name": "a"}, {"name": "a"}]),
            "two items have the key `a`",
        ),
        (json!({"not": "a list"}), "must yield a list"),
    ];
    for (i, (phases, want)) in cases.into_iter().enumerate() {
        let id = format!("bad{i}");
        let err = start(e, "run", &id, phases).unwrap_err();
        assert!(err.to_string().contains(want), "{want}: {err}");
        assert!(e.get("default", &id).is_err(), "nothing written");
    }
}

#[test]
fn a_paused_run_holds_its_next_items_until_resumed() {
    let w = world();
    let e = &w.e;
    let phases = json!([{"name": "a"}, {"name": "b", "after": ["a"]}]);
    start(e, "run", "p", phases).unwrap();
    e.pause("default", "p", "ops", "").unwrap();
    assert_eq!(status(e, "p.a"), Some(Status::Paused));
    // The paused child's event waits; the run is resumed with it.
    send(e, "p.a", "finish", json!({"value": 1}));
    e.resume("default", "p", "ops", "").unwrap();
    assert_eq!(status(e, "p.a"), Some(Status::Completed));
    assert_eq!(
        status(e, "p.b"),
        Some(Status::Running),
        "b started after the resume"
    );
    send(e, "p.b", "finish", json!({"value": 2}));
    assert_eq!(status(e, "p"), Some(Status::Completed));
    verified(e, &["p", "p.a", "p.b"]);
}

#[test]
fn map_definitions_are_checked_when_applied() {
    let w = world();
    let e = &w.e;
    let cases = [
        (
            "map: { machine: phase }",
            "`map` needs `machine` and `items`",
        ),
        (
            "map: { machine: phase, items: \"context.x\", on_failure: later }",
            "unknown `map.on_failure` `later`",
        ),
        (
            "map: { machine: phase, items: \"context.x\", key: \"itm.name\" }",
            "unknown variable `itm`",
        ),
        (
            "map: { machine: phase, items: \"item\" }",
            "unknown variable `item`",
        ),
        (
            "map: { machine: phase, items: \"context.x\", concurrency: 0 }",
            "`map.concurrency`",
        ),
        (
            "map: { machine: phase, items: \"context.x\" }, spawn: { machine: phase }",
            "`map` belongs to an atomic state",
        ),
    ];
    for (state, want) in cases {
        let text = format!("machine: m\ninitial: a\nstates:\n  a: {{ {state} }}\n");
        let err = e.apply("default", &text, None, Some("m.yaml")).unwrap_err();
        assert!(err.to_string().contains(want), "{state}: {err}");
    }
}
