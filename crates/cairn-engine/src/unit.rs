//! What happens inside one unit of work: applying an event to an instance (step, row,
//! history, key, log) and carrying its effects into the same transaction (timers,
//! approvals). Every operation of the engine that changes an instance goes through here,
//! so an event applied by a client, a timer, an approval or a resume is recorded alike.

use std::sync::Arc;

use cairn_core::{Effect, Env, Event, Machine, Snapshot, Status};
use cairn_store::{
    ApprovalRecord, ApprovalStatus, HistoryKind, HistoryRecord, IdempotencyRecord, InstanceRecord,
    NewLogEntry, TaskRecord, TaskStatus, TimerRecord, Tx,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::engine::Machines;
use crate::{Actor, Error};

/// The `instance` variable CEL sees: what does not change over the instance's life, so
/// that replaying history sees it exactly as the step did.
pub fn instance_env(i: &InstanceRecord) -> Value {
    json!({
        "id": i.id,
        "namespace": i.namespace,
        "machine": i.machine,
        "machine_version": i.machine_version,
        "labels": i.labels,
        "parent": i.parent,
    })
}

pub fn snapshot(i: &InstanceRecord) -> Snapshot {
    Snapshot {
        configuration: i.configuration.clone(),
        context: i.context.clone(),
        status: i.status,
    }
}

/// The compiled machine of an instance, from the cache or (first use) the store.
pub fn machine_of(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
) -> Result<Arc<Machine>, Error> {
    if let Some(m) = machines.get(&(
        inst.namespace.clone(),
        inst.machine.clone(),
        inst.machine_version,
    )) {
        return Ok(m);
    }
    let record = tx
        .machine(&inst.namespace, &inst.machine, Some(inst.machine_version))?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "machine `{}` version {} is missing",
                inst.machine, inst.machine_version
            ))
        })?;
    machines.load(&record)
}

pub fn log(
    tx: &mut Unit<'_>,
    inst: &InstanceRecord,
    kind: &str,
    data: Value,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    tx.append_log(&NewLogEntry {
        namespace: inst.namespace.clone(),
        instance_id: inst.id.clone(),
        kind: kind.into(),
        version: inst.version,
        data,
        created_at: now,
    })?;
    Ok(())
}

/// Appends a non-transition history record (pause, resume, cancel, fail, attempt) and
/// saves the instance.
pub fn record_history(
    tx: &mut Unit<'_>,
    inst: &mut InstanceRecord,
    kind: HistoryKind,
    actor: &Actor,
    reason: &str,
    payload: Value,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    inst.history_seq += 1;
    inst.updated_at = now;
    let h = HistoryRecord {
        namespace: inst.namespace.clone(),
        instance_id: inst.id.clone(),
        seq: inst.history_seq,
        kind,
        version: inst.version,
        event: String::new(),
        payload,
        actor: actor.name.clone(),
        reason: reason.to_string(),
        token_id: actor.token.clone(),
        on_behalf_of: actor.on_behalf_of.clone(),
        from_configuration: inst.configuration.clone(),
        to_configuration: inst.configuration.clone(),
        context: inst.context.clone(),
        status: inst.status,
        idempotency_key: None,
        microsteps: json!([]),
        effects: json!([]),
        time_in_states_ms: None,
        created_at: now,
    };
    tx.update_instance(inst, inst.version)?;
    tx.append_history(&h).map_err(Error::from)
}

/// Appends a lifecycle record (pause, resume, cancel) and saves the instance.
pub fn record_lifecycle(
    tx: &mut Unit<'_>,
    inst: &mut InstanceRecord,
    kind: HistoryKind,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    record_history(tx, inst, kind, actor, reason, json!({}), now)?;
    log(
        tx,
        inst,
        kind.as_str(),
        with_actor(json!({"status": inst.status, "reason": reason}), actor),
        now,
    )
}

