//! Triggers between machines: when an instance of machine A enters a state (or one of its
//! descendants) or reaches a status, and a CEL condition on it holds, start an instance
//! of B or send an event to an instance.
//!
//! A trigger fires inside the source's unit of work, but only writes an outbox entry: the
//! start or the send happens after commit, in the unit that delivers (and deletes) the
//! entry, so it happens once and a failure downstream never rolls back the source. A
//! condition or expression that fails is logged on the source (`trigger_failed`) and
//! changes nothing. Each entry counts the triggers that led to it; a chain longer than
//! [`MAX_HOPS`] stops (`trigger_loop_stopped`), so triggers that feed each other end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_api::Trigger;
use cairn_core::expr::{self, Compiled, Scope};
use cairn_core::step::Microstep;
use cairn_core::{Status, is_reserved_event};
use cairn_store::{InstanceRecord, OutboxRecord, Store, TriggerRecord};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::engine::{Engine, Machines};
use crate::unit::Unit;
use crate::{Error, unit};

/// The longest chain of triggers feeding each other.
pub const MAX_HOPS: u32 = 16;

/// A trigger with its expressions compiled.
pub(crate) struct Armed {
    def: Trigger,
    status: Option<Status>,
    when: Option<Compiled>,
    input: Option<Compiled>,
    id: Option<Compiled>,
    to: Option<Compiled>,
    payload: Option<Compiled>,
}

/// Each namespace's compiled triggers, loaded on first use and after a change made here;
/// with a `ttl` (other nodes may change them too), also once they are that old.
/// A namespace's triggers and when they were loaded.
type Loaded = (std::time::Instant, Arc<Vec<Armed>>);

pub(crate) struct Cache {
    loaded: Mutex<HashMap<String, Loaded>>,
    ttl: Option<std::time::Duration>,
}

impl Cache {
    pub(crate) fn new(ttl: Option<std::time::Duration>) -> Cache {
        Cache {
            loaded: Mutex::default(),
            ttl,
        }
    }

    fn of(&self, tx: &mut Unit<'_>, ns: &str) -> Result<Arc<Vec<Armed>>, Error> {
        let fresh = |at: &std::time::Instant| self.ttl.is_none_or(|t| at.elapsed() < t);
        if let Some(list) = self.loaded.lock().ok().and_then(|m| {
            m.get(ns)
                .filter(|(at, _)| fresh(at))
                .map(|(_, l)| Arc::clone(l))
        }) {
            return Ok(list);
        }
        let list: Vec<Armed> = tx
            .triggers(ns)?
            .iter()
            .filter_map(|r| serde_json::from_value(r.definition.clone()).ok())
            .filter_map(|t| compile(t, None).ok())
            .collect();
        let list = Arc::new(list);
        if let Ok(mut m) = self.loaded.lock() {
            m.insert(
                ns.to_string(),
                (std::time::Instant::now(), Arc::clone(&list)),
            );
        }
        Ok(list)
    }

    fn forget(&self, ns: &str) {
        if let Ok(mut m) = self.loaded.lock() {
            m.remove(ns);
        }
    }
}

