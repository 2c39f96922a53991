//! Triggers on a real store (SQLite or PostgreSQL): an A → B start with a condition and an input built from
//! A's output, a send on entering a state, a loop of triggers stopped at its bound, a
//! failing expression that leaves the source alone, checks when a trigger is added, and
//! removal.

use cairn_api::{Trigger, TriggerSend, TriggerStart};
use cairn_core::Status;
use cairn_engine::{Engine, Error};
use cairn_store::Reader;
use cairn_store_any::AnyStore;
use serde_json::{Value, json};

const A: &str = r#"
machine: a
initial: working
states:
  working: { on: { finish: { target: done, assign: { output: "event.payload" } } } }
  done: { type: final }
"#;

const B: &str = r#"
machine: b
initial: waiting
states:
  waiting: { on: { poke: { target: poked, assign: { by: "event.actor", note: "event.payload.note" } } } }
  poked: { type: final }
"#;

const STRICT: &str = r#"
machine: strict
input_schema: { type: object, required: [x], properties: { x: { type: integer } } }
initial: s
states:
  s: {}
"#;

const LOOP: &str = r#"
machine: looper
initial: s
states:
  s: { on: { again: s } }
"#;

use crate::common;

use common::send;

fn world() -> common::World {
    common::world(&[A, B, LOOP, STRICT])
}

fn start(e: &Engine<AnyStore>, machine: &str, id: &str) {
    common::start(e, machine, id, Value::Null).unwrap();
}

fn a_to_b() -> Trigger {
    Trigger {
        name: "a-to-b".into(),
        machine: "a".into(),
        on_state: None,
        on_status: Some("completed".into()),
        when: Some("context.output.success".into()),
        start: Some(TriggerStart {
            machine: "b".into(),
            input: Some("{'artifact': context.output.artifacts[0]}".into()),
            id: Some("instance.id + '-b'".into()),
        }),
        send: None,
        created_at: None,
    }
}

fn log_kinds(e: &Engine<AnyStore>, id: &str) -> Vec<String> {
    e.store().settle_log();
    e.store()
        .log(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|l| l.entry.instance_id == id)
        .map(|l| l.entry.kind)
        .collect()
}

#[test]
fn a_completed_instance_starts_another_when_its_condition_holds() {
    let w = world();
    let e = &w.e;
    let added = e.add_trigger("default", a_to_b()).unwrap();
    assert!(added.created_at.is_some());
    start(e, "a", "a1");
    send(
        e,
        "a1",
        "finish",
        json!({"success": true, "artifacts": ["x.txt", "y.txt"]}),
    );
    let b = e.get("default", "a1-b").unwrap();
    assert_eq!(b.machine, "b");
    assert_eq!(b.context["artifact"], "x.txt", "the output transform");
    assert_eq!(b.status, Status::Running);
    let first = &e.history("default", "a1-b").unwrap()[0];
    assert_eq!(first.actor, "trigger:a-to-b");
    assert!(log_kinds(e, "a1").contains(&"trigger_fired".to_string()));

    // The condition does not hold: nothing starts.
    start(e, "a", "a2");
    send(
        e,
        "a2",
        "finish",
        json!({"success": false, "artifacts": []}),
    );
    assert!(e.get("default", "a2-b").is_err());
    assert!(!e.store().outbox_waiting().unwrap());
    for id in ["a1", "a1-b", "a2"] {
        assert!(e.verify("default", id).unwrap().ok, "{id}");
    }
}