/// `data` (an object) with the actor, and the token and on-behalf-of claim beside it when
/// there are any: what log entries say of who made a change.
pub fn with_actor(mut data: Value, actor: &Actor) -> Value {
    if let Value::Object(m) = &mut data {
        m.insert("actor".into(), json!(actor.name));
        if let Some(t) = &actor.token {
            m.insert("token".into(), json!(t));
        }
        if let Some(o) = &actor.on_behalf_of {
            m.insert("on_behalf_of".into(), json!(o));
        }
    }
    data
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

/// One unit of work of the engine: the store's transaction, and what the unit did that
/// its caller acts on once it has committed (counters, waking claims, delivering the
/// outbox). Everything that runs inside one transaction takes it; it derefs to the
/// store's [`Tx`].
pub(crate) struct Unit<'t> {
    tx: &'t mut dyn Tx,
    /// Starts and events applied.
    applied: u64,
    /// The queues tasks were enqueued on: claims waiting on them wake on commit.
    enqueued_on: Vec<String>,
    /// Outbox entries written: delivered after commit.
    outbox: u64,
    /// (namespace, queue, outcome) of the task attempts the unit ended.
    attempts_ended: Vec<(String, String, String)>,
    /// The hops of the outbox entry this unit delivers: what it sets off (a trigger's or
    /// an instance's send) counts one more, so loops stop at [`crate::MAX_TRIGGER_HOPS`].
    hops: u32,
}

/// What a committed unit leaves its caller to do.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub applied: u64,
    pub enqueued_on: Vec<String>,
    pub outbox: u64,
    pub attempts_ended: Vec<(String, String, String)>,
}

impl<'t> Unit<'t> {
    pub(crate) fn new(tx: &'t mut dyn Tx) -> Unit<'t> {
        Unit {
            tx,
            applied: 0,
            enqueued_on: Vec::new(),
            outbox: 0,
            attempts_ended: Vec::new(),
            hops: 0,
        }
    }

    /// Counts a start or an applied event (for metrics, once committed).
    pub(crate) fn applied(&mut self) {
        self.applied += 1;
    }

    /// Writes a task and remembers its queue, so claims waiting on it wake on commit.
    pub(crate) fn insert_task(&mut self, t: &TaskRecord) -> Result<(), Error> {
        self.tx.insert_task(t)?;
        self.enqueued_on.push(t.queue.clone());
        Ok(())
    }

    /// Writes an entry for another instance, delivered after commit.
    pub(crate) fn push_outbox(&mut self, e: &cairn_store::OutboxRecord) -> Result<(), Error> {
        self.tx.push_outbox(e)?;
        self.outbox += 1;
        Ok(())
    }

    /// Counts a task attempt this unit ended, by namespace, queue and outcome.
    pub(crate) fn attempt_ended(&mut self, ns: &str, queue: &str, outcome: &str) {
        self.attempts_ended
            .push((ns.to_string(), queue.to_string(), outcome.to_string()));
    }

    /// The hops of the entry this unit delivers (0 when it delivers none).
    pub(crate) fn hops(&self) -> u32 {
        self.hops
    }

    /// The hop count of what this unit sets off for another instance.
    pub(crate) fn next_hop(&self) -> u32 {
        self.hops + 1
    }

    /// Runs `f` as the delivery of an entry that travelled `hops` hops.
    pub(crate) fn at_hops<T>(&mut self, hops: u32, f: impl FnOnce(&mut Self) -> T) -> T {
        let was = std::mem::replace(&mut self.hops, hops);
        let r = f(self);
        self.hops = was;
        r
    }

    pub(crate) fn done(self) -> Done {
        Done {
            applied: self.applied,
            enqueued_on: self.enqueued_on,
            outbox: self.outbox,
            attempts_ended: self.attempts_ended,
        }
    }
}

impl<'t> std::ops::Deref for Unit<'t> {
    type Target = dyn Tx + 't;
    fn deref(&self) -> &Self::Target {
        &*self.tx
    }
}

impl<'t> std::ops::DerefMut for Unit<'t> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.tx
    }
}

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