/// Checks and compiles a trigger: within `limits` when it is being added, as stored
/// (no limit refuses it) when `None`.
fn compile(def: Trigger, limits: Option<&cairn_core::Limits>) -> Result<Armed, Error> {
    let env = expr::standard_env();
    let field = |what: &str, src: &Option<String>| -> Result<Option<Compiled>, Error> {
        src.as_deref()
            .map(|s| {
                match limits {
                    Some(l) => expr::compile(&env, s, l),
                    None => expr::compile_stored(&env, s, &[]),
                }
                .map_err(|e| {
                    let shown: String = s.chars().take(60).collect();
                    Error::Invalid(format!("trigger `{}`: `{what}` `{shown}`: {e}", def.name))
                })
            })
            .transpose()
    };
    let bad = |m: String| Error::Invalid(format!("trigger `{}`: {m}", def.name));
    if def.name.is_empty()
        || def.name.len() > 100
        || !def
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad(
            "a name is 1-100 letters, digits, `-`, `_` or `.`".into()
        ));
    }
    if def.machine.is_empty() {
        return Err(bad("`machine` (the source machine) is required".into()));
    }
    let status = match (&def.on_state, &def.on_status) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(bad("give exactly one of `on_state` and `on_status`".into()));
        }
        (Some(s), None) if s.is_empty() => return Err(bad("`on_state` is empty".into())),
        (Some(_), None) => None,
        (None, Some(s)) => match Status::parse(s) {
            Some(st) => Some(st),
            None => {
                return Err(bad(format!(
                    "`on_status` `{s}`: expected running, paused, completed, failed or cancelled"
                )));
            }
        },
    };
    let (input, id, to, payload) = match (&def.start, &def.send) {
        (Some(st), None) => {
            if st.machine.is_empty() {
                return Err(bad("`start.machine` is required".into()));
            }
            (
                field("start.input", &st.input)?,
                field("start.id", &st.id)?,
                None,
                None,
            )
        }
        (None, Some(se)) => {
            if se.event.is_empty() {
                return Err(bad("`send.event` is required".into()));
            }
            if is_reserved_event(&se.event) {
                return Err(bad(format!(
                    "`send.event` `{}` is reserved: the engine delivers it",
                    se.event
                )));
            }
            (
                None,
                None,
                field("send.to", &Some(se.to.clone()))?,
                field("send.payload", &se.payload)?,
            )
        }
        _ => return Err(bad("give exactly one of `start` and `send`".into())),
    };
    Ok(Armed {
        when: field("when", &def.when)?,
        def,
        status,
        input,
        id,
        to,
        payload,
    })
}

fn matches(t: &Armed, entered: &[&str], ended: Option<Status>) -> bool {
    if let Some(s) = &t.def.on_state {
        return entered.iter().any(|e| {
            e == s || (e.starts_with(s.as_str()) && e.as_bytes().get(s.len()) == Some(&b'.'))
        });
    }
    t.status.is_some() && t.status == ended
}

/// Fires the triggers of `inst`'s machine that match the states just entered or the status
/// it just ended with: each writes an outbox entry. Never fails the source for a trigger's
/// own problem; those are logged.
pub(crate) fn fire(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    microsteps: &[Microstep],
    ended: Option<Status>,
    event: impl FnOnce() -> Value,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let all = machines.triggers.of(tx, &inst.namespace)?;
    if !all.iter().any(|t| t.def.machine == inst.machine) {
        return Ok(());
    }
    let event = &event();
    let entered: Vec<&str> = microsteps
        .iter()
        .flat_map(|m| m.entered.iter().map(String::as_str))
        .collect();
    for t in all.iter().filter(|t| t.def.machine == inst.machine) {
        if !matches(t, &entered, ended) {
            continue;
        }
        let name = &t.def.name;
        // A trigger that panics fails like one whose expression fails: logged, alone.
        let acted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            action(t, inst, event, now, &machines.limits)
        }))
        .unwrap_or_else(|_| Err("evaluating the trigger failed inside Cairn (a panic)".into()));
        match acted {
            Ok(None) => {}
            Ok(Some(mut entry)) => {
                let hops = tx.next_hop();
                if hops > MAX_HOPS {
                    unit::log(
                        tx,
                        inst,
                        "trigger_loop_stopped",
                        json!({"trigger": name, "hops": hops}),
                        now,
                    )?;
                    continue;
                }
                entry.hops = hops;
                tx.push_outbox(&entry)?;
                unit::log(
                    tx,
                    inst,
                    "trigger_fired",
                    json!({"trigger": name, "kind": entry.kind, "target": entry.instance_id}),
                    now,
                )?;
            }
            Err(why) => unit::log(
                tx,
                inst,
                "trigger_failed",
                json!({"trigger": name, "error": why}),
                now,
            )?,
        }
    }
    Ok(())
}

