//! Map states: one child per item, started as their dependencies and the concurrency
//! allow; the state completes when every child has finished.
//!
//! The progress of a map (each item's status and child) is stored with the instance and
//! changes only in units of the instance: entering the state starts the first children;
//! each child's outcome, delivered through the outbox, updates its item and starts the
//! next ones. When all items have finished, `done.state.<path>` (the state's `on_done`)
//! reaches the instance with every item's result. With `fail_fast` (the default) the
//! first failure cancels the other children and `child.failed` reaches the instance;
//! with `continue`, items that depend on a failed one are skipped and the rest go on.

use cairn_core::step::MapItem;
use cairn_core::{Event, Status};
use cairn_store::{InstanceRecord, OutboxRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::machines::Machines;
use crate::unit::Unit;
use crate::{Error, unit};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Progress {
    machine: String,
    concurrency: Option<u32>,
    fail_fast: bool,
    items: Vec<Item>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    key: String,
    input: Value,
    #[serde(default)]
    depends_on: Vec<String>,
    /// pending, running, completed, failed, cancelled or skipped.
    status: String,
    #[serde(default)]
    child: Option<String>,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error: Option<String>,
}

impl Progress {
    fn finished(&self) -> bool {
        self.items
            .iter()
            .all(|i| !matches!(i.status.as_str(), "pending" | "running"))
    }

    fn results(&self) -> Value {
        let count = |s: &str| self.items.iter().filter(|i| i.status == s).count();
        json!({
            "results": self.items.iter().map(|i| json!({
                "key": i.key, "child": i.child, "status": i.status, "output": i.output, "error": i.error,
            })).collect::<Vec<_>>(),
            "completed": count("completed"),
            "failed": count("failed"),
            "skipped": count("skipped"),
            "cancelled": count("cancelled"),
        })
    }
}

/// How a finished map reaches its instance.
enum Finish<'a> {
    /// Through the outbox (the instance is mid-transition in this unit).
    Outbox,
    /// Applied now (a delivery or resume unit of the instance).
    Apply(&'a mut InstanceRecord),
}

/// Entering a map state: records its items and starts the first children.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    state: &str,
    machine: &str,
    items: &[MapItem],
    concurrency: Option<u32>,
    fail_fast: bool,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let mut p = Progress {
        machine: machine.to_string(),
        concurrency,
        fail_fast,
        items: items
            .iter()
            .map(|i| Item {
                key: i.key.clone(),
                input: i.input.clone(),
                depends_on: i.depends_on.clone(),
                status: "pending".into(),
                child: None,
                output: Value::Null,
                error: None,
            })
            .collect(),
    };
    unit::log(
        tx,
        inst,
        "map_started",
        json!({"state": state, "items": items.len()}),
        now,
    )?;
    advance(tx, machines, inst, state, &mut p, now)?;
    settle(tx, machines, Finish::Outbox, inst, state, p, now)
}