/// Carries a step's effects into the unit: timers, approvals, tasks, children and maps
/// here; sends to other instances through the outbox; emits on the event stream.
pub fn apply_effects(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    effects: &[Effect],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for e in effects {
        match e {
            Effect::SetTimer {
                state,
                event,
                delay_ms,
            } => tx.set_timer(&TimerRecord {
                namespace: inst.namespace.clone(),
                instance_id: inst.id.clone(),
                event: event.clone(),
                state: state.clone(),
                due_at: now + chrono::Duration::milliseconds(*delay_ms as i64),
                created_at: now,
            })?,
            Effect::CancelTimer { event, .. } => {
                tx.delete_timer(&inst.namespace, &inst.id, event)?;
            }
            Effect::RequestApproval {
                state,
                prompt,
                approvers,
                quorum,
            } => {
                let a = ApprovalRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    namespace: inst.namespace.clone(),
                    instance_id: inst.id.clone(),
                    state: state.clone(),
                    prompt: prompt.clone(),
                    approvers: approvers.clone(),
                    quorum: *quorum,
                    status: ApprovalStatus::Pending,
                    decisions: Vec::new(),
                    created_at: now,
                    decided_at: None,
                    decided_by: None,
                    reason: None,
                };
                tx.insert_approval(&a)?;
                log(
                    tx,
                    inst,
                    "approval_requested",
                    json!({"approval": a.id, "state": state, "prompt": prompt}),
                    now,
                )?;
            }
            Effect::CancelApproval { state } => {
                for mut a in tx.pending_approvals(&inst.namespace, &inst.id)? {
                    if &a.state == state {
                        cancel_approval(tx, inst, &mut a, now)?;
                    }
                }
            }
            Effect::EnqueueTask {
                state,
                queue,
                action,
                input,
                timeout_ms,
                heartbeat_ms,
                retry,
            } => {
                let t = TaskRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    namespace: inst.namespace.clone(),
                    instance_id: inst.id.clone(),
                    state: state.clone(),
                    queue: queue.clone(),
                    action: action.clone(),
                    input: input.clone(),
                    status: TaskStatus::Pending,
                    attempt: 0,
                    retry: serde_json::to_value(retry).unwrap_or_default(),
                    timeout_ms: *timeout_ms,
                    heartbeat_ms: *heartbeat_ms,
                    available_at: now,
                    lease_owner: None,
                    lease_expires_at: None,
                    output: None,
                    error: None,
                    created_at: now,
                    updated_at: now,
                };
                tx.insert_task(&t)?;
                log(
                    tx,
                    inst,
                    "task_enqueued",
                    json!({"task": t.id, "queue": queue, "action": action, "state": state}),
                    now,
                )?;
            }
            Effect::CancelTask { state } => cancel_tasks(tx, inst, Some(state), now)?,
            Effect::Spawn {
                state,
                machine,
                id,
                input,
            } => crate::children::spawn(
                tx,
                machines,
                inst,
                state.as_deref(),
                machine,
                id.as_deref(),
                input,
                now,
            )?,
            Effect::CancelSpawn { state } => {
                crate::maps::forget(tx, inst, Some(state))?;
                crate::children::cascade(
                    tx,
                    machines,
                    inst,
                    Some(state),
                    crate::children::Cascade::Cancel,
                    now,
                )?
            }
            Effect::StartMap {
                state,
                machine,
                items,
                concurrency,
                fail_fast,
            } => crate::maps::start(
                tx,
                machines,
                inst,
                state,
                machine,
                items,
                *concurrency,
                *fail_fast,
                now,
            )?,
            // To another instance, after commit, through the outbox; like a trigger's send
            // it counts a hop, so instances that send to each other in a loop stop.
            Effect::Send { to, event, payload } => {
                let hops = tx.next_hop();
                if cairn_core::is_reserved_event(event) {
                    log(
                        tx,
                        inst,
                        "send_refused",
                        json!({"to": to, "event": event, "reason": "reserved: the engine delivers it"}),
                        now,
                    )?;
                    continue;
                }
                if hops > crate::triggers::MAX_HOPS {
                    log(
                        tx,
                        inst,
                        "send_loop_stopped",
                        json!({"to": to, "event": event, "hops": hops}),
                        now,
                    )?;
                    continue;
                }
                tx.push_outbox(&cairn_store::OutboxRecord {
                    seq: 0,
                    kind: "event".into(),
                    hops,
                    namespace: inst.namespace.clone(),
                    instance_id: to.clone(),
                    event: event.clone(),
                    payload: payload.clone(),
                    actor: format!("instance:{}", inst.id),
                    reason: String::new(),
                    source: format!("send:{}", inst.id),
                    created_at: now,
                })?;
            }
            // On the instance's event stream.
            Effect::Emit { event, payload } => log(
                tx,
                inst,
                "emitted",
                json!({"event": event, "payload": payload}),
                now,
            )?,
        }
    }
    Ok(())
}

