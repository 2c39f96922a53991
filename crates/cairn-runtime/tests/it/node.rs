//! A node's services together: retention finds its namespaces without listing instances
//! and removes what is old in each, timers fire, and `stop` ends every service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_core::Status;
use cairn_engine::{Config, Engine, ManualClock, Retention, SendRequest, StartRequest};
use cairn_runtime::{Node, NodeOptions, RetentionOptions, TimerOptions};
use cairn_store_any::testing::Backend;

const FLOW: &str = r#"
machine: flow
initial: open
states:
  open:
    on: { close: closed }
  closed: { type: final }
"#;

#[test]
fn a_node_applies_retention_in_every_namespace_and_stops_when_told() {
    let dir = Backend::new();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    ));
    let engine = Engine::new(dir.open(), clock.clone(), Config::default());
    for ns in ["alpha", "beta"] {
        engine.apply(ns, FLOW, None, Some("flow.yaml")).unwrap();
        for id in ["old", "open"] {
            engine
                .start(
                    ns,
                    StartRequest {
                        machine: "flow".into(),
                        id: Some(id.into()),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        engine
            .send(
                ns,
                "old",
                SendRequest {
                    event: "close".into(),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    assert_eq!(engine.namespaces().unwrap(), ["alpha", "beta"]);
    clock.advance(chrono::Duration::days(2));

    let node = Node::start(
        engine.clone(),
        NodeOptions {
            timers: TimerOptions {
                every: Duration::from_millis(5),
            },
            retention: RetentionOptions {
                instances: Retention {
                    finished_after: Some(chrono::Duration::days(1)),
                    max_history: None,
                },
                every: Duration::from_millis(10),
                ..RetentionOptions::default()
            },
            log_moved: None,
        },
    )
    .unwrap();
    let names = node.services();
    for s in ["cairn-timers", "cairn-executors", "cairn-retention"] {
        assert!(names.contains(&s), "{names:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while ["alpha", "beta"]
        .iter()
        .any(|ns| engine.get(ns, "old").is_ok())
    {
        assert!(
            Instant::now() < deadline,
            "retention did not remove the old finished instances"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    node.stop();
    // Every service wakes for the stop; none sleeps out its interval.
    assert!(started.elapsed() < Duration::from_secs(10));
    for ns in ["alpha", "beta"] {
        assert_eq!(engine.get(ns, "open").unwrap().status, Status::Running);
        assert!(matches!(
            engine.get(ns, "old"),
            Err(cairn_engine::Error::NotFound(_))
        ));
    }
}
