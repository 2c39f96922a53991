//! Applying an event to an instance inside a unit: the step, the instance's row, its
//! history, the idempotency key and the log entry; then its effects (`effects.rs`), the
//! triggers that match (`triggers.rs`) and, when it finished, its end. Every operation
//! of the engine that changes an instance goes through here, so an event applied by a
//! client, a timer, an approval or a resume is recorded alike.

use cairn_core::{Env, Event, Status};
use cairn_store::{HistoryKind, HistoryRecord, IdempotencyRecord, InstanceRecord, OutboxRecord};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::effects::{apply_effects, cancel_approval, cancel_tasks};
use crate::machines::Machines;
use crate::unit::{Unit, instance_env, log, machine_of, queue_event, record_history, snapshot};
use crate::{Actor, Error};

/// Applies one event to `inst` (which must be running) and writes everything it implies.
/// The event names its actor; `by` adds the token and on-behalf-of claim history keeps
/// beside it (`Actor::default()` for the engine's own events).
pub fn apply_event(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &mut InstanceRecord,
    event: &Event,
    by: &Actor,
    key: Option<(String, String)>,
    now: DateTime<Utc>,
) -> Result<HistoryRecord, Error> {
    let machine = machine_of(tx, machines, inst)?;
    let env = Env {
        now,
        instance: instance_env(inst),
        records: json!({}),
        limits: machines.limits,
    };
    let before = snapshot(inst);
    let outcome = cairn_core::guarded(|| cairn_core::step(&machine, &before, event, &env))
        .map_err(Error::Refused)?;
    let exited = outcome.microsteps.iter().any(|m| !m.exited.is_empty());
    let history = HistoryRecord {
        namespace: inst.namespace.clone(),
        instance_id: inst.id.clone(),
        seq: inst.history_seq + 1,
        kind: HistoryKind::Event,
        version: inst.version + 1,
        event: event.name.clone(),
        payload: event.payload.clone(),
        actor: event.actor.clone(),
        reason: event.reason.clone(),
        token_id: by.token.clone(),
        on_behalf_of: by.on_behalf_of.clone(),
        addressed_to: event.to.clone(),
        from_configuration: before.configuration,
        to_configuration: outcome.snapshot.configuration.clone(),
        context: outcome.snapshot.context.clone(),
        status: outcome.snapshot.status,
        idempotency_key: key.as_ref().map(|(k, _)| k.clone()),
        microsteps: serde_json::to_value(&outcome.microsteps).unwrap_or_default(),
        effects: serde_json::to_value(&outcome.effects).unwrap_or_default(),
        time_in_states_ms: exited.then(|| (now - inst.updated_at).num_milliseconds()),
        created_at: now,
    };
    let previous = inst.version;
    inst.version += 1;
    inst.history_seq += 1;
    track_dwell(
        tx,
        inst,
        &history.from_configuration,
        &history.to_configuration,
        now,
    )?;
    inst.configuration = outcome.snapshot.configuration;
    inst.context = outcome.snapshot.context;
    inst.status = outcome.snapshot.status;
    inst.updated_at = now;
    tx.update_instance(inst, previous)?;
    tx.append_history(&history)?;
    if let Some((key, fingerprint)) = key {
        tx.insert_idempotency(&IdempotencyRecord {
            namespace: inst.namespace.clone(),
            instance_id: inst.id.clone(),
            key,
            fingerprint,
            version: inst.version,
            created_at: now,
        })?;
    }
    log(
        tx,
        inst,
        "transition",
        json!({"event": history.event, "from": history.from_configuration, "to": history.to_configuration, "status": history.status}),
        now,
    )?;
    apply_effects(tx, machines, inst, &outcome.effects, now)?;
    crate::triggers::fire(
        tx,
        machines,
        inst,
        &outcome.microsteps,
        None,
        || json!({"name": event.name, "payload": event.payload, "actor": event.actor, "reason": event.reason}),
        now,
    )?;
    tx.applied();
    if inst.status.is_finished() {
        // Only what the machine can have needs cancelling; an instance that takes events
        // is running, so its inbox is empty.
        finish_with(tx, machines, inst, machine.declares, false, true, now)?;
    }
    Ok(history)
}