#[test]
fn entering_a_state_sends_an_event_and_refusals_stay_downstream() {
    let w = world();
    let e = &w.e;
    e.add_trigger(
        "default",
        Trigger {
            name: "poke-b".into(),
            machine: "a".into(),
            on_state: Some("done".into()),
            on_status: None,
            when: None,
            start: None,
            send: Some(TriggerSend {
                to: "context.output.target".into(),
                event: "poke".into(),
                payload: Some("{'note': 'from ' + instance.id}".into()),
            }),
            created_at: None,
        },
    )
    .unwrap();
    start(e, "b", "target");
    start(e, "a", "src");
    send(e, "src", "finish", json!({"target": "target"}));
    let b = e.get("default", "target").unwrap();
    assert_eq!(b.status, Status::Completed);
    assert_eq!(b.context["by"], "trigger:poke-b");
    assert_eq!(b.context["note"], "from src");

    // A finished receiver: dropped.
    start(e, "a", "src1");
    send(e, "src1", "finish", json!({"target": "target"}));
    assert_eq!(e.get("default", "target").unwrap().version, 2);
    assert!(log_kinds(e, "target").contains(&"outbox_dropped".to_string()));
    // A receiver that cannot take it: it stays as it is, and so does the source.
    start(e, "a", "deaf");
    start(e, "a", "src2");
    send(e, "src2", "finish", json!({"target": "deaf"}));
    assert_eq!(e.get("default", "src2").unwrap().status, Status::Completed);
    assert_eq!(e.get("default", "deaf").unwrap().version, 1);
    assert!(log_kinds(e, "deaf").contains(&"outbox_refused".to_string()));
    // No such receiver: dropped.
    start(e, "a", "src3");
    send(e, "src3", "finish", json!({"target": "nobody"}));
    assert_eq!(e.get("default", "src3").unwrap().status, Status::Completed);
    assert!(!e.store().outbox_waiting().unwrap());
}

#[test]
fn a_loop_of_triggers_stops_at_its_bound_and_failures_leave_the_source_alone() {
    let w = world();
    let e = &w.e;
    e.add_trigger(
        "default",
        Trigger {
            name: "again".into(),
            machine: "looper".into(),
            on_state: Some("s".into()),
            on_status: None,
            when: None,
            start: None,
            send: Some(TriggerSend {
                to: "instance.id".into(),
                event: "again".into(),
                payload: None,
            }),
            created_at: None,
        },
    )
    .unwrap();
    start(e, "looper", "l");
    let l = e.get("default", "l").unwrap();
    // The start and 16 hops of the loop, then it stopped.
    assert_eq!(l.version, 1 + cairn_engine::MAX_TRIGGER_HOPS as u64);
    assert!(log_kinds(e, "l").contains(&"trigger_loop_stopped".to_string()));
    assert!(e.verify("default", "l").unwrap().ok);

    let mut broken = a_to_b();
    broken.name = "broken".into();
    broken.when = Some("context.nope.deeper".into());
    e.add_trigger("default", broken).unwrap();
    e.remove_trigger("default", "a-to-b").unwrap_err();
    start(e, "a", "x");
    send(
        e,
        "x",
        "finish",
        json!({"success": true, "artifacts": ["f"]}),
    );
    assert_eq!(e.get("default", "x").unwrap().status, Status::Completed);
    assert!(log_kinds(e, "x").contains(&"trigger_failed".to_string()));
    e.remove_trigger("default", "broken").unwrap();
    assert!(
        e.triggers("default")
            .unwrap()
            .iter()
            .all(|t| t.name != "broken")
    );
}

