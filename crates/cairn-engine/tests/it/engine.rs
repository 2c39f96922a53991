//! The engine on a real store (SQLite or PostgreSQL): versions, start, send, idempotency, optimistic
//! concurrency, refusals that change nothing, listing, and verify.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_core::{Rejection, Status};
use cairn_engine::{Config, Engine, Error, ManualClock, SendRequest, StartRequest};
use cairn_store::{InstanceFilter, Reader, Store};
use cairn_store_any::AnyStore;
use cairn_store_any::testing::Backend;
use serde_json::json;

const ORDER: &str = r#"
machine: order
context: { n: 0 }
input_schema: { type: object, properties: { customer: { type: string } } }
initial: open
states:
  open:
    on:
      add: { target: open, assign: { n: "context.n + event.payload.qty" } }
      check: { target: closed, guard: "event.payload.ok" }
      close: closed
  closed: { type: final }
"#;

fn engine() -> (Engine<AnyStore>, Backend) {
    let dir = Backend::new();
    let store = dir.open();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    ));
    let e = Engine::new(
        store,
        clock,
        Config {
            max_payload_bytes: 1000,
            ..Config::default()
        },
    );
    e.apply("default", ORDER, None, Some("order.yaml")).unwrap();
    (e, dir)
}

fn start(e: &Engine<AnyStore>, id: &str) {
    e.start(
        "default",
        StartRequest {
            machine: "order".into(),
            id: Some(id.into()),
            input: json!({"customer": "c"}),
            ..Default::default()
        },
    )
    .unwrap();
}

fn send(event: &str, payload: serde_json::Value) -> SendRequest {
    SendRequest {
        event: event.into(),
        payload,
        actor: "ann".into(),
        reason: "because".into(),
        ..Default::default()
    }
}

#[test]
fn same_content_is_a_no_op_and_changed_content_a_new_version_with_instances_pinned() {
    let (e, _d) = engine();
    let again = e.apply("default", ORDER, None, Some("order.yaml")).unwrap();
    assert_eq!((again.version, again.created), (1, false));
    start(&e, "old");
    let v2 = e
        .apply(
            "default",
            &ORDER.replace("context.n + event.payload.qty", "context.n + 100"),
            None,
            Some("order.yaml"),
        )
        .unwrap();
    assert_eq!((v2.version, v2.created), (2, true));
    start(&e, "new");
    let old = e
        .send("default", "old", send("add", json!({"qty": 1})))
        .unwrap();
    let new = e
        .send("default", "new", send("add", json!({"qty": 1})))
        .unwrap();
    assert_eq!(
        (
            old.instance.machine_version,
            old.instance.context["n"].clone()
        ),
        (1, json!(1))
    );
    assert_eq!(
        (
            new.instance.machine_version,
            new.instance.context["n"].clone()
        ),
        (2, json!(100))
    );
    // The same machine name in another namespace is another machine.
    assert_eq!(e.apply("other", ORDER, None, None).unwrap().version, 1);
}

