//! Child instances on a real store (SQLite or PostgreSQL): spawned in the parent's unit, `child.done` and
//! `child.failed` delivered through the outbox, the spawning state's exit cancelling its
//! children, pause/resume/cancel cascading through the tree, a refused spawn writing
//! nothing, and every instance passing `verify`.

use cairn_core::Status;
use cairn_engine::{Engine, Error};
use cairn_store::{HistoryKind, InstanceFilter, Reader};
use cairn_store_any::AnyStore;
use serde_json::{Value, json};

const STEP: &str = r#"
machine: step
initial: working
states:
  working:
    on:
      finish: { target: done, assign: { result: "event.payload.value" } }
      crash: broken
  done: { type: final }
  broken: { type: final, status: failed }
"#;

const PARENT: &str = r#"
machine: parent
initial: running
states:
  running:
    spawn: { machine: step, id: "instance.id + '.child'", input: "{'n': 1}" }
    on:
      child.done: { target: finished, assign: { got: "event.payload.output.result", from: "event.payload.child" } }
      child.failed: { target: recovering, assign: { why: "event.payload.error", status: "event.payload.status" } }
      abort: aborted
  recovering: { on: { give_up: aborted } }
  finished: { type: final }
  aborted: { type: final, status: cancelled }
"#;

/// A parent of a parent: `mid` spawns `step`; `top` spawns `mid`.
const MID: &str = r#"
machine: mid
initial: waiting
states:
  waiting:
    spawn: { machine: step, id: "instance.id + '.leaf'" }
    on: { child.done: { target: done, assign: { leaf: "event.payload.output.result" } } }
  done: { type: final }
"#;

const TOP: &str = r#"
machine: top
initial: waiting
states:
  waiting:
    spawn: { machine: mid, id: "instance.id + '.mid'" }
    on: { child.done: { target: done, assign: { leaf: "event.payload.output.leaf" } } }
  done: { type: final }
"#;

/// A child holding a task, a timer and an approval at once.
const BUSY: &str = r#"
machine: busy
initial: w
states:
  w:
    task: { queue: q }
    approval: { prompt: "ok?" }
    after: { 1h: w }
"#;

const HOLDER: &str = r#"
machine: holder
initial: h
states:
  h: { spawn: { machine: busy, id: "instance.id + '.busy'" } }
"#;

use crate::common;

use common::{send, verified};

fn world() -> common::World {
    common::world(&[STEP, PARENT, MID, TOP, BUSY, HOLDER])
}

fn start(e: &Engine<AnyStore>, machine: &str, id: &str) -> Result<(), Error> {
    common::start(e, machine, id, Value::Null)
}

fn get(e: &Engine<AnyStore>, id: &str) -> cairn_store::InstanceRecord {
    e.get("default", id).unwrap()
}

