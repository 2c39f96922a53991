//! Shared helpers for the core's data-driven tests: load a YAML machine, run events, and
//! print a trace (microsteps, effects, configuration, context) for an inline snapshot.

#![allow(dead_code)]

use std::fmt::Write;

use cairn_core::{Env, Event, Machine, Outcome, Snapshot, replay, start, step};
use chrono::DateTime;
use serde_json::Value;

pub fn env() -> Env {
    Env::at(DateTime::from_timestamp(1_700_000_000, 0).unwrap())
}

pub fn machine(yaml: &str) -> Machine {
    match Machine::load(yaml, Some(cairn_core::Format::Yaml), Some("test.yaml")) {
        Ok(m) => m,
        Err(e) => panic!("machine did not load:\n{e}"),
    }
}

fn outcome_trace(m: &Machine, out: &Outcome, trace: &mut String) {
    for ms in &out.microsteps {
        let ts: Vec<String> = ms
            .transitions
            .iter()
            .map(|t| {
                let tr = &m.transitions[*t];
                let src = &m.states[tr.source].path;
                let tgt = tr
                    .target
                    .map_or("(none)".to_string(), |t| m.states[t].path.clone());
                format!(
                    "{}->{}",
                    if src.is_empty() { "(machine)" } else { src },
                    tgt
                )
            })
            .collect();
        let ev = ms.event.as_deref().unwrap_or("-");
        let _ = writeln!(
            trace,
            "  {:?} {ev} [{}] exit({}) enter({})",
            ms.kind,
            ts.join(", "),
            ms.exited.join(" "),
            ms.entered.join(" ")
        );
    }
    for e in &out.effects {
        let _ = writeln!(trace, "  effect {}", serde_json::to_string(e).unwrap());
    }
    let s = &out.snapshot;
    let _ = writeln!(
        trace,
        "  => {:?} {} {}",
        s.configuration,
        s.status.as_str(),
        s.context
    );
}

/// Parses `name`, `name {json payload}`, and either with `@state.path` after the name:
/// an outcome addressed to that state (`Event::to`).
pub fn event(spec: &str) -> Event {
    let (head, payload) = match spec.split_once(' ') {
        Some((head, payload)) => (head, Some(payload)),
        None => (spec, None),
    };
    let mut e = match head.split_once('@') {
        Some((name, to)) => Event::new(name).to_state(to),
        None => Event::new(head),
    };
    if let Some(p) = payload {
        e = e.with_payload(serde_json::from_str(p).unwrap());
    }
    e
}

/// Starts `yaml`, applies each event spec, and returns the trace. Every outcome is also
/// replayed from its microsteps, which must reproduce the snapshot.
pub fn trace(yaml: &str, events: &[&str]) -> String {
    let m = machine(yaml);
    let env = env();
    let mut out = String::new();
    let first = match start(&m, &Value::Null, &env) {
        Ok(o) => o,
        Err(e) => return format!("start refused: {e}\n"),
    };
    out.push_str("start\n");
    outcome_trace(&m, &first, &mut out);
    let replayed = replay(&m, None, &Event::new(""), &env, &first.microsteps).unwrap();
    assert_eq!(replayed, first.snapshot, "replay of start differs");
    let mut snap: Snapshot = first.snapshot;
    for spec in events {
        let ev = event(spec);
        let _ = writeln!(out, "{spec}");
        match step(&m, &snap, &ev, &env) {
            Ok(o) => {
                outcome_trace(&m, &o, &mut out);
                let replayed = replay(&m, Some(&snap), &ev, &env, &o.microsteps).unwrap();
                assert_eq!(replayed, o.snapshot, "replay of {spec} differs");
                snap = o.snapshot;
            }
            Err(e) => {
                let _ = writeln!(out, "  refused: {e}");
            }
        }
    }
    out
}