/// Moves the instance's entry times from the configuration `from` to `to` and adds the
/// time spent in each state it left to the figures (`dwell_ms`, `dwell_visits`), in the
/// unit that makes the move: `stats` reads them instead of replaying history.
fn track_dwell(
    tx: &mut Unit<'_>,
    inst: &mut InstanceRecord,
    from: &[String],
    to: &[String],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for (leaf, ms) in cairn_store::dwell(&mut inst.entered, from, to, now) {
        for (kind, value) in [("dwell_ms", ms), ("dwell_visits", 1)] {
            tx.add_figure(&cairn_store::Figure {
                namespace: inst.namespace.clone(),
                kind: kind.into(),
                name: inst.machine.clone(),
                detail: leaf.clone(),
                value,
            })?;
        }
    }
    Ok(())
}

/// The instance could not take an event the engine delivered: it fails, with the reason
/// in `last_error`, so an operator sees it and can repair it (fork from a good version).
pub fn fail_instance(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &mut InstanceRecord,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    inst.status = cairn_core::Status::Failed;
    inst.last_error = Some(error.to_string());
    record_history(
        tx,
        inst,
        HistoryKind::Fail,
        &Actor::default(),
        error,
        json!({"error": error}),
        now,
    )?;
    log(
        tx,
        inst,
        "fail",
        json!({"status": inst.status, "error": error}),
        now,
    )?;
    finish_instance(tx, machines, inst, now)
}
/// An instance that ended (completed, failed, cancelled) keeps no timer, pending approval,
/// open task or queued event.
///
/// Its children still running are cancelled, and a child tells its parent (`child.done`
/// or `child.failed`, through the outbox).
pub fn finish_instance(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    finish_with(tx, machines, inst, ALL, true, true, now)
}

/// [`finish_instance`] for a child its parent cancelled: it does not report back.
pub fn finish_quietly(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    finish_with(tx, machines, inst, ALL, true, false, now)
}

const ALL: cairn_core::machine::Declares = cairn_core::machine::Declares {
    timers: true,
    tasks: true,
    approvals: true,
    spawns: true,
};

/// [`finish_instance`], skipping what cannot exist: resources the machine never declares,
/// and the inbox when the instance was not paused.
#[allow(clippy::too_many_arguments)]
pub fn finish_with(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    declares: cairn_core::machine::Declares,
    inbox: bool,
    notify_parent: bool,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    if declares.spawns {
        tx.family().end_children(tx, machines, inst, None, now)?;
    }
    if notify_parent && inst.parent.is_some() {
        tell_parent(tx, inst, now)?;
    }
    crate::triggers::fire_status(tx, machines, inst, now)?;
    if declares.timers {
        tx.delete_timers(&inst.namespace, &inst.id)?;
    }
    if declares.tasks {
        cancel_tasks(tx, inst, None, now)?;
    }
    if declares.approvals {
        for mut a in tx.pending_approvals(&inst.namespace, &inst.id)? {
            cancel_approval(tx, inst, &mut a, now)?;
        }
    }
    if inbox {
        let dropped = tx.take_inbox(&inst.namespace, &inst.id)?;
        if !dropped.is_empty() {
            let events: Vec<&str> = dropped.iter().map(|e| e.event.as_str()).collect();
            log(
                tx,
                inst,
                "inbox_dropped",
                json!({"events": events, "status": inst.status}),
                now,
            )?;
        }
    }
    Ok(())
}

/// A finished child tells its parent, through the outbox.
fn tell_parent(tx: &mut Unit<'_>, child: &InstanceRecord, now: DateTime<Utc>) -> Result<(), Error> {
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

/// Delivers a system event (`task.done`, `task.failed`) to an instance: applied if it
/// runs, queued if paused; if its machine refuses it, the instance fails with
/// `last_error` set, so it never silently sticks.
pub(crate) fn deliver_system(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &mut InstanceRecord,
    event: Event,
    by: &Actor,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    if inst.status.is_finished() {
        return Ok(());
    }
    if inst.status == Status::Paused {
        queue_event(tx, inst, &event, by, None, now)?;
        return Ok(());
    }
    match apply_event(tx, machines, inst, &event, by, None, now) {
        Ok(_) => Ok(()),
        Err(Error::Refused(r)) => fail_instance(
            tx,
            machines,
            inst,
            &format!("`{}` could not be applied: {r}", event.name),
            now,
        ),
        Err(e) => Err(e),
    }
}
