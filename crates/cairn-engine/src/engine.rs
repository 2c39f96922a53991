//! [`Engine`]: machines, instances and events over any [`Store`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use cairn_core::{Env, Event, Format, Machine, Snapshot, Status, is_reserved_event};
use cairn_store::{
    HistoryKind, HistoryRecord, InstanceFilter, InstanceRecord, MachineRecord, NewLogEntry, Page,
    Store,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ready::TasksReady;
use crate::unit::{self, Unit, instance_env, snapshot};
use crate::{Actor, Clock, Error};

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

/// The result of applying a definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The machine's name.
    pub machine: String,
    /// The version applied (or found, when the definition was unchanged).
    pub version: u32,
    /// False when the content equalled the latest version (nothing was written).
    pub created: bool,
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

/// The result of verifying one instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verified {
    /// The instance's namespace.
    pub namespace: String,
    /// The instance's id.
    pub id: String,
    /// How many versions were replayed.
    pub versions: u64,
    /// Replay reproduced every version and the stored instance.
    pub ok: bool,
    /// What differed, when something did.
    pub problem: Option<String>,
}

type MachineKey = (String, String, u32);

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

/// What units compile once and share: machines by namespace, name and version (versions
/// are immutable, so a compiled machine never goes stale) and each namespace's triggers
/// (reloaded after a change).
pub(crate) struct Machines {
    compiled: Mutex<HashMap<MachineKey, Arc<Machine>>>,
    pub(crate) triggers: crate::triggers::Cache,
    /// The engine's limits, for what runs inside units (steps, triggers).
    pub(crate) limits: cairn_core::Limits,
}

impl Machines {
    pub(crate) fn get(&self, key: &MachineKey) -> Option<Arc<Machine>> {
        self.compiled.lock().ok()?.get(key).cloned()
    }

    pub(crate) fn load(&self, record: &MachineRecord) -> Result<Arc<Machine>, Error> {
        let key = (
            record.namespace.clone(),
            record.name.clone(),
            record.version,
        );
        if let Some(m) = self.get(&key) {
            return Ok(m);
        }
        if record.definition.is_null() {
            return Err(Error::Conflict(format!(
                "machine `{}` version {} was stored by an older Cairn and cannot be read back; \
                 `cairn repair` removes it once no instance runs on it",
                record.name, record.version
            )));
        }
        let m = Arc::new(Machine::from_json(&record.definition)?);
        if let Ok(mut map) = self.compiled.lock() {
            map.insert(key, Arc::clone(&m));
        }
        Ok(m)
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
        }
    }
}

/// Identifies an event and payload for an idempotency key.
pub(crate) fn fingerprint(event: &str, payload: &Value) -> String {
    digest(&format!("{event}\u{0}{payload}"))
}

fn digest(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty()
        || id.len() > 200
        || id
            .chars()
            .any(|c| c.is_control() || c == '/' || c.is_whitespace())
    {
        return Err(Error::Invalid(format!(
            "instance id `{id}` must be 1-200 characters without spaces, `/` or control characters"
        )));
    }
    Ok(())
}

pub(crate) fn check_namespace(ns: &str) -> Result<(), Error> {
    if ns.is_empty()
        || ns.len() > 100
        || !ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::Invalid(format!(
            "namespace `{ns}` must be 1-100 characters of letters, digits, `-`, `_` and `.`"
        )));
    }
    Ok(())
}

