//! Child instances and the outbox that carries their outcome to the parent.
//!
//! A `spawn` (a state's, or an action's) starts the child in the parent's own unit of work:
//! the child exists exactly when the parent's transition does. The child is linked to its
//! parent (`parent`, and a `children` record naming the spawning state). When the child
//! finishes, `child.done` (completed) or `child.failed` (failed or cancelled) is written to
//! the transactional outbox in the child's unit, and delivered to the parent after commit
//! ([`Engine::drain_outbox`]): the entry is deleted in the unit that applies it, so it is
//! applied once, and a failure in the parent never rolls back the child.
//!
//! The tree moves together: leaving the spawning state cancels that state's children; a
//! parent that finishes cancels the children still running; pause, resume and cancel
//! cascade down (a child cancelled by its parent does not report back).

use cairn_core::{Event, Rejection, Status};
use cairn_store::{ChildRecord, HistoryKind, InstanceRecord, OutboxRecord, Store};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::engine::{Engine, Machines};
use crate::unit::Unit;
use crate::{Actor, Error, unit};

/// How deep children may nest (a machine that spawns itself stops here).
pub const MAX_DEPTH: u32 = 16;

fn depth_of(tx: &mut Unit<'_>, inst: &InstanceRecord) -> Result<u32, Error> {
    let mut depth = 0;
    let mut parent = inst.parent.clone();
    while let Some(p) = parent {
        depth += 1;
        if depth > MAX_DEPTH {
            break;
        }
        parent = tx.instance(&inst.namespace, &p)?.and_then(|i| i.parent);
    }
    Ok(depth)
}

/// Starts a child of `parent` inside the current unit, from `state` (`None`: an action).
/// A problem (unknown machine, an id in use, bad input, too deep) refuses the parent's
/// event, so nothing of it is written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    tx: &mut Unit<'_>,
    machines: &Machines,
    parent: &InstanceRecord,
    state: Option<&str>,
    machine: &str,
    id: Option<&str>,
    input: &Value,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let refuse = |message: String| {
        Error::Refused(Rejection::Action {
            state: state.unwrap_or_default().to_string(),
            what: format!("spawn `{machine}`"),
            message,
        })
    };
    if depth_of(tx, parent)? >= MAX_DEPTH {
        return Err(refuse(format!("children nest at most {MAX_DEPTH} deep")));
    }
    let id = match id {
        Some(id) => id.to_string(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let child = crate::start::in_unit(
        tx,
        machines,
        &parent.namespace,
        machine,
        &id,
        input,
        Some(parent),
        &format!("instance:{}", parent.id),
        now,
        &refuse,
    )?;
    tx.insert_child(&ChildRecord {
        namespace: parent.namespace.clone(),
        parent_id: parent.id.clone(),
        child_id: id.clone(),
        state: state.map(str::to_string),
        created_at: now,
    })?;
    unit::log(
        tx,
        parent,
        "child_spawned",
        json!({"child": id, "machine": child.machine, "state": state}),
        now,
    )
}

/// What a cascade does to each descendant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cascade {
    Pause,
    Resume,
    Cancel,
}

