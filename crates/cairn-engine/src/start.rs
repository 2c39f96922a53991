//! Starting an instance, one way for all: [`Engine::start`](crate::Engine::start), a
//! child's spawn, a map's items, and the starts triggers and schedules leave in the
//! outbox. [`prepare`] runs the machine's first step (pure, so `Engine::start` runs it
//! before its unit, off the writer); [`write`] records it inside a unit: the row, the
//! start record, the `started` log entry, then the effects, triggers and, for a machine
//! that finishes at once, its end.

use std::collections::BTreeMap;

use cairn_core::{Env, Machine, Rejection, Status};
use cairn_store::{HistoryKind, HistoryRecord, InstanceRecord};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::machines::Machines;
use crate::unit::{self, Unit};
use crate::{Actor, Error};

/// What an instance starts from.
pub(crate) struct Start<'a> {
    pub namespace: &'a str,
    pub id: &'a str,
    /// The machine's name and version, and the machine compiled.
    pub machine: (&'a str, u32, &'a Machine),
    pub input: &'a Value,
    pub labels: BTreeMap<String, String>,
    pub parent: Option<&'a str>,
    pub actor: &'a Actor,
}

/// A start whose first step has run, ready to be written.
pub(crate) struct Prepared {
    pub inst: InstanceRecord,
    history: HistoryRecord,
    outcome: cairn_core::Outcome,
}

/// Runs the machine's first step on `s.input`; nothing is written.
pub(crate) fn prepare(
    s: Start<'_>,
    limits: cairn_core::Limits,
    now: DateTime<Utc>,
) -> Result<Prepared, Rejection> {
    let (name, version, machine) = s.machine;
    let mut inst = InstanceRecord {
        namespace: s.namespace.to_string(),
        id: s.id.to_string(),
        machine: name.to_string(),
        machine_version: version,
        status: Status::Running,
        configuration: Vec::new(),
        context: Value::Null,
        version: 1,
        history_seq: 1,
        labels: s.labels,
        parent: s.parent.map(str::to_string),
        last_error: None,
        created_at: now,
        updated_at: now,
        entered: Default::default(),
    };
    let env = Env {
        now,
        instance: unit::instance_env(&inst),
        records: json!({}),
        limits,
    };
    let outcome = cairn_core::guarded(|| cairn_core::start(machine, s.input, &env))?;
    inst.configuration = outcome.snapshot.configuration.clone();
    inst.context = outcome.snapshot.context.clone();
    inst.status = outcome.snapshot.status;
    cairn_store::dwell(&mut inst.entered, &[], &inst.configuration, now);
    let history = HistoryRecord {
        namespace: inst.namespace.clone(),
        instance_id: inst.id.clone(),
        seq: 1,
        kind: HistoryKind::Start,
        version: 1,
        event: String::new(),
        payload: if s.input.is_null() {
            json!({})
        } else {
            s.input.clone()
        },
        actor: s.actor.name.clone(),
        reason: String::new(),
        token_id: s.actor.token.clone(),
        on_behalf_of: s.actor.on_behalf_of.clone(),
        addressed_to: None,
        from_configuration: Vec::new(),
        to_configuration: inst.configuration.clone(),
        context: inst.context.clone(),
        status: inst.status,
        idempotency_key: None,
        microsteps: serde_json::to_value(&outcome.microsteps).unwrap_or_default(),
        effects: serde_json::to_value(&outcome.effects).unwrap_or_default(),
        time_in_states_ms: None,
        created_at: now,
    };
    Ok(Prepared {
        inst,
        history,
        outcome,
    })
}

/// Writes a prepared start in the unit. Refused with [`Error::Exists`] when an instance
/// of that id exists already.
pub(crate) fn write(
    tx: &mut Unit<'_>,
    machines: &Machines,
    p: Prepared,
    now: DateTime<Utc>,
) -> Result<InstanceRecord, Error> {
    let Prepared {
        inst,
        history,
        outcome,
    } = p;
    if tx.instance(&inst.namespace, &inst.id)?.is_some() {
        return Err(Error::Exists(inst.id.clone()));
    }
    tx.insert_instance(&inst)?;
    tx.append_history(&history)?;
    tx.applied();
    let mut data = json!({"machine": inst.machine, "configuration": inst.configuration, "status": inst.status});
    if let Some(parent) = &inst.parent {
        data["parent"] = json!(parent);
    }
    unit::log(tx, &inst, "started", data, now)?;
    crate::effects::apply_effects(tx, machines, &inst, &outcome.effects, now)?;
    crate::triggers::fire(
        tx,
        machines,
        &inst,
        &outcome.microsteps,
        (inst.status == Status::Running).then_some(Status::Running),
        || unit::start_event(&history.payload),
        now,
    )?;
    if inst.status.is_finished() {
        crate::apply::finish_instance(tx, machines, &inst, now)?;
    }
    Ok(inst)
}

/// Starts an instance of the latest version of `machine` inside the current unit (a
/// child, a map's item, or a start a trigger or schedule left in the outbox). `refuse`
/// turns a problem with the request (no such machine, a bad id, an id in use, input the
/// machine refuses) into the caller's error.
#[allow(clippy::too_many_arguments)]
pub(crate) fn in_unit(
    tx: &mut Unit<'_>,
    machines: &Machines,
    ns: &str,
    machine: &str,
    id: &str,
    input: &Value,
    parent: Option<&InstanceRecord>,
    actor: &str,
    now: DateTime<Utc>,
    refuse: &dyn Fn(String) -> Error,
) -> Result<InstanceRecord, Error> {
    let record = tx
        .machine(ns, machine, None)?
        .ok_or_else(|| refuse(format!("no machine `{machine}` in namespace `{ns}`")))?;
    let compiled = machines.load(&record)?;
    crate::ids::check_id(id).map_err(|e| refuse(e.to_string()))?;
    let actor = Actor::from(actor.to_string());
    let prepared = prepare(
        Start {
            namespace: ns,
            id,
            machine: (&record.name, record.version, &compiled),
            input,
            labels: BTreeMap::new(),
            parent: parent.map(|p| p.id.as_str()),
            actor: &actor,
        },
        machines.limits,
        now,
    )
    .map_err(|r| refuse(r.to_string()))?;
    write(tx, machines, prepared, now).map_err(|e| match e {
        Error::Exists(_) => refuse(format!("instance `{id}` already exists")),
        e => e,
    })
}