#[test]
fn a_child_is_spawned_with_its_state_and_its_outcome_reaches_the_parent() {
    let w = world();
    start(&w.e, "parent", "p").unwrap();
    let c = get(&w.e, "p.child");
    assert_eq!(c.parent.as_deref(), Some("p"));
    assert_eq!(c.status, Status::Running);
    let kids =
        w.e.list(&InstanceFilter {
            namespace: "default".into(),
            parent: Some("p".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(kids.items.len(), 1);
    assert_eq!(kids.items[0].id, "p.child");

    send(&w.e, "p.child", "finish", json!({"value": 42}));
    let p = get(&w.e, "p");
    assert_eq!(p.status, Status::Completed, "{:?}", p.context);
    assert_eq!(p.context["got"], 42);
    assert_eq!(p.context["from"], "p.child");
    assert!(!w.e.store().outbox_waiting().unwrap());
    let h = w.e.history("default", "p").unwrap();
    let last = h.last().unwrap();
    assert_eq!(last.event, "child.done");
    assert_eq!(last.actor, "instance:p.child");
    verified(&w.e, &["p", "p.child"]);
}

#[test]
fn a_failed_or_cancelled_child_reaches_the_parent_as_child_failed() {
    let w = world();
    start(&w.e, "parent", "f").unwrap();
    send(&w.e, "f.child", "crash", json!({}));
    let p = get(&w.e, "f");
    assert_eq!(p.configuration, ["recovering"]);
    assert_eq!(p.context["status"], "failed");

    // An operator cancelling a child: the parent hears it.
    start(&w.e, "parent", "k").unwrap();
    w.e.cancel("default", "k.child", "ops", "stuck").unwrap();
    let p = get(&w.e, "k");
    assert_eq!(p.configuration, ["recovering"]);
    assert_eq!(p.context["status"], "cancelled");
    verified(&w.e, &["f", "f.child", "k", "k.child"]);
}

#[test]
fn leaving_the_spawning_state_or_ending_cancels_the_children_quietly() {
    let w = world();
    start(&w.e, "parent", "a").unwrap();
    send(&w.e, "a", "abort", json!({}));
    assert_eq!(get(&w.e, "a").status, Status::Cancelled);
    let c = get(&w.e, "a.child");
    assert_eq!(c.status, Status::Cancelled);
    let h = w.e.history("default", "a.child").unwrap();
    let cancel = h.iter().find(|r| r.kind == HistoryKind::Cancel).unwrap();
    assert_eq!(cancel.actor, "instance:a");
    assert!(
        cancel.reason.contains("left state `running`"),
        "{}",
        cancel.reason
    );
    // Nothing came back to the parent.
    assert!(
        w.e.history("default", "a")
            .unwrap()
            .iter()
            .all(|r| !r.event.starts_with("child."))
    );

    // Cancelling the top of a tree cancels every level.
    start(&w.e, "top", "t").unwrap();
    assert_eq!(get(&w.e, "t.mid.leaf").status, Status::Running);
    w.e.cancel("default", "t", "ops", "").unwrap();
    for id in ["t", "t.mid", "t.mid.leaf"] {
        assert_eq!(get(&w.e, id).status, Status::Cancelled, "{id}");
    }
    verified(&w.e, &["a", "a.child", "t", "t.mid", "t.mid.leaf"]);
}

#[test]
fn pause_and_resume_cascade_and_outcomes_climb_the_tree() {
    let w = world();
    start(&w.e, "top", "t").unwrap();
    w.e.pause("default", "t", "ops", "maintenance").unwrap();
    for id in ["t", "t.mid", "t.mid.leaf"] {
        assert_eq!(get(&w.e, id).status, Status::Paused, "{id}");
    }
    // An event for a paused leaf waits in its inbox.
    send(&w.e, "t.mid.leaf", "finish", json!({"value": "deep"}));
    assert_eq!(get(&w.e, "t.mid.leaf").status, Status::Paused);
    w.e.resume("default", "t", "ops", "").unwrap();
    // The leaf's queued event applied on resume; its outcome climbed two levels.
    assert_eq!(get(&w.e, "t.mid.leaf").status, Status::Completed);
    assert_eq!(get(&w.e, "t.mid").status, Status::Completed);
    let t = get(&w.e, "t");
    assert_eq!(t.status, Status::Completed);
    assert_eq!(t.context["leaf"], "deep");
    verified(&w.e, &["t", "t.mid", "t.mid.leaf"]);
}

#[test]
fn a_spawn_that_cannot_happen_refuses_the_parents_event() {
    let w = world();
    let bad = PARENT
        .replace("machine: step", "machine: nowhere")
        .replace("machine: parent", "machine: orphan");
    w.e.apply("default", &bad, None, None).unwrap();
    let e = start(&w.e, "orphan", "o").unwrap_err();
    assert!(e.to_string().contains("no machine `nowhere`"), "{e}");
    assert!(w.e.get("default", "o").is_err());

    // A child id already in use refuses too, and writes nothing.
    start(&w.e, "step", "x.child").unwrap();
    let e = start(&w.e, "parent", "x").unwrap_err();
    assert!(e.to_string().contains("`x.child` already exists"), "{e}");
    assert!(w.e.get("default", "x").is_err());
}

#[test]
fn a_cancelled_parent_cancels_its_childs_tasks_timers_and_approvals() {
    let w = world();
    start(&w.e, "holder", "h").unwrap();
    let tasks = |id: &str| w.e.tasks("default", None, None, Some(id)).unwrap();
    assert_eq!(tasks("h.busy")[0].status, cairn_store::TaskStatus::Pending);
    assert_eq!(w.e.store().timers("default", "h.busy").unwrap().len(), 1);
    w.e.cancel("default", "h", "ops", "").unwrap();
    assert_eq!(get(&w.e, "h.busy").status, Status::Cancelled);
    assert_eq!(
        tasks("h.busy")[0].status,
        cairn_store::TaskStatus::Cancelled
    );
    assert!(w.e.store().timers("default", "h.busy").unwrap().is_empty());
    let approvals =
        w.e.store()
            .approvals("default", None, Some("h.busy"))
            .unwrap();
    assert_eq!(approvals[0].status, cairn_store::ApprovalStatus::Cancelled);
    verified(&w.e, &["h", "h.busy"]);
}

/// Deleting an instance deletes the tree it spawned, with everything recorded of each (a
/// busy child's task, timer and approval included), and logs `instance_deleted` for each;
/// no claim hands out the deleted child's task afterwards.
#[test]
fn deleting_a_parent_deletes_its_tree_and_everything_of_it() {
    let w = world();
    start(&w.e, "top", "t").unwrap();
    start(&w.e, "holder", "hold").unwrap();
    start(&w.e, "holder", "other").unwrap();
    for id in ["t", "t.mid", "t.mid.leaf", "hold.busy"] {
        assert!(w.e.get("default", id).is_ok(), "{id} exists");
    }
    w.e.delete("default", "t").unwrap();
    w.e.delete("default", "hold").unwrap();
    for id in ["t", "t.mid", "t.mid.leaf", "hold", "hold.busy"] {
        assert!(
            matches!(w.e.get("default", id), Err(Error::NotFound(_))),
            "{id} is gone"
        );
    }
    assert!(
        w.e.tasks("default", None, None, Some("hold.busy"))
            .unwrap()
            .is_empty()
    );
    assert!(
        w.e.approvals("default", None, Some("hold.busy"))
            .unwrap()
            .is_empty()
    );
    let claimed =
        w.e.claim(&["q".into()], "w", 10, std::time::Duration::from_secs(60))
            .unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.instance.as_str())
            .collect::<Vec<_>>(),
        ["other.busy"],
        "only the task of the instance that is still there"
    );
    w.e.store().settle_log();
    let log = w.e.store().log(0, 1000).unwrap();
    let deleted: Vec<&str> = log
        .iter()
        .filter(|l| l.entry.kind == "instance_deleted")
        .map(|l| l.entry.instance_id.as_str())
        .collect();
    assert_eq!(deleted, ["t.mid.leaf", "t.mid", "t", "hold.busy", "hold"]);
    verified(&w.e, &["other", "other.busy"]);
}
