//! Checkpoints and forks: named snapshots of an instance, and new instances started
//! from a version or checkpoint of another, with a context patch.

use cairn_core::{Env, Snapshot, Status};
use cairn_store::{CheckpointRecord, HistoryKind, HistoryRecord, InstanceRecord, Store};
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::unit::{self, instance_env};
use crate::{Actor, Error};

/// Where a fork starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForkFrom {
    /// The state after this version of the source's history.
    Version(u64),
    /// A named checkpoint of the source.
    Checkpoint(String),
}

impl ForkFrom {
    /// A number is a version; anything else a checkpoint name.
    pub fn parse(s: &str) -> ForkFrom {
        match s.parse::<u64>() {
            Ok(v) => ForkFrom::Version(v),
            Err(_) => ForkFrom::Checkpoint(s.to_string()),
        }
    }
}

/// A JSON merge patch (RFC 7396).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn valid_name(kind: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 200 || name.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(format!(
            "{kind} `{name}` must be 1-200 characters without control characters"
        )));
    }
    Ok(())
}

impl<S: Store> Engine<S> {
    /// Takes a named checkpoint of the instance as it is now.
    pub fn checkpoint(&self, ns: &str, id: &str, name: &str) -> Result<CheckpointRecord, Error> {
        valid_name("checkpoint name", name)?;
        let (ns, id, name) = (ns.to_string(), id.to_string(), name.to_string());
        let now = self.now();
        self.write(move |tx| {
            let inst = crate::unit::load_instance(tx, &ns, &id)?;
            if tx.checkpoint(&ns, &id, &name)?.is_some() {
                return Err(Error::Conflict(format!(
                    "instance `{id}` already has a checkpoint `{name}`"
                )));
            }
            let k = CheckpointRecord {
                namespace: ns,
                instance_id: id,
                name,
                seq: inst.history_seq,
                version: inst.version,
                configuration: inst.configuration.clone(),
                context: inst.context.clone(),
                status: inst.status,
                created_at: now,
            };
            tx.insert_checkpoint(&k)?;
            unit::log(
                tx,
                &inst,
                "checkpoint",
                json!({"name": k.name, "version": k.version}),
                now,
            )?;
            Ok(k)
        })
    }

    /// The instance's checkpoints, oldest first.
    pub fn checkpoints(&self, ns: &str, id: &str) -> Result<Vec<CheckpointRecord>, Error> {
        self.get(ns, id)?;
        Ok(self.store().checkpoints(ns, id)?)
    }

    /// Starts a new instance from a version or checkpoint of another, optionally with a
    /// merge patch over its context. Entry actions do not run again; the timers, tasks
    /// and approvals of the active states are set afresh. A failed instance is repaired,
    /// or retried from its last good version, this way.
    pub fn fork(
        &self,
        ns: &str,
        id: &str,
        from: ForkFrom,
        new_id: Option<String>,
        patch: Option<Value>,
    ) -> Result<InstanceRecord, Error> {
        self.fork_as(ns, id, from, new_id, patch, Actor::default())
    }

    /// [`Engine::fork`], recording `actor` as who forked.
    pub fn fork_as(
        &self,
        ns: &str,
        id: &str,
        from: ForkFrom,
        new_id: Option<String>,
        patch: Option<Value>,
        actor: Actor,
    ) -> Result<InstanceRecord, Error> {
        let source = self.get(ns, id)?;
        let (configuration, mut context, status, version, label) = match &from {
            ForkFrom::Version(v) => {
                let h = self.store().transition(ns, id, *v)?.ok_or_else(|| {
                    Error::NotFound(format!(
                        "instance `{id}` has no version {v} (it is at version {})",
                        source.version
                    ))
                })?;
                (
                    h.to_configuration,
                    h.context,
                    h.status,
                    *v,
                    json!({"version": v}),
                )
            }
            ForkFrom::Checkpoint(name) => {
                let k = self
                    .store()
                    .checkpoints(ns, id)?
                    .into_iter()
                    .find(|k| &k.name == name)
                    .ok_or_else(|| {
                        Error::NotFound(format!("instance `{id}` has no checkpoint `{name}`"))
                    })?;
                (
                    k.configuration,
                    k.context,
                    k.status,
                    k.version,
                    json!({"checkpoint": name, "version": k.version}),
                )
            }
        };
        if status.is_finished() {
            return Err(Error::Conflict(format!(
                "instance `{id}` was already {} at version {version}; fork from an earlier version",
                status.as_str()
            )));
        }
        if let Some(p) = &patch {
            if !p.is_object() {
                return Err(Error::Invalid(
                    "the context patch must be a JSON object (a merge patch)".into(),
                ));
            }
            merge_patch(&mut context, p);
            self.check_size("the patched context", &context)?;
        }
        let new_id = match new_id {
            Some(n) => {
                crate::ids::check_id(&n)?;
                n
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let (_, machine) = self.machine(ns, &source.machine, Some(source.machine_version))?;
        let now = self.now();
        let mut inst = InstanceRecord {
            namespace: ns.to_string(),
            id: new_id.clone(),
            machine: source.machine.clone(),
            machine_version: source.machine_version,
            status: Status::Running,
            configuration,
            context,
            version: 1,
            history_seq: 1,
            labels: source.labels.clone(),
            parent: source.parent.clone(),
            last_error: None,
            created_at: now,
            updated_at: now,
            entered: Default::default(),
        };
        cairn_store::dwell(&mut inst.entered, &[], &inst.configuration, now);
        let snap = Snapshot {
            configuration: inst.configuration.clone(),
            context: inst.context.clone(),
            status: Status::Running,
        };
        let env = Env {
            now,
            instance: instance_env(&inst),
            records: json!({}),
            limits: self.config().limits,
        };
        let effects = cairn_core::guarded(|| cairn_core::resources(&machine, &snap, &env))
            .map_err(Error::Refused)?;
        let base = HistoryRecord {
            namespace: ns.to_string(),
            instance_id: new_id.clone(),
            seq: 1,
            kind: HistoryKind::Base,
            version: 1,
            event: String::new(),
            payload: json!({"forked_from": {"instance": id, "from": label}, "patch": patch}),
            actor: actor.name.clone(),
            reason: String::new(),
            token_id: actor.token.clone(),
            on_behalf_of: actor.on_behalf_of.clone(),
            addressed_to: None,
            from_configuration: Vec::new(),
            to_configuration: inst.configuration.clone(),
            context: inst.context.clone(),
            status: Status::Running,
            idempotency_key: None,
            microsteps: json!([]),
            effects: serde_json::to_value(&effects).unwrap_or_default(),
            time_in_states_ms: None,
            created_at: now,
        };
        inst.status = Status::Running;
        let source_id = id.to_string();
        let machines = self.machine_cache();
        self.write(move |tx| {
            if tx.instance(&inst.namespace, &inst.id)?.is_some() {
                return Err(Error::Exists(inst.id.clone()));
            }
            tx.insert_instance(&inst)?;
            tx.append_history(&base)?;
            unit::log(
                tx,
                &inst,
                "forked",
                json!({"from": source_id, "at": base.payload["forked_from"]["from"]}),
                now,
            )?;
            crate::effects::apply_effects(tx, &machines, &inst, &effects, now)?;
            Ok(inst)
        })
    }
}
