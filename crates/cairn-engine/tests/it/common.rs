//! Shared by the engine's integration tests: an engine on a real store (SQLite or PostgreSQL) in a
//! temporary directory, on a manual clock, with machines applied; and short forms of the
//! operations the tests repeat.
#![allow(dead_code)]

use std::sync::Arc;

use cairn_engine::{Config, Engine, Error, ManualClock, SendRequest, StartRequest};
use cairn_store_any::AnyStore;
use cairn_store_any::testing::Backend;
use serde_json::Value;

pub struct World {
    pub e: Engine<AnyStore>,
    pub clock: Arc<ManualClock>,
    pub dir: Backend,
}

/// An engine at 2023-11-14T22:13:20Z with `machines` applied in namespace `default`.
pub fn world(machines: &[&str]) -> World {
    let dir = Backend::new();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    ));
    let e = Engine::new(dir.open(), clock.clone(), Config::default());
    for m in machines {
        e.apply("default", m, None, None).unwrap();
    }
    World { e, clock, dir }
}

pub fn start(e: &Engine<AnyStore>, machine: &str, id: &str, input: Value) -> Result<(), Error> {
    e.start(
        "default",
        StartRequest {
            machine: machine.into(),
            id: Some(id.into()),
            input,
            ..Default::default()
        },
    )
    .map(|_| ())
}

pub fn send(e: &Engine<AnyStore>, id: &str, event: &str, payload: Value) {
    e.send(
        "default",
        id,
        SendRequest {
            event: event.into(),
            payload,
            ..Default::default()
        },
    )
    .unwrap();
}

pub fn verified(e: &Engine<AnyStore>, ids: &[&str]) {
    for id in ids {
        let v = e.verify("default", id).unwrap();
        assert!(v.ok, "{id}: {:?}", v.problem);
    }
}