fn cancel_approval(
    tx: &mut Unit<'_>,
    inst: &InstanceRecord,
    a: &mut ApprovalRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    a.status = ApprovalStatus::Cancelled;
    a.decided_at = Some(now);
    tx.update_approval(a)?;
    log(
        tx,
        inst,
        "approval_cancelled",
        json!({"approval": a.id, "state": a.state}),
        now,
    )
}

/// Cancels the instance's open tasks (of one state, or all).
fn cancel_tasks(
    tx: &mut Unit<'_>,
    inst: &InstanceRecord,
    state: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for mut t in tx.open_tasks(&inst.namespace, &inst.id)? {
        if state.is_some_and(|s| s != t.state) {
            continue;
        }
        if t.status == TaskStatus::Leased {
            tx.put_attempt(&cairn_store::AttemptRecord {
                task_id: t.id.clone(),
                attempt: t.attempt,
                namespace: t.namespace.clone(),
                instance_id: t.instance_id.clone(),
                worker: t.lease_owner.clone().unwrap_or_default(),
                started_at: t.updated_at,
                ended_at: Some(now),
                outcome: Some("cancelled".into()),
                error: None,
                tokens: None,
                cost: None,
            })?;
        }
        t.status = TaskStatus::Cancelled;
        t.lease_owner = None;
        t.lease_expires_at = None;
        t.updated_at = now;
        tx.update_task(&t)?;
        log(
            tx,
            inst,
            "task_cancelled",
            json!({"task": t.id, "state": t.state}),
            now,
        )?;
    }
    Ok(())
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
        crate::maps::forget(tx, inst, None)?;
        crate::children::cascade(
            tx,
            machines,
            inst,
            None,
            crate::children::Cascade::Cancel,
            now,
        )?;
    }
    if notify_parent && inst.parent.is_some() {
        crate::children::notify_parent(tx, inst, now)?;
    }
    crate::triggers::fire(
        tx,
        machines,
        inst,
        &[],
        Some(inst.status),
        || start_event(&Value::Null),
        now,
    )?;
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

/// Keeps an event for a paused instance, in order, until it resumes.
pub fn queue_event(
    tx: &mut Unit<'_>,
    inst: &InstanceRecord,
    event: &Event,
    by: &Actor,
    key: Option<String>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    tx.push_inbox(&cairn_store::InboxRecord {
        namespace: inst.namespace.clone(),
        instance_id: inst.id.clone(),
        seq: 0,
        event: event.name.clone(),
        payload: event.payload.clone(),
        actor: event.actor.clone(),
        reason: event.reason.clone(),
        token_id: by.token.clone(),
        on_behalf_of: by.on_behalf_of.clone(),
        idempotency_key: key,
        created_at: now,
    })?;
    log(tx, inst, "queued", json!({"event": event.name}), now)
}

/// Whether an instance takes events now (not paused, not finished).
pub fn check_running(inst: &InstanceRecord) -> Result<(), Error> {
    if inst.status.is_finished() {
        return Err(Error::Finished {
            id: inst.id.clone(),
            status: inst.status,
        });
    }
    if inst.status == Status::Paused {
        return Err(Error::Paused(inst.id.clone()));
    }
    Ok(())
}

/// The `event` expressions see for a start: no name, the input as payload.
pub fn start_event(input: &Value) -> Value {
    json!({"name": "", "payload": if input.is_null() { json!({}) } else { input.clone() }, "actor": "", "reason": ""})
}