#[test]
fn start_checks_ids_input_and_uniqueness() {
    let (e, _d) = engine();
    let generated = e
        .start(
            "default",
            StartRequest {
                machine: "order".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(generated.id.len(), 36);
    assert_eq!((generated.version, generated.status), (1, Status::Running));
    start(&e, "a");
    let dup = e.start(
        "default",
        StartRequest {
            machine: "order".into(),
            id: Some("a".into()),
            ..Default::default()
        },
    );
    assert!(matches!(dup, Err(Error::Exists(id)) if id == "a"));
    let bad = e.start(
        "default",
        StartRequest {
            machine: "order".into(),
            input: json!({"customer": 5}),
            ..Default::default()
        },
    );
    assert!(
        matches!(&bad, Err(Error::Invalid(m)) if m.contains("/customer")),
        "{bad:?}"
    );
    let missing = e.start(
        "default",
        StartRequest {
            machine: "nope".into(),
            ..Default::default()
        },
    );
    assert!(matches!(missing, Err(Error::NotFound(_))));
    let bad_id = e.start(
        "default",
        StartRequest {
            machine: "order".into(),
            id: Some("a b".into()),
            ..Default::default()
        },
    );
    assert!(matches!(bad_id, Err(Error::Invalid(_))));
}

#[test]
fn send_records_history_with_actor_and_reason() {
    let (e, _d) = engine();
    start(&e, "o");
    let s = e
        .send("default", "o", send("add", json!({"qty": 2})))
        .unwrap();
    assert_eq!((s.instance.version, s.replayed), (2, false));
    let h = e.history("default", "o").unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(
        (
            h[1].event.as_str(),
            h[1].actor.as_str(),
            h[1].reason.as_str()
        ),
        ("add", "ann", "because")
    );
    assert_eq!(h[1].context, json!({"n": 2, "customer": "c"}));
    assert_eq!(h[0].payload, json!({"customer": "c"}));
}

#[test]
fn idempotency_keys_return_the_first_result_and_refuse_other_events() {
    let (e, _d) = engine();
    start(&e, "o");
    let keyed = |qty: i64| SendRequest {
        key: Some("k1".into()),
        ..send("add", json!({"qty": qty}))
    };
    let first = e.send("default", "o", keyed(5)).unwrap();
    let again = e.send("default", "o", keyed(5)).unwrap();
    assert!(again.replayed);
    assert_eq!(again.transition, first.transition);
    assert_eq!(
        e.get("default", "o").unwrap().version,
        2,
        "the repeat applied nothing"
    );
    let other = e.send("default", "o", keyed(6));
    assert!(
        matches!(other, Err(Error::KeyReused { version: 2, .. })),
        "{other:?}"
    );
    // Keys are scoped to the instance.
    start(&e, "p");
    assert!(!e.send("default", "p", keyed(5)).unwrap().replayed);
}

#[test]
fn refusals_change_nothing() {
    let (e, _d) = engine();
    start(&e, "o");
    e.send("default", "o", send("add", json!({"qty": 1})))
        .unwrap();
    let before = (
        e.get("default", "o").unwrap(),
        e.history("default", "o").unwrap(),
    );

    let r = e.send(
        "default",
        "o",
        SendRequest {
            expected_version: Some(1),
            ..send("add", json!({"qty": 1}))
        },
    );
    assert!(
        matches!(
            r,
            Err(Error::VersionMismatch {
                expected: 1,
                current: 2,
                ..
            })
        ),
        "{r:?}"
    );
    let r = e.send("default", "o", send("nope", json!({})));
    assert!(
        matches!(&r, Err(Error::Refused(Rejection::NotAccepted { accepts, .. })) if accepts == &["add", "check", "close"]),
        "{r:?}"
    );
    let r = e.send("default", "o", send("check", json!({"ok": "yes"})));
    assert!(
        matches!(r, Err(Error::Refused(Rejection::Guard { .. }))),
        "{r:?}"
    );
    let r = e.send("default", "o", send("add", json!({"qty": "x"})));
    assert!(
        matches!(r, Err(Error::Refused(Rejection::Action { .. }))),
        "{r:?}"
    );
    let r = e.send(
        "default",
        "o",
        send("add", json!({"qty": 1, "blob": "x".repeat(2000)})),
    );
    assert!(
        matches!(r, Err(Error::TooLarge { limit: 1000, .. })),
        "{r:?}"
    );
    let r = e.send("default", "o", send("task.done", json!({})));
    assert!(matches!(r, Err(Error::Reserved(_))), "{r:?}");
    let r = e.send("default", "missing", send("add", json!({"qty": 1})));
    assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");

    assert_eq!(
        (
            e.get("default", "o").unwrap(),
            e.history("default", "o").unwrap()
        ),
        before
    );
    assert!(e.verify("default", "o").unwrap().ok);

    e.send("default", "o", send("close", json!({}))).unwrap();
    let r = e.send("default", "o", send("add", json!({"qty": 1})));
    assert!(
        matches!(
            r,
            Err(Error::Finished {
                status: Status::Completed,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn list_filters_and_pages() {
    let (e, _d) = engine();
    for i in 0..5 {
        let mut labels = BTreeMap::new();
        labels.insert(
            "team".to_string(),
            if i % 2 == 0 { "red" } else { "blue" }.to_string(),
        );
        e.start(
            "default",
            StartRequest {
                machine: "order".into(),
                id: Some(format!("o{i}")),
                labels,
                ..Default::default()
            },
        )
        .unwrap();
    }
    e.send("default", "o1", send("close", json!({}))).unwrap();
    let ids = |f: InstanceFilter| {
        e.list(&f)
            .unwrap()
            .items
            .into_iter()
            .map(|i| i.id)
            .collect::<Vec<_>>()
    };
    let all = InstanceFilter {
        namespace: "default".into(),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        ids(InstanceFilter {
            status: Some(Status::Completed),
            ..all.clone()
        }),
        ["o1"]
    );
    assert_eq!(
        ids(InstanceFilter {
            state: Some("open".into()),
            ..all.clone()
        }),
        ["o0", "o2", "o3", "o4"]
    );
    assert_eq!(
        ids(InstanceFilter {
            labels: vec![("team".into(), "red".into())],
            ..all.clone()
        }),
        ["o0", "o2", "o4"]
    );
    let page = e
        .list(&InstanceFilter {
            limit: 2,
            ..all.clone()
        })
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.next.is_some());
}

#[test]
fn verify_detects_a_tampered_instance_and_history() {
    let (e, dir) = engine();
    start(&e, "o");
    e.send("default", "o", send("add", json!({"qty": 3})))
        .unwrap();
    assert!(e.verify("default", "o").unwrap().ok);
    dir.sql("UPDATE instances SET context = '{\"n\": 99}' WHERE id = 'o'");
    let v = e.verify("default", "o").unwrap();
    assert!(!v.ok);
    assert!(
        v.problem
            .unwrap()
            .contains("differs from its replayed history")
    );
    dir.sql("UPDATE history SET payload = '{\"qty\": 4}' WHERE instance_id = 'o' AND version = 2");
    let v = e.verify("default", "o").unwrap();
    let problem = v.problem.unwrap();
    assert!(
        problem.starts_with("seq 2 (version 2): history records"),
        "{problem}"
    );
    assert!(
        problem.contains("\"n\":3") && problem.contains("\"n\":4"),
        "{problem}"
    );
}

#[test]
fn everything_survives_reopening_the_store() {
    let dir = Backend::new();
    let open = || {
        Engine::new(
            dir.open(),
            Arc::new(cairn_engine::SystemClock),
            Config::default(),
        )
    };
    {
        let e = open();
        e.apply("default", ORDER, None, None).unwrap();
        e.start(
            "default",
            StartRequest {
                machine: "order".into(),
                id: Some("o".into()),
                ..Default::default()
            },
        )
        .unwrap();
        e.send("default", "o", send("add", json!({"qty": 7})))
            .unwrap();
    }
    let e = open();
    let o = e.get("default", "o").unwrap();
    assert_eq!((o.version, o.context["n"].clone()), (2, json!(7)));
    assert!(e.verify("default", "o").unwrap().ok);
}

// Hostile definitions and expressions: each fails its own instance (or is refused), never
// the process, and leaves every other instance as it was.

const POISON: &str = r#"
machine: poison
context: { s: "ab" }
initial: idle
states:
  idle:
    on:
      panic: { target: idle, guard: "cairn_fault_panic()" }
      bomb: { target: idle, guard: "[0,1,2,3,4,5,6,7,8,9].map(a, [0,1,2,3,4,5,6,7,8,9].map(b, [0,1,2,3,4,5,6,7,8,9].map(c, [0,1,2,3,4,5,6,7,8,9].map(d, [0,1,2,3,4,5,6,7,8,9].map(e, [0,1,2,3,4,5,6,7,8,9].map(f, 1)))))).size() > 0" }
      grow: { target: idle, assign: { s: "context.s + context.s" } }
      arm: armed
      work: working
  armed:
    after:
      1s: { target: idle, guard: "cairn_fault_panic()" }
  working:
    task: { queue: q, action: w }
    on:
      task.done: { target: idle, assign: { s: "event.payload.big + event.payload.big" } }
"#;

fn poison_engine(limits: cairn_core::Limits) -> (Engine<AnyStore>, Arc<ManualClock>, Backend) {
    let dir = Backend::new();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    ));
    let e = Engine::new(
        dir.open(),
        clock.clone(),
        Config {
            limits,
            ..Config::default()
        },
    );
    e.apply("default", POISON, None, None).unwrap();
    e.apply("default", ORDER, None, None).unwrap();
    (e, clock, dir)
}

fn start_poison(e: &Engine<AnyStore>, id: &str) {
    e.start(
        "default",
        StartRequest {
            machine: "poison".into(),
            id: Some(id.into()),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn a_client_event_that_panics_or_overspends_is_refused_and_changes_nothing() {
    let (e, _clock, _dir) = poison_engine(cairn_core::Limits {
        context_bytes: 4096,
        ..cairn_core::Limits::default()
    });
    start_poison(&e, "p");
    start(&e, "bystander");
    let before = e.history("default", "p").unwrap();
    for (event, why) in [
        ("panic", "failed inside Cairn"),
        ("bomb", "more steps than its budget"),
    ] {
        let r = e.send("default", "p", send(event, json!({})));
        match r {
            Err(Error::Refused(r)) => assert!(r.to_string().contains(why), "{event}: {r}"),
            other => panic!("{event}: {other:?}"),
        }
    }
    // The context doubles until it would pass `limits.context_bytes`: then refused.
    let (mut refused, mut grown) = (None, 0);
    for _ in 0..20 {
        match e.send("default", "p", send("grow", json!({}))) {
            Ok(_) => grown += 1,
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    // "ab" doubled ten times is 2,048 bytes; once more would pass 4,096 with the JSON.
    assert_eq!(grown, 10);
    match refused {
        Some(Error::Refused(Rejection::Limit(m))) => assert!(m.contains("max_context"), "{m}"),
        other => panic!("the context grew past its limit: {other:?}"),
    }
    let i = e.get("default", "p").unwrap();
    assert_eq!(i.status, Status::Running);
    assert!(cairn_core::limits::json_size(&i.context, usize::MAX) <= 4096);
    assert_eq!(
        e.history("default", "p").unwrap().len(),
        before.len() + 10,
        "only the grows that fitted were recorded"
    );
    // The engine goes on, and the bystander is untouched.
    e.send("default", "bystander", send("add", json!({"qty": 2})))
        .unwrap();
    assert_eq!(e.get("default", "bystander").unwrap().context["n"], 2);
    assert!(e.verify("default", "p").unwrap().ok);
}

#[test]
fn a_system_event_that_panics_or_overspends_fails_its_instance_only() {
    let (e, clock, _dir) = poison_engine(cairn_core::Limits {
        context_bytes: 4096,
        ..cairn_core::Limits::default()
    });
    start_poison(&e, "timed");
    start_poison(&e, "worked");
    start(&e, "bystander");
    e.send("default", "timed", send("arm", json!({}))).unwrap();
    e.send("default", "worked", send("work", json!({})))
        .unwrap();
    // The timer's guard panics: the instance fails, its timer is gone, the rest goes on.
    clock.advance(chrono::Duration::seconds(2));
    e.fire_due_timers().unwrap();
    let timed = e.get("default", "timed").unwrap();
    assert_eq!(timed.status, Status::Failed);
    let error = timed.last_error.unwrap();
    assert!(error.contains("cairn_fault_panic()"), "{error}");
    assert!(error.contains("failed inside Cairn"), "{error}");
    assert!(e.store().timers("default", "timed").unwrap().is_empty());
    assert_eq!(e.fire_due_timers().unwrap(), 0, "nothing left to retry");
    // A task's output that would make the context too large fails that instance.
    let claimed = e
        .claim(&["q".into()], "w", 1, std::time::Duration::from_secs(60))
        .unwrap();
    e.complete(
        &claimed[0].id,
        claimed[0].attempt,
        json!({"big": "x".repeat(3000)}),
        Default::default(),
    )
    .unwrap();
    let worked = e.get("default", "worked").unwrap();
    assert_eq!(worked.status, Status::Failed);
    assert!(worked.last_error.unwrap().contains("max_context"));
    for id in ["timed", "worked"] {
        assert!(e.verify("default", id).unwrap().ok, "{id} replays");
    }
    e.send("default", "bystander", send("close", json!({})))
        .unwrap();
    assert_eq!(
        e.get("default", "bystander").unwrap().status,
        Status::Completed
    );
}

#[test]
fn a_definition_stored_before_the_limits_still_loads_and_its_pill_is_refused() {
    // What an earlier Cairn accepted: a guard of 5,000 terms, stored as it was applied.
    let (e, _clock, _dir) = poison_engine(cairn_core::Limits::default());
    let pill = vec!["1"; 5000].join(" + ");
    let text = format!(
        "machine: old\ninitial: a\nstates:\n  a: {{ on: {{ go: {{ target: b, guard: \"{pill} > 0\" }}, skip: b }} }}\n  b: {{ type: final }}\n"
    );
    assert!(
        matches!(
            e.apply("default", &text, None, None),
            Err(Error::Definition(_))
        ),
        "today it is refused at apply time"
    );
    let def = cairn_core::Machine::load_with(&text, None, None, &cairn_core::Limits::CEILING)
        .err()
        .is_some();
    assert!(def, "even the ceiling refuses it");
    // Store it as an older version would have.
    let machine = cairn_core::source::parse(&text, cairn_core::Format::Yaml).unwrap();
    let record = cairn_store::MachineRecord {
        namespace: "default".into(),
        name: "old".into(),
        version: 1,
        digest: "old".into(),
        definition: machine.to_json(),
        created_at: chrono::Utc::now(),
    };
    e.store()
        .write(move |tx| tx.insert_machine(&record))
        .unwrap();
    assert!(
        e.machines("default")
            .unwrap()
            .iter()
            .any(|m| m.name == "old")
    );
    e.start(
        "default",
        StartRequest {
            machine: "old".into(),
            id: Some("o".into()),
            ..Default::default()
        },
    )
    .unwrap();
    match e.send("default", "o", send("go", json!({}))) {
        Err(Error::Refused(Rejection::Guard { message, .. })) => {
            assert!(message.contains("beyond what Cairn evaluates"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    e.send("default", "o", send("skip", json!({}))).unwrap();
    assert_eq!(e.get("default", "o").unwrap().status, Status::Completed);
    assert!(e.verify("default", "o").unwrap().ok);
}

/// Applying what a careless or hostile client sends: each is stored or refused with
/// positioned problems, nothing else; and whatever was stored reads back.
#[test]
fn hostile_definitions_are_applied_or_refused_and_always_read_back() {
    let (e, _dir) = engine();
    let chain = |n: usize| vec!["1"; n].join(" + ");
    let mut cases = vec![
        format!(
            "machine: a1\ninitial: s\nstates:\n  s: {{ on: {{ go: {{ target: s, guard: \"{} > 0\" }} }} }}\n",
            chain(60)
        ),
        format!(
            "machine: a2\ninitial: s\nstates:\n  s: {{ on: {{ go: {{ target: s, guard: \"{} > 0\" }} }} }}\n",
            chain(10_000)
        ),
        format!(
            "machine: a3\ninitial: s\ncontext: {{ x: {}1{} }}\nstates:\n  s: {{}}\n",
            "[".repeat(60),
            "]".repeat(60)
        ),
        format!(
            "machine: a4\ninitial: s\ncontext: {{ x: {}1{} }}\nstates:\n  s: {{}}\n",
            "[".repeat(200),
            "]".repeat(200)
        ),
        "machine: a5\ninitial: s\nstates: {s: {on: {go: {target: s, assign: {x: \"'".to_string()
            + &"y".repeat(5000)
            + "'\"}}}}}\n",
        "{\"machine\": \"a6\", \"initial\": ".to_string(),
        "machine = \"a7\"\ninitial = \"s\"\n[states.s]\n".to_string(),
    ];
    // A state tree as deep as the definition limit allows, and one level deeper.
    for (name, levels) in [("a8", 30), ("a9", 40)] {
        let mut s = format!("machine: {name}\ninitial: s0\nstates:\n");
        for d in 0..levels {
            let pad = "  ".repeat(2 * d + 1);
            s.push_str(&format!("{pad}s{d}:\n"));
            if d + 1 < levels {
                s.push_str(&format!("{pad}  initial: s{}\n{pad}  states:\n", d + 1));
            } else {
                s.push_str(&format!("{pad}  type: final\n"));
            }
        }
        cases.push(s);
    }
    let mut applied = Vec::new();
    for text in &cases {
        match e.apply("default", text, None, None) {
            Ok(a) => applied.push(a.machine),
            Err(Error::Definition(load)) => {
                assert!(load.diagnostics.iter().all(|d| d.pos.line >= 1), "{load}")
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(applied, ["a1", "a3", "a7", "a8"]);
    // Everything stored reads back and compiles.
    for m in e.machines("default").unwrap() {
        e.machine("default", &m.name, Some(m.version)).unwrap();
    }
}

#[test]
fn a_machine_version_no_instance_runs_on_is_deleted_for_good() {
    let (e, _dir) = engine();
    let v2 = ORDER.replace("context: { n: 0 }", "context: { n: 1 }");
    assert_eq!(e.apply("default", &v2, None, None).unwrap().version, 2);
    start(&e, "on-v2");
    match e.delete_machine("default", "order", 2) {
        Err(Error::Conflict(m)) => assert!(m.contains("runs 1 instance"), "{m}"),
        other => panic!("{other:?}"),
    }
    e.delete_machine("default", "order", 1).unwrap();
    assert!(matches!(
        e.delete_machine("default", "order", 1),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        e.machine("default", "order", Some(1)),
        Err(Error::NotFound(_))
    ));
    // A new version never reuses a deleted number.
    e.delete("default", "on-v2").unwrap();
    e.delete_machine("default", "order", 2).unwrap();
    assert!(e.machines("default").unwrap().is_empty());
    let v3 = ORDER.replace("context: { n: 0 }", "context: { n: 3 }");
    assert_eq!(e.apply("default", &v3, None, None).unwrap().version, 3);
}

#[test]
fn repair_deletes_unreadable_versions_no_instance_runs_on_and_keeps_the_rest() {
    let (e, _dir) = engine();
    // Two versions an older Cairn stored, too deep to read back; one has an instance.
    let mut deep = json!(0);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    for name in ["stale", "busy"] {
        let record = cairn_store::MachineRecord {
            namespace: "default".into(),
            name: name.into(),
            version: 1,
            digest: name.into(),
            definition: json!({"machine": name, "context": deep.clone()}),
            created_at: chrono::Utc::now(),
        };
        e.store()
            .write(move |tx| tx.insert_machine(&record))
            .unwrap();
    }
    let busy = cairn_store::InstanceRecord {
        namespace: "default".into(),
        id: "b".into(),
        machine: "busy".into(),
        machine_version: 1,
        status: Status::Running,
        configuration: vec!["a".into()],
        context: json!({}),
        version: 1,
        history_seq: 1,
        labels: Default::default(),
        parent: None,
        last_error: None,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        entered: Default::default(),
    };
    e.store()
        .write(move |tx| tx.insert_instance(&busy))
        .unwrap();
    // Listing works; using one is a clear conflict, not a crash.
    assert_eq!(e.machines("default").unwrap().len(), 3);
    match e.machine("default", "stale", None) {
        Err(Error::Conflict(m)) => assert!(m.contains("cairn repair"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let dry = e.repair(true).unwrap();
    assert_eq!(dry.deletable.len(), 1);
    assert_eq!(dry.in_use[0].instances, 1);
    assert!(dry.deleted.is_empty());
    assert_eq!(
        e.machines("default").unwrap().len(),
        3,
        "a dry run changes nothing"
    );
    let done = e.repair(false).unwrap();
    assert_eq!(
        (
            done.deleted[0].machine.as_str(),
            done.in_use[0].machine.as_str()
        ),
        ("stale", "busy")
    );
    assert_eq!(e.machines("default").unwrap().len(), 2);
    e.delete("default", "b").unwrap();
    assert_eq!(e.repair(false).unwrap().deleted.len(), 1);
    assert!(e.repair(true).unwrap().deletable.is_empty());
}