/// Starts every item whose dependencies completed, up to the concurrency; skips those
/// whose dependencies cannot complete. Nothing starts while the instance is paused.
fn advance(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    state: &str,
    p: &mut Progress,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    loop {
        let mut changed = false;
        for i in 0..p.items.len() {
            if p.items[i].status != "pending" {
                continue;
            }
            let blocked = p.items[i].depends_on.iter().any(|d| {
                p.items.iter().find(|o| &o.key == d).is_some_and(|o| {
                    matches!(o.status.as_str(), "failed" | "skipped" | "cancelled")
                })
            });
            if blocked {
                p.items[i].status = "skipped".into();
                p.items[i].error = Some("a dependency did not complete".into());
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    if inst.status != Status::Running {
        return Ok(());
    }
    let limit = p.concurrency.map_or(usize::MAX, |c| c as usize);
    for i in 0..p.items.len() {
        let running = p.items.iter().filter(|i| i.status == "running").count();
        if running >= limit {
            break;
        }
        let ready = p.items[i].status == "pending"
            && p.items[i].depends_on.iter().all(|d| {
                p.items
                    .iter()
                    .find(|o| &o.key == d)
                    .is_some_and(|o| o.status == "completed")
            });
        if !ready {
            continue;
        }
        let id = format!("{}.{}", inst.id, p.items[i].key);
        let item = &mut p.items[i];
        match crate::children::spawn(
            tx,
            machines,
            inst,
            Some(state),
            &p.machine,
            Some(&id),
            &item.input,
            now,
        ) {
            Ok(()) => {
                item.status = "running".into();
                item.child = Some(id);
            }
            // The child could not start (bad input, say): the item fails.
            Err(Error::Refused(r)) => {
                item.status = "failed".into();
                item.error = Some(r.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// After a change: stores the progress, or, when every item has finished (or one failed
/// under `fail_fast`), forgets it and tells the instance.
fn settle(
    tx: &mut Unit<'_>,
    machines: &Machines,
    finish: Finish<'_>,
    inst: &InstanceRecord,
    state: &str,
    mut p: Progress,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let failed = p.items.iter().find(|i| i.status == "failed").cloned();
    let event = match failed {
        Some(f) if p.fail_fast => {
            // Cancel the rest: children still running, items not started.
            crate::children::cancel(tx, machines, inst, Some(state), now)?;
            for i in &mut p.items {
                if matches!(i.status.as_str(), "pending" | "running") {
                    i.status = "cancelled".into();
                }
            }
            let mut payload = p.results();
            payload["child"] = json!(f.child);
            payload["key"] = json!(f.key);
            payload["state"] = json!(state);
            payload["error"] = json!(f.error.clone().unwrap_or_else(|| "failed".into()));
            ("child.failed".to_string(), payload)
        }
        _ if p.finished() => (format!("done.state.{state}"), p.results()),
        _ => {
            tx.put_map(
                &inst.namespace,
                &inst.id,
                state,
                &serde_json::to_value(&p).unwrap_or_default(),
            )?;
            return Ok(());
        }
    };
    tx.delete_map(&inst.namespace, &inst.id, state)?;
    unit::log(
        tx,
        inst,
        "map_finished",
        json!({"state": state, "event": event.0}),
        now,
    )?;
    match finish {
        Finish::Outbox => {
            tx.push_outbox(&OutboxRecord {
                seq: 0,
                kind: "system".into(),
                hops: 0,
                namespace: inst.namespace.clone(),
                instance_id: inst.id.clone(),
                event: event.0,
                payload: event.1,
                actor: String::new(),
                reason: String::new(),
                source: format!("map:{}:{state}", inst.id),
                created_at: now,
            })?;
            Ok(())
        }
        Finish::Apply(inst) => {
            let e = Event {
                name: event.0,
                payload: event.1,
                actor: String::new(),
                reason: String::new(),
                to: Some(state.to_string()),
            };
            crate::apply::deliver_system(tx, machines, inst, e, &crate::Actor::default(), now)
        }
    }
}

/// A child's outcome for a map state of `inst`, if `state` is one in progress: updates
/// the item and moves the map on. Returns false when no map of that state is running
/// (the outcome is then an ordinary `child.*` event).
pub(crate) fn child_finished(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &mut InstanceRecord,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let Some(state) = event.payload["state"].as_str().map(str::to_string) else {
        return Ok(false);
    };
    let Some(v) = tx.map_progress(&inst.namespace, &inst.id, &state)? else {
        return Ok(false);
    };
    let Ok(mut p) = serde_json::from_value::<Progress>(v) else {
        return Ok(false);
    };
    let child = event.payload["child"].as_str().unwrap_or_default();
    let Some(item) = p
        .items
        .iter_mut()
        .find(|i| i.child.as_deref() == Some(child))
    else {
        return Ok(false);
    };
    if item.status != "running" {
        return Ok(true);
    }
    item.output = event.payload["output"].clone();
    if event.name == "child.done" {
        item.status = "completed".into();
    } else {
        item.status = "failed".into();
        item.error = event.payload["error"].as_str().map(str::to_string);
    }
    let snapshot = inst.clone();
    if !(p.fail_fast && p.items.iter().any(|i| i.status == "failed")) {
        advance(tx, machines, &snapshot, &state, &mut p, now)?;
    }
    settle(tx, machines, Finish::Apply(inst), &snapshot, &state, p, now)?;
    Ok(true)
}

/// After a resume: starts the items held while the instance was paused.
pub(crate) fn resume(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &mut InstanceRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for (state, v) in tx.maps_of(&inst.namespace, &inst.id)? {
        let Ok(mut p) = serde_json::from_value::<Progress>(v) else {
            continue;
        };
        if inst.status != Status::Running {
            break;
        }
        let snapshot = inst.clone();
        advance(tx, machines, &snapshot, &state, &mut p, now)?;
        settle(tx, machines, Finish::Apply(inst), &snapshot, &state, p, now)?;
    }
    Ok(())
}

/// Leaving a map state, or the instance ending: the map is forgotten (its children are
/// cancelled by the caller).
pub(crate) fn forget(
    tx: &mut Unit<'_>,
    inst: &InstanceRecord,
    state: Option<&str>,
) -> Result<(), Error> {
    match state {
        Some(s) => {
            tx.delete_map(&inst.namespace, &inst.id, s)?;
        }
        None => {
            for (s, _) in tx.maps_of(&inst.namespace, &inst.id)? {
                tx.delete_map(&inst.namespace, &inst.id, &s)?;
            }
        }
    }
    Ok(())
}