#[test]
fn reaching_paused_or_running_fires_too() {
    let w = world();
    let e = &w.e;
    for (name, status) in [("on-pause", "paused"), ("on-running", "running")] {
        e.add_trigger(
            "default",
            Trigger {
                name: name.into(),
                machine: "b".into(),
                on_state: None,
                on_status: Some(status.into()),
                when: None,
                start: Some(TriggerStart {
                    machine: "a".into(),
                    input: Some("{'why': instance.id}".into()),
                    id: None,
                }),
                send: None,
                created_at: None,
            },
        )
        .unwrap();
    }
    let started = |e: &Engine<AnyStore>| {
        e.list(&cairn_store::InstanceFilter {
            namespace: "default".into(),
            machine: Some("a".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap()
        .items
        .len()
    };
    start(e, "b", "bb");
    assert_eq!(started(e), 1, "started: `running` reached");
    e.pause("default", "bb", "ops", "").unwrap();
    assert_eq!(started(e), 2, "paused");
    e.resume("default", "bb", "ops", "").unwrap();
    assert_eq!(started(e), 3, "resumed: `running` reached again");
}

#[test]
fn triggers_are_checked_when_added() {
    let w = world();
    let e = &w.e;
    type Change = Box<dyn Fn(&mut Trigger)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|t| t.on_state = Some("done".into())),
            "exactly one of `on_state` and `on_status`",
        ),
        (
            Box::new(|t| t.on_status = Some("done".into())),
            "`on_status` `done`",
        ),
        (Box::new(|t| t.when = Some("context.".into())), "`when`"),
        (
            Box::new(|t| t.when = Some("bogus.x".into())),
            "unknown variable `bogus`",
        ),
        (
            Box::new(|t| {
                t.send = Some(TriggerSend {
                    to: "'x'".into(),
                    event: "poke".into(),
                    payload: None,
                })
            }),
            "exactly one of `start` and `send`",
        ),
        (
            Box::new(|t| {
                t.start = None;
                t.send = Some(TriggerSend {
                    to: "'x'".into(),
                    event: "task.done".into(),
                    payload: None,
                })
            }),
            "reserved",
        ),
        (Box::new(|t| t.name = "no spaces".into()), "a name is"),
    ];
    for (change, want) in cases {
        let mut t = a_to_b();
        change(&mut t);
        let err = e.add_trigger("default", t).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    e.add_trigger("default", a_to_b()).unwrap();
    let err = e.add_trigger("default", a_to_b()).unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert_eq!(e.triggers("default").unwrap().len(), 1);
    assert!(matches!(
        e.remove_trigger("default", "nope"),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn an_action_sends_to_another_instance_after_commit() {
    let sender = r#"
machine: sender
initial: s
states:
  s:
    on:
      go:
        target: sent
        actions: [ { send: { event: poke, to: "context.to", payload: "{'note': 'hi'}" } },
                   { emit: { event: progress, payload: "{'pct': 50}" } } ]
  sent: { type: final }
"#;
    let w = world();
    let e = &w.e;
    e.apply("default", sender, None, None).unwrap();
    start(e, "b", "rx");
    common::start(e, "sender", "tx", serde_json::json!({"to": "rx"})).unwrap();
    send(e, "tx", "go", json!({}));
    let rx = e.get("default", "rx").unwrap();
    assert_eq!(rx.status, Status::Completed);
    assert_eq!(rx.context["by"], "instance:tx");
    assert_eq!(rx.context["note"], "hi");
    assert!(log_kinds(e, "tx").contains(&"emitted".to_string()));
    for id in ["tx", "rx"] {
        assert!(e.verify("default", id).unwrap().ok, "{id}");
    }
}

#[test]
fn a_start_the_receiver_refuses_is_dropped_and_logged_and_the_rest_goes_on() {
    let w = world();
    let e = &w.e;
    // Its input does not satisfy `strict`'s input schema: the delivery fails, after the
    // source's unit committed.
    e.add_trigger(
        "default",
        Trigger {
            name: "a-to-strict".into(),
            machine: "a".into(),
            on_state: None,
            on_status: Some("completed".into()),
            when: None,
            start: Some(TriggerStart {
                machine: "strict".into(),
                input: Some("{'y': 1}".into()),
                id: Some("instance.id + '-s'".into()),
            }),
            send: None,
            created_at: None,
        },
    )
    .unwrap();
    e.add_trigger("default", a_to_b()).unwrap();
    start(e, "a", "a1");
    send(
        e,
        "a1",
        "finish",
        json!({"success": true, "artifacts": ["x.txt"]}),
    );
    assert_eq!(e.get("default", "a1").unwrap().status, Status::Completed);
    // Exactly the failing entry was dropped, with a log entry saying why; the other
    // trigger's start was delivered; nothing is left to retry.
    assert!(matches!(e.get("default", "a1-s"), Err(Error::NotFound(_))));
    let kinds = log_kinds(e, "a1-s");
    assert_eq!(kinds, ["outbox_failed"], "{kinds:?}");
    assert_eq!(e.get("default", "a1-b").unwrap().status, Status::Running);
    assert!(!e.store().outbox_waiting().unwrap());
    assert_eq!(e.drain_outbox().unwrap(), 0);
    for id in ["a1", "a1-b"] {
        assert!(e.verify("default", id).unwrap().ok, "{id}");
    }
}