/// The entry a matching trigger writes, or `None` when its condition does not hold.
fn action(
    t: &Armed,
    inst: &InstanceRecord,
    event: &Value,
    now: DateTime<Utc>,
    limits: &cairn_core::Limits,
) -> Result<Option<OutboxRecord>, String> {
    let instance = unit::instance_env(inst);
    let records = json!({});
    let budget = expr::budget(limits);
    let mut scope = Scope::new(&expr::standard_env(), &budget);
    scope.set_json("context", &inst.context);
    scope.set_json("event", event);
    scope.set_json("instance", &instance);
    scope.set_json("records", &records);
    scope.set_time("now", now);
    if let Some(w) = &t.when
        && !scope.eval_bool(w).map_err(|e| format!("`when`: {e}"))?
    {
        return Ok(None);
    }
    let text = |what: &str, c: &Compiled| -> Result<String, String> {
        match scope.eval(c).map_err(|e| format!("`{what}`: {e}"))? {
            Value::String(s) if !s.is_empty() => Ok(s),
            other => Err(format!(
                "`{what}` must yield a non-empty string, yielded {other}"
            )),
        }
    };
    let value = |what: &str, c: &Option<Compiled>| -> Result<Value, String> {
        match c {
            None => Ok(json!({})),
            Some(c) => scope.eval(c).map_err(|e| format!("`{what}`: {e}")),
        }
    };
    let base = |kind: &str, instance_id: String, event: String, payload: Value| OutboxRecord {
        seq: 0,
        kind: kind.into(),
        hops: 0,
        namespace: inst.namespace.clone(),
        instance_id,
        event,
        payload,
        actor: format!("trigger:{}", t.def.name),
        reason: String::new(),
        source: format!("trigger:{}:{}", t.def.name, inst.id),
        created_at: now,
    };
    if let Some(st) = &t.def.start {
        let id = match &t.id {
            Some(c) => text("start.id", c)?,
            None => uuid::Uuid::now_v7().to_string(),
        };
        crate::engine::check_id(&id).map_err(|e| e.to_string())?;
        let input = value("start.input", &t.input)?;
        return Ok(Some(base("start", id, st.machine.clone(), input)));
    }
    let se = t.def.send.as_ref().expect("a trigger starts or sends");
    let to = text("send.to", t.to.as_ref().expect("compiled with send"))?;
    let payload = value("send.payload", &t.payload)?;
    Ok(Some(base("event", to, se.event.clone(), payload)))
}

impl<S: Store> Engine<S> {
    /// Stores a trigger after checking it (names, one source condition, one action, CEL
    /// that compiles, no reserved event).
    pub fn add_trigger(&self, ns: &str, trigger: Trigger) -> Result<Trigger, Error> {
        crate::engine::check_namespace(ns)?;
        let mut def = compile(trigger, Some(&self.config().limits))?.def;
        let now = self.now();
        def.created_at = Some(now);
        let record = TriggerRecord {
            namespace: ns.to_string(),
            name: def.name.clone(),
            machine: def.machine.clone(),
            definition: serde_json::to_value(&def).unwrap_or_default(),
            created_at: now,
        };
        let machines = self.machine_cache();
        let (ns2, name) = (ns.to_string(), def.name.clone());
        let written = self.write(move |tx| {
            tx.insert_trigger(&record).map_err(|e| match e {
                cairn_store::Error::Conflict(_) => {
                    Error::Conflict(format!("trigger `{name}` exists; remove it first"))
                }
                other => Error::Store(other),
            })?;
            // Later units of the same commit see the trigger too.
            machines.triggers.forget(&ns2);
            Ok(())
        });
        // Committed or rolled back, the cache reloads from what the store holds.
        self.machine_cache().triggers.forget(ns);
        written?;
        Ok(def)
    }

    /// The namespace's triggers, by name.
    pub fn triggers(&self, ns: &str) -> Result<Vec<Trigger>, Error> {
        Ok(self
            .store()
            .triggers(ns)?
            .into_iter()
            .filter_map(|r| serde_json::from_value(r.definition).ok())
            .collect())
    }

    /// Removes a trigger.
    pub fn remove_trigger(&self, ns: &str, name: &str) -> Result<(), Error> {
        let (ns2, name2) = (ns.to_string(), name.to_string());
        let machines = self.machine_cache();
        let existed = self.write(move |tx| {
            let existed = tx.delete_trigger(&ns2, &name2)?;
            machines.triggers.forget(&ns2);
            Ok(existed)
        });
        self.machine_cache().triggers.forget(ns);
        let existed = existed?;
        if !existed {
            return Err(Error::NotFound(format!(
                "no trigger `{name}` in namespace `{ns}`"
            )));
        }
        Ok(())
    }
}