impl<S: Store> Engine<S> {
    /// An engine on `store`, timed by `clock`.
    pub fn new(store: S, clock: Arc<dyn Clock>, config: Config) -> Engine<S> {
        Engine {
            store,
            clock,
            machines: Arc::new(Machines {
                compiled: Mutex::default(),
                triggers: crate::triggers::Cache::new(
                    config
                        .shared_store
                        .then_some(std::time::Duration::from_secs(1)),
                ),
                limits: config.limits,
            }),
            tasks_ready: Arc::new(TasksReady::default()),
            counters: Arc::default(),
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
            let mut unit = Unit::new(tx);
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

    pub(crate) fn machine_cache(&self) -> Arc<Machines> {
        Arc::clone(&self.machines)
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

    /// Applies a definition: identical content to the latest version is a no-op, changed
    /// content becomes the next version. Instances stay on the version they started on.
    pub fn apply(
        &self,
        ns: &str,
        text: &str,
        format: Option<Format>,
        file: Option<&str>,
    ) -> Result<Applied, Error> {
        self.apply_as(ns, text, format, file, crate::Role::Admin)
    }

    /// [`Engine::apply`] on behalf of `role`: a machine whose tasks run commands
    /// (`task.exec`) needs an admin and commands on the allowlist; every secret its
    /// executors name must be configured.
    pub fn apply_as(
        &self,
        ns: &str,
        text: &str,
        format: Option<Format>,
        file: Option<&str>,
        role: crate::Role,
    ) -> Result<Applied, Error> {
        check_namespace(ns)?;
        let machine = Machine::load_with(text, format, file, &self.config.limits)?;
        self.config.executors.check(&machine, role)?;
        let definition = machine.to_json();
        let canonical = definition.to_string();
        let digest = digest(&canonical);
        let name = machine.name().to_string();
        let ns = ns.to_string();
        let now = self.clock.now();
        self.write(move |tx| {
            let latest = tx.machine(&ns, &name, None)?;
            if let Some(l) = &latest
                && l.digest == digest
            {
                return Ok(Applied {
                    machine: name,
                    version: l.version,
                    created: false,
                });
            }
            // Never a number a deleted version had.
            let version = tx.max_machine_version(&ns, &name)?.map_or(1, |v| v + 1);
            tx.insert_machine(&MachineRecord {
                namespace: ns.clone(),
                name: name.clone(),
                version,
                digest,
                definition,
                created_at: now,
            })?;
            tx.append_log(&NewLogEntry {
                namespace: ns,
                instance_id: String::new(),
                kind: "machine".into(),
                version: version as u64,
                data: json!({"machine": name}),
                created_at: now,
            })?;
            Ok(Applied {
                machine: name,
                version,
                created: true,
            })
        })
    }

    /// The latest version of every machine in the namespace.
    pub fn machines(&self, ns: &str) -> Result<Vec<MachineRecord>, Error> {
        Ok(self.store.machines(ns)?)
    }

    /// Deletes a machine version no instance runs on (in any status): it is no longer
    /// listed or startable, and its number is never given again. Refused (conflict) while
    /// an instance uses it.
    pub fn delete_machine(&self, ns: &str, name: &str, version: u32) -> Result<(), Error> {
        let (ns, name, now) = (ns.to_string(), name.to_string(), self.now());
        self.write(move |tx| {
            if tx.machine(&ns, &name, Some(version))?.is_none() {
                return Err(Error::NotFound(format!(
                    "machine `{name}` has no version {version} in namespace `{ns}`"
                )));
            }
            let users = tx.machine_in_use(&ns, &name, version)?;
            if users > 0 {
                return Err(Error::Conflict(format!(
                    "machine `{name}` version {version} runs {users} instance{}; delete or migrate {} first",
                    if users == 1 { "" } else { "s" },
                    if users == 1 { "it" } else { "them" }
                )));
            }
            tx.delete_machine(&ns, &name, version, now)?;
            tx.append_log(&NewLogEntry {
                namespace: ns,
                instance_id: String::new(),
                kind: "machine_deleted".into(),
                version: version as u64,
                data: json!({"machine": name, "version": version}),
                created_at: now,
            })?;
            Ok(())
        })
    }

    /// Finds stored machine versions that cannot be read back (stored by an older Cairn
    /// before definitions had a depth limit) and, unless `dry_run`, deletes those no
    /// instance runs on. The ones still in use are reported with how many use them.
    pub fn repair(&self, dry_run: bool) -> Result<cairn_api::Repair, Error> {
        let mut report = cairn_api::Repair::default();
        for m in self.store.unreadable_machines()? {
            let users = {
                let (ns, name, v) = (m.namespace.clone(), m.name.clone(), m.version);
                self.write(move |tx| Ok(tx.machine_in_use(&ns, &name, v)?))?
            };
            let entry = cairn_api::Unreadable {
                namespace: m.namespace.clone(),
                machine: m.name.clone(),
                version: m.version,
                instances: users,
            };
            if users == 0 && !dry_run {
                self.delete_machine(&m.namespace, &m.name, m.version)?;
                report.deleted.push(entry);
            } else if users == 0 {
                report.deletable.push(entry);
            } else {
                report.in_use.push(entry);
            }
        }
        Ok(report)
    }

    /// A machine version (the latest when `None`), compiled.
    pub fn machine(
        &self,
        ns: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<(MachineRecord, Arc<Machine>), Error> {
        let record = self.store.machine(ns, name, version)?.ok_or_else(|| {
            Error::NotFound(match version {
                Some(v) => format!("machine `{name}` has no version {v} in namespace `{ns}`"),
                None => format!("no machine `{name}` in namespace `{ns}`"),
            })
        })?;
        let m = self.machines.load(&record)?;
        Ok((record, m))
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
        let now = self.clock.now();
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
            self.config.limits,
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
        let fingerprint = req
            .key
            .as_ref()
            .map(|_| digest(&format!("{}\u{0}{}", req.event, payload)));
        let by = Actor {
            name: String::new(),
            ..req.actor
        };
        let event = Event {
            name: req.event,
            payload,
            actor: req.actor.name,
            reason: req.reason,
        };
        let machines = Arc::clone(&self.machines);
        let now = self.clock.now();
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
            let mut inst = tx.instance(&ns, &id)?.ok_or_else(|| {
                Error::NotFound(format!("no instance `{id}` in namespace `{ns}`"))
            })?;
            if let (Some(key), Some(fp)) = (&key, &fingerprint) {
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
                    let same = crate::engine::fingerprint(&queued.event, &queued.payload) == *fp;
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
            let key = key.zip(fingerprint);
            let history = unit::apply_event(tx, &machines, &mut inst, &event, &by, key, now)?;
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
            .store
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
        self.store
            .instance(ns, id)?
            .ok_or_else(|| Error::NotFound(format!("no instance `{id}` in namespace `{ns}`")))
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
        Ok(self.store.instances(filter)?)
    }

    /// The whole history of an instance, oldest first.
    pub fn history(&self, ns: &str, id: &str) -> Result<Vec<HistoryRecord>, Error> {
        self.get(ns, id)?;
        let mut out = Vec::new();
        loop {
            let after = out.last().map_or(0, |h: &HistoryRecord| h.seq);
            let page = self.store.history(ns, id, after, 1000)?;
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
        Ok(self.store.history_before(
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

    /// Verifies one instance, or every instance of the namespace when `id` is `None`,
    /// as the API reports it.
    pub fn verify_report(
        &self,
        ns: &str,
        id: Option<&str>,
    ) -> Result<cairn_api::VerifyReport, Error> {
        let ids = match id {
            Some(id) => vec![id.to_string()],
            None => self
                .instance_ids(Some(ns))?
                .into_iter()
                .map(|(_, id)| id)
                .collect(),
        };
        let results = ids
            .iter()
            .map(|id| self.verify(ns, id).map(|v| crate::wire::verified(&v)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(cairn_api::VerifyReport::new(results))
    }

    /// Replays an instance's history through the step function and checks that it
    /// reproduces every recorded version and the stored instance.
    pub fn verify(&self, ns: &str, id: &str) -> Result<Verified, Error> {
        let inst = self.get(ns, id)?;
        let history = self.history(ns, id)?;
        let problem = self.replay_problem(&inst, &history)?;
        Ok(Verified {
            namespace: ns.to_string(),
            id: id.to_string(),
            versions: history.len() as u64,
            ok: problem.is_none(),
            problem,
        })
    }

    /// Every instance, optionally of one namespace, with `verify`.
    pub fn instance_ids(&self, ns: Option<&str>) -> Result<Vec<(String, String)>, Error> {
        Ok(self.store.instance_ids(ns)?)
    }

    fn replay_problem(
        &self,
        inst: &InstanceRecord,
        history: &[HistoryRecord],
    ) -> Result<Option<String>, Error> {
        let (_, machine) =
            self.machine(&inst.namespace, &inst.machine, Some(inst.machine_version))?;
        // Replay is never refused by a limit lowered since: what was applied, replays.
        let env_at = |t: DateTime<Utc>| Env {
            now: t,
            instance: instance_env(inst),
            records: json!({}),
            limits: cairn_core::Limits::CEILING,
        };
        let mismatch = |h: &HistoryRecord, s: &Snapshot| -> Option<String> {
            if h.to_configuration != s.configuration
                || h.context != s.context
                || h.status != s.status
            {
                Some(format!(
                    "seq {} (version {}): history records {:?} / {} / {} but replay gives {:?} / {} / {}",
                    h.seq,
                    h.version,
                    h.to_configuration,
                    h.context,
                    h.status.as_str(),
                    s.configuration,
                    s.context,
                    s.status.as_str()
                ))
            } else {
                None
            }
        };
        let mut snap: Option<Snapshot> = None;
        let mut version = 0;
        let first_seq = history.first().map_or(1, |h| h.seq);
        for (i, h) in history.iter().enumerate() {
            let expected = first_seq + i as u64;
            if h.seq != expected || (i == 0 && h.seq != 1 && h.kind != HistoryKind::Base) {
                return Ok(Some(format!(
                    "history has seq {} where {expected} was expected",
                    h.seq
                )));
            }
            let next = match (h.kind, &snap) {
                // A base (a fork's first record, or what compaction folded older history
                // into) is taken as given: replay starts from it.
                (HistoryKind::Base, _) => {
                    version = h.version;
                    Snapshot {
                        configuration: h.to_configuration.clone(),
                        context: h.context.clone(),
                        status: h.status,
                    }
                }
                (HistoryKind::Start, None) => {
                    match cairn_core::guarded(|| {
                        cairn_core::start(&machine, &h.payload, &env_at(h.created_at))
                    }) {
                        Ok(o) => o.snapshot,
                        Err(e) => {
                            return Ok(Some(format!("seq 1: replaying the start is refused: {e}")));
                        }
                    }
                }
                (HistoryKind::Start, Some(_)) | (_, None) => {
                    return Ok(Some(format!(
                        "seq {}: a `{}` record where the history {}",
                        h.seq,
                        h.kind.as_str(),
                        if snap.is_none() {
                            "should start"
                        } else {
                            "has started already"
                        }
                    )));
                }
                (HistoryKind::Event, Some(s)) => {
                    let ev = Event {
                        name: h.event.clone(),
                        payload: h.payload.clone(),
                        actor: h.actor.clone(),
                        reason: h.reason.clone(),
                    };
                    // A paused instance applies its queued events on resume, as running.
                    let running = Snapshot {
                        status: Status::Running,
                        ..s.clone()
                    };
                    match cairn_core::guarded(|| {
                        cairn_core::step(&machine, &running, &ev, &env_at(h.created_at))
                    }) {
                        Ok(o) => o.snapshot,
                        Err(e) => {
                            return Ok(Some(format!(
                                "seq {}: replaying `{}` is refused: {e}",
                                h.seq, h.event
                            )));
                        }
                    }
                }
                (HistoryKind::Pause, Some(s)) => Snapshot {
                    status: Status::Paused,
                    ..s.clone()
                },
                (HistoryKind::Resume, Some(s)) => Snapshot {
                    status: Status::Running,
                    ..s.clone()
                },
                (HistoryKind::Cancel, Some(s)) => Snapshot {
                    status: Status::Cancelled,
                    ..s.clone()
                },
                (HistoryKind::Fail, Some(s)) => Snapshot {
                    status: Status::Failed,
                    ..s.clone()
                },
                (HistoryKind::Attempt, Some(s)) => s.clone(),
            };
            if h.kind.is_transition() {
                version += 1;
            }
            if h.version != version {
                return Ok(Some(format!(
                    "seq {}: records version {} where {version} was expected",
                    h.seq, h.version
                )));
            }
            if let Some(p) = mismatch(h, &next) {
                return Ok(Some(p));
            }
            snap = Some(next);
        }
        let Some(snap) = snap else {
            return Ok(Some("the instance has no history".into()));
        };
        let last_seq = history.last().map_or(0, |h| h.seq);
        if version != inst.version || last_seq != inst.history_seq {
            return Ok(Some(format!(
                "the instance is at version {} (seq {}) but its history ends at version {version} (seq {last_seq})",
                inst.version, inst.history_seq
            )));
        }
        if snap.configuration != inst.configuration
            || snap.context != inst.context
            || snap.status != inst.status
        {
            return Ok(Some(format!(
                "the stored instance {:?} / {} / {} differs from its replayed history {:?} / {} / {}",
                inst.configuration,
                inst.context,
                inst.status.as_str(),
                snap.configuration,
                snap.context,
                snap.status.as_str()
            )));
        }
        Ok(None)
    }
}
