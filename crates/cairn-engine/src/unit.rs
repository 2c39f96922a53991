//! The unit of work: everything that runs inside one transaction takes a [`Unit`], the
//! store's transaction plus what the caller acts on once it commits. Beside it, the small
//! writes every part of a unit shares (a log entry, a history record of a lifecycle
//! change, an event queued for a paused instance). Applying an event is `apply.rs`'s.

use std::sync::Arc;

use cairn_core::{Effect, Event, Machine, Snapshot, Status};
use cairn_store::{HistoryKind, HistoryRecord, InstanceRecord, NewLogEntry, TaskRecord, Tx};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::machines::Machines;
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
    append_history(tx, inst, kind, actor, reason, payload, now)?;
    tx.update_instance(inst, inst.version)?;
    Ok(())
}

/// [`record_history`] without saving the instance: for a caller that saves it later in
/// the same unit (the record's sequence number lives in the instance row).
pub fn append_history(
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
        addressed_to: None,
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

/// One unit of work of the engine: the store's transaction, and what the unit did that
/// its caller acts on once it has committed (counters, waking claims, delivering the
/// outbox). Everything that runs inside one transaction takes it; it derefs to the
/// store's [`Tx`].
pub(crate) struct Unit<'t> {
    tx: &'t mut dyn Tx,
    /// The children and maps a step starts and ends.
    family: &'t dyn Family,
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
    /// An instance's open tasks as the unit knows them, read under the instance's lock
    /// (an outcome reads them before it writes, so the step's cancel need not read them
    /// again after its writes): taken by the next [`Unit::open_tasks`] of that instance,
    /// forgotten at any task write and at a part's end.
    open_tasks: Option<(String, String, Vec<TaskRecord>)>,
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
    pub(crate) fn new(tx: &'t mut dyn Tx, family: &'t dyn Family) -> Unit<'t> {
        Unit {
            tx,
            family,
            applied: 0,
            enqueued_on: Vec::new(),
            outbox: 0,
            attempts_ended: Vec::new(),
            hops: 0,
            open_tasks: None,
        }
    }

    /// Counts a start or an applied event (for metrics, once committed).
    pub(crate) fn applied(&mut self) {
        self.applied += 1;
    }

    /// Writes a task and remembers its queue, so claims waiting on it wake on commit.
    pub(crate) fn insert_task(&mut self, t: &TaskRecord) -> Result<(), Error> {
        self.open_tasks = None;
        self.tx.insert_task(t)?;
        self.enqueued_on.push(t.queue.clone());
        Ok(())
    }

    /// Updates a task (what the unit knew of open tasks is forgotten).
    pub(crate) fn update_task(&mut self, t: &TaskRecord) -> Result<(), Error> {
        self.open_tasks = None;
        Ok(self.tx.update_task(t)?)
    }

    /// Remembers the instance's open tasks, as the unit's writes so far left them (see
    /// the field).
    pub(crate) fn know_open_tasks(&mut self, ns: &str, id: &str, tasks: Vec<TaskRecord>) {
        self.open_tasks = Some((ns.to_string(), id.to_string(), tasks));
    }

    /// The instance's open tasks: those the unit knows, else read.
    pub(crate) fn open_tasks(&mut self, ns: &str, id: &str) -> Result<Vec<TaskRecord>, Error> {
        match self.open_tasks.take() {
            Some((n, i, tasks)) if n == ns && i == id => Ok(tasks),
            _ => Ok(self.tx.open_tasks(ns, id)?),
        }
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

    /// The instance's family, for a step's effects that start or end children.
    pub(crate) fn family(&self) -> &'t dyn Family {
        self.family
    }

    /// Runs `f` as a part of the unit that fails alone: when it returns an error (or
    /// panics), its writes are undone and so is what it left the caller to do, and the
    /// unit goes on. The outer error is the store's failing to open or close the part,
    /// which fails the unit.
    pub(crate) fn part<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<Result<T, Error>, Error> {
        let marks = (
            self.applied,
            self.enqueued_on.len(),
            self.outbox,
            self.attempts_ended.len(),
            self.hops,
        );
        self.open_tasks = None;
        self.tx.begin_part()?;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))).unwrap_or_else(
            |_| {
                Err(Error::Refused(cairn_core::Rejection::Internal(
                    "a part of a unit of work panicked".into(),
                )))
            },
        );
        self.open_tasks = None;
        match r {
            Ok(v) => {
                self.tx.keep_part()?;
                Ok(Ok(v))
            }
            Err(e) => {
                self.tx.undo_part()?;
                self.applied = marks.0;
                self.enqueued_on.truncate(marks.1);
                self.outbox = marks.2;
                self.attempts_ended.truncate(marks.3);
                self.hops = marks.4;
                Ok(Err(e))
            }
        }
    }

    /// What the caller acts on once the unit has committed.
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

/// What a unit's closure may fail with: the engine's error, or a type of the caller's that
/// carries more with it (the outbox drain's entry); either rolls the unit back.
pub(crate) trait UnitError: From<Error> + From<cairn_store::Error> + Send + 'static {
    /// Whether it is a refused event, counted for metrics.
    fn refused(&self) -> bool;
}

impl UnitError for Error {
    fn refused(&self) -> bool {
        matches!(self, Error::Refused(_))
    }
}

/// What carrying a step asks of the instance's family: the children and map items it
/// starts, and those it ends. Starting a child runs the child's first step, whose effects
/// may start children in turn, so the files that apply a step (`apply.rs`, `effects.rs`)
/// reach the files that start children (`children.rs`, `maps.rs`, `start.rs`) through
/// this seam, not by name: the recursion is real, the import circle is not.
/// `family::Tree` is the implementation; the unit carries it.
pub(crate) trait Family: Sync {
    /// Carries an effect that starts or ends children: `Spawn` (a child of `inst`, in
    /// this unit), `StartMap` (a map state's first items), `CancelSpawn` (leaving the
    /// state that started them). Any other effect is not the family's and does nothing.
    fn carry(
        &self,
        tx: &mut Unit<'_>,
        machines: &Machines,
        inst: &InstanceRecord,
        effect: &Effect,
        now: DateTime<Utc>,
    ) -> Result<(), Error>;

    /// Leaving `state` (or, with `None`, ending): the maps there are forgotten and the
    /// children started there are cancelled, with their descendants.
    fn end_children(
        &self,
        tx: &mut Unit<'_>,
        machines: &Machines,
        inst: &InstanceRecord,
        state: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), Error>;
}

/// The instance, read in the unit, or not found.
pub(crate) fn load_instance(
    tx: &mut Unit<'_>,
    ns: &str,
    id: &str,
) -> Result<InstanceRecord, Error> {
    tx.instance(ns, id)?
        .ok_or_else(|| Error::no_instance(ns, id))
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
        addressed_to: event.to.clone(),
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
