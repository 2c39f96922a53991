//! [`Engine`]: the engine over any [`Store`], its unit of work, and the instances it
//! runs. [`Engine::write`] runs a closure as one unit (`unit::Unit`) in the store's
//! transaction and, once it has committed, acts on what the unit did: counters, waking
//! claims, delivering the outbox. Starting an instance, sending it events and reading it
//! back are here; the other operations are in files by what they act on
//! (`definitions.rs`, `tasks.rs`, `lifecycle/`, ...), each an `impl Engine` block.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_core::{Event, Status, is_reserved_event};
use cairn_store::{HistoryRecord, InstanceFilter, InstanceRecord, Page, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::family::Tree;
use crate::ids::{check_id, check_namespace, fingerprint};
use crate::machines::Machines;
use crate::ready::TasksReady;
use crate::unit::{self, Unit, UnitError, snapshot};
use crate::{Actor, Clock, Error, outbox};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The largest event payload or start input, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// The built-in executors' policy (allowlist, secrets) and limits.
    pub executors: crate::Executors,
    /// Other processes write to the same store (several nodes on PostgreSQL): what this
    /// engine caches of records that change (triggers) is reloaded at least every second.
    pub shared_store: bool,
    /// Bounds on definitions, expressions, evaluations and contexts (`cairn_core::limits`):
    /// checked when a definition or trigger is applied and at every step, never when
    /// something stored is read back or replayed.
    pub limits: cairn_core::Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_payload_bytes: 1024 * 1024,
            executors: crate::Executors::default(),
            shared_store: false,
            limits: cairn_core::Limits::default(),
        }
    }
}

/// Starting an instance.
#[derive(Clone, Debug, Default)]
pub struct StartRequest {
    /// The machine to start (its latest version).
    pub machine: String,
    /// A specific version; the latest when `None`.
    pub version: Option<u32>,
    /// The caller's id; generated when `None`.
    pub id: Option<String>,
    /// The start input, checked against the machine's `input_schema`.
    pub input: Value,
    /// Labels to filter instances by.
    pub labels: BTreeMap<String, String>,
    /// Who starts it.
    pub actor: Actor,
}

/// Sending an event.
#[derive(Clone, Debug, Default)]
pub struct SendRequest {
    /// The event's name.
    pub event: String,
    /// Its payload (an object).
    pub payload: Value,
    /// An idempotency key, scoped to the instance: a repeat answers with the first result.
    pub key: Option<String>,
    /// Refuse the event unless the instance is at this version.
    pub expected_version: Option<u64>,
    /// Who sends it.
    pub actor: Actor,
    /// Why, for the audit trail.
    pub reason: String,
}

/// The result of a send: the transition recorded (the first one, for a repeated key), or
/// none when the instance is paused and the event was queued.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sent {
    /// The instance after the event.
    pub instance: InstanceRecord,
    /// The history record written (the first one, for a repeated key); none when the event was queued.
    pub transition: Option<HistoryRecord>,
    /// True when the idempotency key had been used: nothing new was applied.
    pub replayed: bool,
    /// True when the instance is paused: the event waits in order for `resume`.
    pub queued: bool,
}

impl Sent {
    /// The result of a send as the API gives it.
    pub fn to_api(&self) -> cairn_api::Sent {
        cairn_api::Sent {
            instance: crate::wire::instance(&self.instance),
            transition: self.transition.as_ref().map(crate::wire::transition),
            replayed: self.replayed,
            queued: self.queued,
        }
    }
}

/// The engine over a store.
pub struct Engine<S: Store> {
    store: S,
    clock: Arc<dyn Clock>,
    config: Config,
    machines: Arc<Machines>,
    tasks_ready: Arc<TasksReady>,
    counters: Arc<crate::Counters>,
    /// When (ms since the epoch, engine clock) a claim last looked for expired leases.
    reclaimed_at: Arc<std::sync::atomic::AtomicI64>,
}

impl<S: Store> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            store: self.store.clone(),
            clock: Arc::clone(&self.clock),
            config: self.config.clone(),
            machines: Arc::clone(&self.machines),
            tasks_ready: Arc::clone(&self.tasks_ready),
            counters: Arc::clone(&self.counters),
            reclaimed_at: Arc::clone(&self.reclaimed_at),
        }
    }
}