/// Applies `op` to the children of `parent` (those of `state` only, when given) and their
/// descendants, in this unit. Children already finished are left alone; a cancelled child
/// does not report to the parent that cancelled it.
pub(crate) fn cascade(
    tx: &mut Unit<'_>,
    machines: &Machines,
    parent: &InstanceRecord,
    state: Option<&str>,
    op: Cascade,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let actor = Actor::from(format!("instance:{}", parent.id));
    for link in tx.children(&parent.namespace, &parent.id)? {
        if state.is_some() && link.state.as_deref() != state {
            continue;
        }
        let Some(mut child) = tx.instance(&parent.namespace, &link.child_id)? else {
            continue;
        };
        match (op, child.status) {
            (Cascade::Pause, Status::Running) => {
                child.status = Status::Paused;
                unit::record_lifecycle(
                    tx,
                    &mut child,
                    HistoryKind::Pause,
                    &actor,
                    "the parent was paused",
                    now,
                )?;
                cascade(tx, machines, &child, None, op, now)?;
            }
            (Cascade::Resume, Status::Paused) => {
                resume_in_unit(
                    tx,
                    machines,
                    &mut child,
                    &actor,
                    "the parent was resumed",
                    now,
                )?;
                cascade(tx, machines, &child, None, op, now)?;
            }
            (Cascade::Cancel, Status::Running | Status::Paused) => {
                child.status = Status::Cancelled;
                let why = match state {
                    Some(s) => format!("the parent left state `{s}`"),
                    None => "the parent ended".to_string(),
                };
                unit::record_lifecycle(tx, &mut child, HistoryKind::Cancel, &actor, &why, now)?;
                // Silent: the parent cancelled it and does not hear back.
                unit::finish_quietly(tx, machines, &child, now)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Resumes a paused instance in this unit: queued events in order, then due timers.
pub(crate) fn resume_in_unit(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &mut InstanceRecord,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    inst.status = Status::Running;
    unit::record_lifecycle(tx, inst, HistoryKind::Resume, actor, reason, now)?;
    for queued in tx.take_inbox(&inst.namespace, &inst.id)? {
        if inst.status.is_finished() {
            break;
        }
        let event = Event {
            name: queued.event.clone(),
            payload: queued.payload.clone(),
            actor: queued.actor.clone(),
            reason: queued.reason.clone(),
        };
        let by = Actor {
            name: String::new(),
            token: queued.token_id.clone(),
            on_behalf_of: queued.on_behalf_of.clone(),
        };
        let key = queued.idempotency_key.clone().map(|k| {
            (
                k,
                crate::engine::fingerprint(&queued.event, &queued.payload),
            )
        });
        match unit::apply_event(tx, machines, inst, &event, &by, key, now) {
            Ok(_) => {}
            // A queued event the machine refuses now is reported, not applied; the
            // refusal changed nothing.
            Err(Error::Refused(r)) => unit::log(
                tx,
                inst,
                "queued_refused",
                json!({"event": queued.event, "reason": r.to_string()}),
                now,
            )?,
            Err(e) => return Err(e),
        }
    }
    crate::lifecycle::fire_due_in_unit(tx, machines, inst, now)?;
    crate::maps::resume(tx, machines, inst, now)
}

/// A finished child tells its parent, through the outbox.
pub(crate) fn notify_parent(
    tx: &mut Unit<'_>,
    child: &InstanceRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let Some(parent) = &child.parent else {
        return Ok(());
    };
    let state = tx
        .children(&child.namespace, parent)?
        .into_iter()
        .find(|c| c.child_id == child.id)
        .and_then(|c| c.state);
    let (event, payload) = match child.status {
        Status::Completed => (
            "child.done",
            json!({"child": child.id, "machine": child.machine, "status": child.status, "state": state, "output": child.context}),
        ),
        _ => (
            "child.failed",
            json!({"child": child.id, "machine": child.machine, "status": child.status, "state": state,
                   "error": child.last_error.clone().unwrap_or_else(|| format!("the child ended {}", child.status.as_str())),
                   "output": child.context}),
        ),
    };
    tx.push_outbox(&OutboxRecord {
        seq: 0,
        kind: "system".into(),
        hops: tx.hops(),
        namespace: child.namespace.clone(),
        instance_id: parent.clone(),
        event: event.to_string(),
        payload,
        actor: format!("instance:{}", child.id),
        reason: String::new(),
        source: format!("child:{}", child.id),
        created_at: now,
    })?;
    Ok(())
}

/// Delivers one outbox entry: applied if the receiver runs, queued if it is paused,
/// dropped (and logged) if it is gone or finished, or takes no such event at all. A
/// receiver whose machine fails on it goes to `failed`.
fn deliver(
    tx: &mut Unit<'_>,
    machines: &Machines,
    e: &OutboxRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    // What this delivery sets off (the receiver's own triggers) counts one hop more.
    tx.at_hops(e.hops, |tx| deliver_entry(tx, machines, e, now))
}

fn deliver_entry(
    tx: &mut Unit<'_>,
    machines: &Machines,
    e: &OutboxRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    if e.kind == "start" {
        // Deduplicated on arrival: an instance with this id exists already.
        if tx.instance(&e.namespace, &e.instance_id)?.is_some() {
            return Ok(());
        }
        let refuse = |m: String| Error::Invalid(format!("{}: {m}", e.source));
        crate::start::in_unit(
            tx,
            machines,
            &e.namespace,
            &e.event,
            &e.instance_id,
            &e.payload,
            None,
            &e.actor,
            now,
            &refuse,
        )?;
        return Ok(());
    }
    let Some(mut inst) = tx.instance(&e.namespace, &e.instance_id)? else {
        return Ok(());
    };

    let event = Event {
        name: e.event.clone(),
        payload: e.payload.clone(),
        actor: e.actor.clone(),
        reason: e.reason.clone(),
    };
    if inst.status.is_finished() {
        return unit::log(
            tx,
            &inst,
            "outbox_dropped",
            json!({"event": e.event, "source": e.source, "status": inst.status}),
            now,
        );
    }
    // A map state's child: its item moves on (and the map reports when it is done).
    if e.kind == "system"
        && e.event.starts_with("child.")
        && crate::maps::child_finished(tx, machines, &mut inst, &event, now)?
    {
        return Ok(());
    }
    if inst.status == Status::Paused {
        return unit::queue_event(tx, &inst, &event, &Actor::default(), None, now);
    }
    match unit::apply_event(
        tx,
        machines,
        &mut inst,
        &event,
        &Actor::default(),
        None,
        now,
    ) {
        Ok(_) => Ok(()),
        // An ordinary event a trigger sent is refused like a client's: nothing changes.
        Err(Error::Refused(r)) if e.kind != "system" => unit::log(
            tx,
            &inst,
            "outbox_refused",
            json!({"event": e.event, "source": e.source, "reason": r.to_string()}),
            now,
        ),
        Err(Error::Refused(Rejection::NotAccepted { .. })) => unit::log(
            tx,
            &inst,
            "outbox_unhandled",
            json!({"event": e.event, "source": e.source}),
            now,
        ),
        Err(Error::Refused(r)) => unit::fail_instance(
            tx,
            machines,
            &mut inst,
            &format!("`{}` could not be applied: {r}", e.event),
            now,
        ),
        Err(e) => Err(e),
    }
}

/// How an outbox unit failed: the unit itself (storage), or one entry's delivery, with the
/// entry.
enum Delivery {
    Unit(Error),
    Failed(Box<cairn_store::OutboxRecord>, Error),
}

impl From<Error> for Delivery {
    fn from(e: Error) -> Delivery {
        Delivery::Unit(e)
    }
}

impl From<cairn_store::Error> for Delivery {
    fn from(e: cairn_store::Error) -> Delivery {
        Delivery::Unit(Error::Store(e))
    }
}

impl crate::engine::UnitError for Delivery {
    fn refused(&self) -> bool {
        matches!(
            self,
            Delivery::Unit(Error::Refused(_)) | Delivery::Failed(_, Error::Refused(_))
        )
    }
}

impl<S: Store> Engine<S> {
    /// Delivers what the outbox holds, oldest first, each entry in the unit that applies
    /// it (and deletes it). Deliveries may write more (a parent finishing tells its own
    /// parent); those are delivered too. An entry whose delivery fails for a reason other
    /// than storage is dropped and logged, so one bad entry cannot block the rest.
    /// Returns how many entries were delivered.
    pub fn drain_outbox(&self) -> Result<usize, Error> {
        let machines = self.machine_cache();
        let mut total = 0;
        loop {
            let now = self.now();
            let m = std::sync::Arc::clone(&machines);
            let r = self.write_unit(
                move |tx| {
                    let Some(e) = tx.outbox(1)?.pop() else {
                        return Ok(None);
                    };
                    tx.delete_outbox(e.seq)?;
                    // A delivery that fails (or panics) fails with its entry, so that
                    // exactly that one is dropped (with several nodes draining, the
                    // oldest entry may be another's by then).
                    let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        deliver(tx, &m, &e, now)
                    }))
                    .unwrap_or_else(|_| {
                        Err(Error::Refused(cairn_core::Rejection::Internal(
                            "delivering an outbox entry panicked".into(),
                        )))
                    });
                    match delivered {
                        Ok(()) => Ok(Some(e.seq)),
                        Err(Error::Store(s)) => Err(Delivery::Unit(Error::Store(s))),
                        Err(err) => Err(Delivery::Failed(Box::new(e), err)),
                    }
                },
                false,
            );
            match r {
                Ok(Some(_)) => total += 1,
                Ok(None) => return Ok(total),
                Err(Delivery::Unit(e)) => return Err(e),
                Err(Delivery::Failed(e, other)) => {
                    let why = other.to_string();
                    self.write(move |tx| {
                        if tx.delete_outbox(e.seq)? {
                            tx.append_log(&cairn_store::NewLogEntry {
                                namespace: e.namespace.clone(),
                                instance_id: e.instance_id.clone(),
                                kind: "outbox_failed".into(),
                                version: 0,
                                data: json!({"event": e.event, "source": e.source, "error": why}),
                                created_at: now,
                            })?;
                        }
                        Ok(())
                    })?;
                }
            }
        }
    }
}
