//! Shared by the engine's integration tests: an engine on a real SQLite file in a
//! temporary directory, on a manual clock, with machines applied; and short forms of the
//! operations the tests repeat.
#![allow(dead_code)]

use std::sync::Arc;

use cairn_engine::{Config, Engine, Error, ManualClock, SendRequest, StartRequest};
use cairn_store_sqlite::{Options, SqliteStore};
use serde_json::Value;

pub struct World {
    pub e: Engine<SqliteStore>,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
}

/// An engine at 2023-11-14T22:13:20Z with `machines` applied in namespace `default`.
pub fn world(machines: &[&str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    ));
    let e = Engine::new(
        SqliteStore::open(dir.path(), Options::default()).unwrap(),
        clock.clone(),
        Config::default(),
    );
    for m in machines {
        e.apply("default", m, None, None).unwrap();
    }
    World { e, clock, dir }
}

pub fn start(e: &Engine<SqliteStore>, machine: &str, id: &str, input: Value) -> Result<(), Error> {
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

pub fn send(e: &Engine<SqliteStore>, id: &str, event: &str, payload: Value) {
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

pub fn verified(e: &Engine<SqliteStore>, ids: &[&str]) {
    for id in ids {
        let v = e.verify("default", id).unwrap();
        assert!(v.ok, "{id}: {:?}", v.problem);
    }
}