impl<S: Store> Engine<S> {
    /// An engine on `store`, timed by `clock`.
    pub fn new(store: S, clock: Arc<dyn Clock>, config: Config) -> Engine<S> {
        Engine {
            store,
            clock,
            machines: Arc::new(Machines::new(
                config
                    .shared_store
                    .then_some(std::time::Duration::from_secs(1)),
                config.limits,
            )),
            tasks_ready: Arc::new(TasksReady::default()),
            counters: Arc::default(),
            reclaimed_at: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            config,
        }
    }

    /// What this engine (and its clones) applied, refused and committed, for metrics.
    pub fn counters(&self) -> &crate::Counters {
        &self.counters
    }

    /// Signalled when tasks are enqueued: a claim that found nothing waits on it.
    pub fn tasks_ready(&self) -> &Arc<TasksReady> {
        &self.tasks_ready
    }

    /// The store it writes through.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs a unit of work whose errors are engine errors; a failed unit rolls back. Once
    /// it has committed, what it wrote for other instances is delivered.
    pub(crate) fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Unit<'_>) -> Result<T, Error> + Send + 'static,
    {
        self.write_unit(f, true)
    }

    /// [`Engine::write`]; `deliver` false for the outbox drain's own units (the drain
    /// loops until the outbox is empty, so they need not start another).
    pub(crate) fn write_unit<T, E, F>(&self, f: F, deliver: bool) -> Result<T, E>
    where
        T: Send + 'static,
        E: UnitError,
        F: FnOnce(&mut Unit<'_>) -> Result<T, E> + Send + 'static,
    {
        let submitted = std::time::Instant::now();
        let r = self.store.write(move |tx| {
            let mut unit = Unit::new(tx, &Tree);
            // A panic in a unit fails that unit alone (the store rolls back its savepoint);
            // the thread, and every other unit of its batch, go on.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut unit)))
                .unwrap_or_else(|_| {
                    Err(E::from(Error::Refused(cairn_core::Rejection::Internal(
                        "a unit of work panicked".into(),
                    ))))
                });
            result.map(|t| (t, unit.done()))
        });
        match r {
            Ok((t, done)) => {
                // Counted once committed: a unit that rolled back applied nothing.
                self.counters.committed(submitted.elapsed(), done.applied);
                self.counters.attempts_ended(done.attempts_ended);
                if !done.enqueued_on.is_empty() {
                    self.tasks_ready.signal_queues(&done.enqueued_on);
                }
                // What the unit wrote for other instances is delivered now, by the caller
                // (once: deliveries that write more are drained by the same loop). A crash
                // before this leaves the entries for the next drain.
                if done.outbox > 0 && deliver {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.drain_outbox()
                    }));
                }
                Ok(t)
            }
            Err(e) => {
                if e.refused() {
                    self.counters.refused();
                }
                Err(e)
            }
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Whether a claim at `now` looks for expired leases too: at most once per 100 ms
    /// (the shortest lease) in this process, so that claims under load do not each pay
    /// for the query. (The timer service reclaims on its own as well.)
    pub(crate) fn reclaim_due(&self, now: DateTime<Utc>) -> bool {
        use std::sync::atomic::Ordering;
        let ms = now.timestamp_millis();
        let last = self.reclaimed_at.load(Ordering::Relaxed);
        if last != i64::MIN && ms >= last && ms - last < 100 {
            return false;
        }
        self.reclaimed_at
            .compare_exchange(last, ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    pub(crate) fn machine_cache(&self) -> Arc<Machines> {
        Arc::clone(&self.machines)
    }

    /// The compiled machines and triggers.
    pub(crate) fn compiled(&self) -> &Machines {
        &self.machines
    }

    pub(crate) fn check_size(&self, what: &'static str, v: &Value) -> Result<(), Error> {
        let max = self.config.max_payload_bytes;
        let size = cairn_core::limits::json_size(v, max);
        if size > max {
            return Err(Error::TooLarge {
                what,
                size,
                limit: max,
            });
        }
        let depth = self.config.limits.json_depth;
        if cairn_core::limits::json_depth(v, depth) > depth {
            return Err(Error::Invalid(format!(
                "{what} nests deeper than {depth} levels (setting `limits.json_depth`)"
            )));
        }
        Ok(())
    }

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
            let r = self.write_unit(move |tx| outbox::deliver_oldest(tx, &m, now), false);
            match r {
                Ok(Some(_)) => total += 1,
                Ok(None) => return Ok(total),
                Err(outbox::Delivery::Unit(e)) => return Err(e),
                Err(outbox::Delivery::Failed(e, other)) => {
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

    /// Starts an instance; its first history record (version 1) holds the input.
    pub fn start(&self, ns: &str, req: StartRequest) -> Result<InstanceRecord, Error> {
        check_namespace(ns)?;
        self.check_size("the start input", &req.input)?;
        let id = match req.id {
            Some(id) => {
                check_id(&id)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        for (k, v) in &req.labels {
            if k.is_empty() || k.len() > 100 || v.len() > 500 || k.contains(['=', ',']) {
                return Err(Error::Invalid(format!(
                    "label `{k}={v}`: keys are 1-100 characters without `=` or `,`, values at most 500"
                )));
            }
        }
        let (record, machine) = self.machine(ns, &req.machine, req.version)?;
        let now = self.now();
        let prepared = crate::start::prepare(
            crate::start::Start {
                namespace: ns,
                id: &id,
                machine: (&record.name, record.version, &machine),
                input: &req.input,
                labels: req.labels,
                parent: None,
                actor: &req.actor,
            },
            self.config().limits,
            now,
        )
        .map_err(|r| match r {
            cairn_core::Rejection::Input(m) => Error::Invalid(format!("invalid start input: {m}")),
            other => Error::Refused(other),
        })?;
        let machines = self.machine_cache();
        self.write(move |tx| crate::start::write(tx, &machines, prepared, now))
    }

    /// Applies one event to an instance, durably, and returns the recorded transition.
    pub fn send(&self, ns: &str, id: &str, req: SendRequest) -> Result<Sent, Error> {
        if req.event.is_empty() {
            return Err(Error::Invalid("the event name must not be empty".into()));
        }
        if is_reserved_event(&req.event) {
            return Err(Error::Reserved(req.event));
        }
        self.deliver(ns, id, req)
    }

    /// Applies an event without the reserved-name check: for events the engine itself
    /// delivers (approvals, tasks, timers, children). A paused instance keeps the event in
    /// its inbox, in order, and applies it on resume.
    pub fn deliver(&self, ns: &str, id: &str, req: SendRequest) -> Result<Sent, Error> {
        let payload = if req.payload.is_null() {
            json!({})
        } else {
            req.payload.clone()
        };
        self.check_size("the event payload", &payload)?;
        if let Some(k) = &req.key
            && (k.is_empty() || k.len() > 200)
        {
            return Err(Error::Invalid(
                "an idempotency key is 1-200 characters".into(),
            ));
        }
        let keyed = req.key.as_ref().map(|_| fingerprint(&req.event, &payload));
        let by = Actor {
            name: String::new(),
            ..req.actor
        };
        let event = Event {
            name: req.event,
            payload,
            actor: req.actor.name,
            reason: req.reason,
            to: None,
        };
        let machines = self.machine_cache();
        let now = self.now();
        let (ns_in, id_in) = (ns, id);
        let (ns, id) = (ns.to_string(), id.to_string());
        let key = req.key;
        let expected = req.expected_version;
        enum Done {
            Applied(Box<(InstanceRecord, HistoryRecord)>),
            Replayed(u64),
            Queued(Box<InstanceRecord>),
        }
        let done = self.write(move |tx| {
            let mut inst = unit::load_instance(tx, &ns, &id)?;
            if let (Some(key), Some(fp)) = (&key, &keyed) {
                if let Some(first) = tx.idempotency(&ns, &id, key)? {
                    if &first.fingerprint != fp {
                        return Err(Error::KeyReused {
                            key: key.clone(),
                            version: first.version,
                        });
                    }
                    return Ok(Done::Replayed(first.version));
                }
                // Only a paused instance has queued events: resume drains the inbox.
                if inst.status == Status::Paused
                    && let Some(queued) = tx.inbox_key(&ns, &id, key)?
                {
                    let same = fingerprint(&queued.event, &queued.payload) == *fp;
                    if !same {
                        return Err(Error::KeyReused {
                            key: key.clone(),
                            version: inst.version,
                        });
                    }
                    return Ok(Done::Queued(Box::new(inst)));
                }
            }
            if let Some(expected) = expected
                && expected != inst.version
            {
                return Err(Error::VersionMismatch {
                    id: id.clone(),
                    expected,
                    current: inst.version,
                });
            }
            if inst.status.is_finished() {
                return Err(Error::Finished {
                    id: id.clone(),
                    status: inst.status,
                });
            }
            if inst.status == Status::Paused {
                unit::queue_event(tx, &inst, &event, &by, key.clone(), now)?;
                return Ok(Done::Queued(Box::new(inst)));
            }
            let key = key.zip(keyed);
            let history =
                crate::apply::apply_event(tx, &machines, &mut inst, &event, &by, key, now)?;
            Ok(Done::Applied(Box::new((inst, history))))
        })?;
        match done {
            Done::Applied(b) => {
                let (instance, transition) = *b;
                Ok(Sent {
                    instance,
                    transition: Some(transition),
                    replayed: false,
                    queued: false,
                })
            }
            Done::Queued(instance) => Ok(Sent {
                instance: *instance,
                transition: None,
                replayed: false,
                queued: true,
            }),
            Done::Replayed(version) => self.replayed(ns_in, id_in, version),
        }
    }

    fn replayed(&self, ns: &str, id: &str, version: u64) -> Result<Sent, Error> {
        let instance = self.get(ns, id)?;
        let transition = self
            .store()
            .transition(ns, id, version)?
            .ok_or_else(|| Error::NotFound(format!("history version {version} of `{id}`")))?;
        Ok(Sent {
            instance,
            transition: Some(transition),
            replayed: true,
            queued: false,
        })
    }

    /// One instance.
    pub fn get(&self, ns: &str, id: &str) -> Result<InstanceRecord, Error> {
        self.store()
            .instance(ns, id)?
            .ok_or_else(|| Error::no_instance(ns, id))
    }

    /// A page of instances that match `filter`.
    pub fn list(&self, filter: &InstanceFilter) -> Result<Page<InstanceRecord>, Error> {
        if let Some(a) = &filter.after
            && a.parse::<u64>().is_err()
        {
            return Err(Error::Invalid(format!(
                "cursor `{a}` is not one this server gives (a page's `next`)"
            )));
        }
        Ok(self.store().instances(filter)?)
    }

    /// The whole history of an instance, oldest first.
    pub fn history(&self, ns: &str, id: &str) -> Result<Vec<HistoryRecord>, Error> {
        self.get(ns, id)?;
        let mut out = Vec::new();
        loop {
            let after = out.last().map_or(0, |h: &HistoryRecord| h.seq);
            let page = self.store().history(ns, id, after, 1000)?;
            let done = page.len() < 1000;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// The newest `limit` history records (all when `None`) with a `seq` below `before`
    /// (any when `None`), oldest first: `history --tail N`, and paging back from the end.
    pub fn history_tail(
        &self,
        ns: &str,
        id: &str,
        before: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<HistoryRecord>, Error> {
        if before.is_none() && limit.is_none() {
            return self.history(ns, id);
        }
        self.get(ns, id)?;
        Ok(self.store().history_before(
            ns,
            id,
            before.unwrap_or(u64::MAX),
            limit.unwrap_or(usize::MAX >> 1),
        )?)
    }

    /// The events the instance accepts now.
    pub fn accepts(&self, ns: &str, id: &str) -> Result<Vec<String>, Error> {
        let inst = self.get(ns, id)?;
        let (_, machine) = self.machine(ns, &inst.machine, Some(inst.machine_version))?;
        Ok(cairn_core::accepts(&machine, &snapshot(&inst)))
    }

    /// Every instance, optionally of one namespace, with `verify`.
    pub fn instance_ids(&self, ns: Option<&str>) -> Result<Vec<(String, String)>, Error> {
        Ok(self.store().instance_ids(ns)?)
    }
}
