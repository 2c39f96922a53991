//! The engine on a real SQLite file: versions, start, send, idempotency, optimistic
//! concurrency, refusals that change nothing, listing, and verify.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_core::{Rejection, Status};
use cairn_engine::{Config, Engine, Error, ManualClock, SendRequest, StartRequest};
use cairn_store::InstanceFilter;
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
