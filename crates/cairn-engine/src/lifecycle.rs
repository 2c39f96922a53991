//! The instance lifecycle on top of the write path: timers (firing due ones, and a
//! background service), approvals, pause / resume / cancel, checkpoints and fork,
//! deletion and retention, and the statistics of `stats`.
//!
//! Every operation is one unit of work, so each is atomic and, once acknowledged, durable.

use std::collections::HashMap;
use std::time::Duration;

use cairn_core::{Env, Event, Snapshot, Status};
use cairn_store::{
    ApprovalRecord, ApprovalStatus, CheckpointRecord, Decision, HistoryKind, HistoryRecord,
    InstanceRecord, Store,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::children::Cascade;
use crate::engine::Engine;
use crate::unit::{self, Unit, instance_env};
use crate::{Actor, Error};

/// The outcome of an approval decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decided {
    pub approval: ApprovalRecord,
    pub instance: InstanceRecord,
    /// The `approve` / `reject` transition, when the decision was final and delivered now
    /// (none while a quorum is still short, or when the instance is paused and the event
    /// was queued).
    pub transition: Option<HistoryRecord>,
}

/// An approval decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecideRequest {
    /// The approval to decide; the instance's only pending one when `None`.
    pub approval: Option<String>,
    /// Approve (`true`) or reject.
    pub approve: bool,
    pub actor: Actor,
    /// Why; required for a rejection.
    pub reason: String,
    /// Merged into the delivered event's payload.
    pub payload: Value,
}

impl DecideRequest {
    pub fn approve(actor: &str, reason: &str) -> DecideRequest {
        DecideRequest {
            approve: true,
            actor: actor.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    pub fn reject(actor: &str, reason: &str) -> DecideRequest {
        DecideRequest {
            approve: false,
            actor: actor.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }
}

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

pub use cairn_api::Stats;

/// The most log entries one unit of log retention removes.
pub const LOG_TRIM_STEP: usize = 5_000;

/// How old history and finished instances are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove finished instances last updated longer ago than this.
    pub finished_after: Option<chrono::Duration>,
    /// Fold all but this many of an instance's newest history records into a base record.
    pub max_history: Option<usize>,
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
    fn load_instance(tx: &mut Unit<'_>, ns: &str, id: &str) -> Result<InstanceRecord, Error> {
        tx.instance(ns, id)?
            .ok_or_else(|| Error::NotFound(format!("no instance `{id}` in namespace `{ns}`")))
    }

    /// Pauses a running instance: events sent to it are queued, timers wait.
    pub fn pause(
        &self,
        ns: &str,
        id: &str,
        actor: impl Into<Actor>,
        reason: &str,
    ) -> Result<InstanceRecord, Error> {
        let (ns, id, actor, reason) = (
            ns.to_string(),
            id.to_string(),
            actor.into(),
            reason.to_string(),
        );
        let now = self.now();
        let machines = self.machine_cache();
        self.write(move |tx| {
            let mut inst = Self::load_instance(tx, &ns, &id)?;
            unit::check_running(&inst).map_err(|e| match e {
                Error::Paused(id) => Error::Conflict(format!("instance `{id}` is already paused")),
                other => other,
            })?;
            inst.status = Status::Paused;
            unit::record_lifecycle(tx, &mut inst, HistoryKind::Pause, &actor, &reason, now)?;
            crate::children::cascade(tx, &machines, &inst, None, Cascade::Pause, now)?;
            crate::triggers::fire(
                tx,
                &machines,
                &inst,
                &[],
                Some(Status::Paused),
                || unit::start_event(&Value::Null),
                now,
            )?;
            Ok(inst)
        })
    }

    /// Resumes a paused instance: its queued events are applied in order, then its due
    /// timers fire, all in this one unit of work.
    pub fn resume(
        &self,
        ns: &str,
        id: &str,
        actor: impl Into<Actor>,
        reason: &str,
    ) -> Result<InstanceRecord, Error> {
        let (ns, id, actor, reason) = (
            ns.to_string(),
            id.to_string(),
            actor.into(),
            reason.to_string(),
        );
        let now = self.now();
        let machines = self.machine_cache();
        self.write(move |tx| {
            let mut inst = Self::load_instance(tx, &ns, &id)?;
            if inst.status != Status::Paused {
                if inst.status.is_finished() {
                    return Err(Error::Finished {
                        id,
                        status: inst.status,
                    });
                }
                return Err(Error::Conflict(format!("instance `{id}` is not paused")));
            }
            crate::children::resume_in_unit(tx, &machines, &mut inst, &actor, &reason, now)?;
            crate::children::cascade(tx, &machines, &inst, None, Cascade::Resume, now)?;
            if inst.status == Status::Running {
                crate::triggers::fire(
                    tx,
                    &machines,
                    &inst,
                    &[],
                    Some(Status::Running),
                    || unit::start_event(&Value::Null),
                    now,
                )?;
            }
            Ok(inst)
        })
    }

    /// Cancels an instance: status `cancelled`, its timers and approvals cancelled.
    pub fn cancel(
        &self,
        ns: &str,
        id: &str,
        actor: impl Into<Actor>,
        reason: &str,
    ) -> Result<InstanceRecord, Error> {
        let (ns, id, actor, reason) = (
            ns.to_string(),
            id.to_string(),
            actor.into(),
            reason.to_string(),
        );
        let now = self.now();
        let machines = self.machine_cache();
        self.write(move |tx| {
            let mut inst = Self::load_instance(tx, &ns, &id)?;
            if inst.status.is_finished() {
                return Err(Error::Finished {
                    id,
                    status: inst.status,
                });
            }
            inst.status = Status::Cancelled;
            unit::record_lifecycle(tx, &mut inst, HistoryKind::Cancel, &actor, &reason, now)?;
            // Its children are cancelled with it; its parent hears `child.failed`.
            unit::finish_instance(tx, &machines, &inst, now)?;
            Ok(inst)
        })
    }

    /// Fires every timer due now, each exactly once (a timer is deleted in the same unit of
    /// work that applies its event). Paused instances keep theirs until they resume.
    /// Returns how many timer events were applied.
    pub fn fire_due_timers(&self) -> Result<usize, Error> {
        let now = self.now();
        let mut fired = 0;
        let mut seen: HashMap<(String, String), ()> = HashMap::new();
        loop {
            let due = self.store().due_timers(now, 500)?;
            let batch: Vec<_> = due
                .into_iter()
                .filter(|t| {
                    seen.insert((t.namespace.clone(), t.instance_id.clone()), ())
                        .is_none()
                })
                .collect();
            if batch.is_empty() {
                return Ok(fired);
            }
            for t in batch {
                let machines = self.machine_cache();
                let (ns, id) = (t.namespace.clone(), t.instance_id.clone());
                let n = self.write(move |tx| {
                    // Another node firing or changing this instance now is left to it; the
                    // timer, if still due, is seen on the next round.
                    let mut inst = match tx.claim_instance(&ns, &id)? {
                        cairn_store::Claim::Got(i) => *i,
                        cairn_store::Claim::Busy => return Ok(0),
                        cairn_store::Claim::Missing => {
                            tx.delete_timers(&ns, &id)?;
                            return Ok(0);
                        }
                    };
                    if inst.status.is_finished() {
                        tx.delete_timers(&ns, &id)?;
                        return Ok(0);
                    }
                    if inst.status == Status::Paused {
                        return Ok(0);
                    }
                    fire_due_in_unit(tx, &machines, &mut inst, now)
                })?;
                fired += n;
            }
        }
    }

    /// Records an approval decision. `approval` picks one when the instance has several
    /// pending. With a quorum, approvals accumulate until it is reached; one rejection
    /// decides. The final decision is delivered as the `approve` / `reject` event, with
    /// `event.payload.approval` naming the requesting state.
    pub fn decide(&self, ns: &str, id: &str, req: DecideRequest) -> Result<Decided, Error> {
        let DecideRequest {
            approval,
            approve,
            actor,
            reason,
            payload,
        } = req;
        if !approve && reason.trim().is_empty() {
            return Err(Error::Invalid("a rejection needs a reason".into()));
        }
        if !payload.is_null() && !payload.is_object() {
            return Err(Error::Invalid(
                "the decision payload must be a JSON object".into(),
            ));
        }
        let (ns, id) = (ns.to_string(), id.to_string());
        let now = self.now();
        let machines = self.machine_cache();
        self.write(move |tx| {
            let mut inst = Self::load_instance(tx, &ns, &id)?;
            if inst.status.is_finished() {
                return Err(Error::Finished { id, status: inst.status });
            }
            let mut a = match &approval {
                Some(aid) => {
                    let a = tx.approval(aid)?.filter(|a| a.namespace == ns && a.instance_id == id).ok_or_else(|| {
                        Error::NotFound(format!("instance `{id}` has no approval `{aid}`"))
                    })?;
                    if a.status != ApprovalStatus::Pending {
                        return Err(Error::Conflict(format!(
                            "approval `{aid}` is {}, not pending: it can no longer be decided",
                            a.status.as_str()
                        )));
                    }
                    a
                }
                None => {
                    let mut pending = tx.pending_approvals(&ns, &id)?;
                    match pending.len() {
                        0 => return Err(Error::Conflict(format!("instance `{id}` has no pending approval"))),
                        1 => pending.remove(0),
                        _ => {
                            let list: Vec<String> = pending.iter().map(|a| format!("{} (state {})", a.id, a.state)).collect();
                            return Err(Error::Invalid(format!(
                                "instance `{id}` has {} pending approvals: {}; choose one with --approval",
                                pending.len(),
                                list.join(", ")
                            )));
                        }
                    }
                }
            };
            let who = &actor.name;
            if !a.approvers.is_empty() && !a.approvers.iter().any(|x| x == who) {
                return Err(Error::NotAllowed(format!(
                    "`{who}` may not decide approval `{}`; approvers: {}",
                    a.id,
                    a.approvers.join(", ")
                )));
            }
            if a.decisions.iter().any(|d| &d.actor == who && !who.is_empty()) {
                return Err(Error::Conflict(format!("`{who}` has already decided approval `{}`", a.id)));
            }
            a.decisions.push(Decision {
                actor: who.clone(),
                token_id: actor.token.clone(),
                on_behalf_of: actor.on_behalf_of.clone(),
                approve,
                reason: reason.clone(),
                at: now,
            });
            let approvals = a.decisions.iter().filter(|d| d.approve).count() as u32;
            let done = !approve || approvals >= a.quorum;
            if done {
                a.status = if approve { ApprovalStatus::Approved } else { ApprovalStatus::Rejected };
                a.decided_at = Some(now);
                a.decided_by = Some(who.clone());
                a.reason = Some(reason.clone());
            }
            tx.update_approval(&a)?;
            unit::log(
                tx,
                &inst,
                "approval_decision",
                unit::with_actor(json!({"approval": a.id, "state": a.state, "approve": approve, "reason": reason, "status": a.status}), &actor),
                now,
            )?;
            let mut transition = None;
            if done {
                let mut p = match payload {
                    Value::Object(m) => m,
                    _ => Default::default(),
                };
                p.insert("approval".into(), json!(a.state));
                p.insert("approval_id".into(), json!(a.id));
                let event = Event {
                    name: if approve { "approve" } else { "reject" }.into(),
                    payload: Value::Object(p),
                    actor: actor.name.clone(),
                    reason: reason.clone(),
                };
                if inst.status == Status::Paused {
                    unit::queue_event(tx, &inst, &event, &actor, None, now)?;
                } else {
                    transition = Some(unit::apply_event(tx, &machines, &mut inst, &event, &actor, None, now)?);
                }
            }
            Ok(Decided { approval: a, instance: inst, transition })
        })
    }

    /// Approvals of a namespace (pending ones by default).
    pub fn approvals(
        &self,
        ns: &str,
        status: Option<ApprovalStatus>,
        instance: Option<&str>,
    ) -> Result<Vec<ApprovalRecord>, Error> {
        Ok(self.store().approvals(ns, status, instance)?)
    }

    /// Takes a named checkpoint of the instance as it is now.
    pub fn checkpoint(&self, ns: &str, id: &str, name: &str) -> Result<CheckpointRecord, Error> {
        valid_name("checkpoint name", name)?;
        let (ns, id, name) = (ns.to_string(), id.to_string(), name.to_string());
        let now = self.now();
        self.write(move |tx| {
            let inst = Self::load_instance(tx, &ns, &id)?;
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
                crate::engine::check_id(&n)?;
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
            unit::apply_effects(tx, &machines, &inst, &effects, now)?;
            Ok(inst)
        })
    }

    /// Deletes an instance and everything recorded of it.
    /// Deletes an instance with everything recorded of it, and its children (and theirs)
    /// with it, in one unit of work; each gets an `instance_deleted` log entry. What it
    /// sent to others stays and is delivered.
    pub fn delete(&self, ns: &str, id: &str) -> Result<(), Error> {
        let (ns, id) = (ns.to_string(), id.to_string());
        let now = self.now();
        self.write(move |tx| {
            if delete_tree(tx, &ns, &id, now)? {
                Ok(())
            } else {
                Err(Error::NotFound(format!(
                    "no instance `{id}` in namespace `{ns}`"
                )))
            }
        })
    }

    /// Finished instances last updated longer ago than `age`, oldest first.
    pub fn finished_before(&self, ns: &str, age: chrono::Duration) -> Result<Vec<String>, Error> {
        let cutoff = self.cutoff(age, "a retention age")?;
        Ok(self.store().finished_before(ns, cutoff, usize::MAX >> 1)?)
    }

    /// Now less `age`, when that is a time.
    fn cutoff(
        &self,
        age: chrono::Duration,
        what: &str,
    ) -> Result<chrono::DateTime<chrono::Utc>, Error> {
        (age >= chrono::Duration::zero())
            .then(|| self.now().checked_sub_signed(age))
            .flatten()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{what} is 0 to about 262,000 years; {} ms is not",
                    age.num_milliseconds()
                ))
            })
    }

    /// Folds all but the newest `keep` history records of an instance into a base record
    /// (and a checkpoint named `compacted@<seq>`), so `verify` still replays from there.
    /// Returns how many records were removed.
    pub fn compact(&self, ns: &str, id: &str, keep: usize) -> Result<u64, Error> {
        if keep == 0 {
            return Err(Error::Invalid(
                "history compaction keeps at least one record".into(),
            ));
        }
        let (ns, id) = (ns.to_string(), id.to_string());
        let now = self.now();
        self.write(move |tx| {
            let inst = Self::load_instance(tx, &ns, &id)?;
            let first_kept = inst.history_seq.saturating_sub(keep as u64 - 1).max(1);
            let Some(mut base) = tx.history_at(&ns, &id, first_kept)? else {
                return Ok(0);
            };
            if base.kind == HistoryKind::Base || base.kind == HistoryKind::Start && first_kept == 1
            {
                return Ok(0);
            }
            let removed = tx.delete_history_before(&ns, &id, first_kept)?;
            if removed == 0 && base.kind.is_base() {
                return Ok(0);
            }
            base.kind = HistoryKind::Base;
            tx.replace_history(&base)?;
            let name = format!("compacted@{first_kept}");
            if tx.checkpoint(&ns, &id, &name)?.is_none() {
                tx.insert_checkpoint(&CheckpointRecord {
                    namespace: ns.clone(),
                    instance_id: id.clone(),
                    name,
                    seq: base.seq,
                    version: base.version,
                    configuration: base.to_configuration.clone(),
                    context: base.context.clone(),
                    status: base.status,
                    created_at: now,
                })?;
            }
            unit::log(
                tx,
                &inst,
                "compacted",
                json!({"removed": removed, "base_seq": first_kept}),
                now,
            )?;
            Ok(removed)
        })
    }

    /// Applies a retention policy to a namespace: removes old finished instances and
    /// compacts long histories. Returns (instances removed, history records removed).
    pub fn enforce_retention(&self, ns: &str, policy: &Retention) -> Result<(u64, u64), Error> {
        let mut removed = 0;
        if let Some(age) = policy.finished_after {
            // A page of the oldest at a time, deleted RETENTION_STEP to a unit: retention
            // keeps up with a writer that finishes thousands of instances a second, and
            // no unit holds the writer longer than a group commit.
            let cutoff = self.cutoff(age, "a retention age")?;
            loop {
                let page = self.store().finished_before(ns, cutoff, RETENTION_PAGE)?;
                let last = page.len() < RETENTION_PAGE;
                for chunk in page.chunks(RETENTION_STEP) {
                    let (ns, ids, now) = (ns.to_string(), chunk.to_vec(), self.now());
                    removed += self.write(move |tx| {
                        let mut n = 0;
                        for id in &ids {
                            // Gone already, with its parent: nothing to do.
                            if delete_tree(tx, &ns, id, now)? {
                                n += 1;
                            }
                        }
                        Ok(n)
                    })?;
                }
                if last {
                    break;
                }
            }
        }
        let mut folded = 0;
        if let Some(keep) = policy.max_history {
            for (_, id) in self.instance_ids(Some(ns))? {
                let inst = self.get(ns, &id)?;
                if inst.history_seq as usize > keep {
                    folded += self.compact(ns, &id, keep)?;
                }
            }
        }
        Ok((removed, folded))
    }

    /// Log retention: removes log entries older than `older_than` and those beyond the
    /// newest `keep`, oldest first, in units of at most [`LOG_TRIM_STEP`] entries (so no
    /// unit holds the writer longer than a group commit), and moves the log's horizon.
    /// An event stream resuming from below the horizon is told so (`reset`). Returns how
    /// many entries were removed.
    pub fn trim_log(
        &self,
        older_than: Option<chrono::Duration>,
        keep: Option<u64>,
    ) -> Result<u64, Error> {
        let before = older_than
            .map(|age| self.cutoff(age, "a log retention age"))
            .transpose()?;
        if before.is_none() && keep.is_none() {
            return Ok(0);
        }
        let mut removed = 0;
        loop {
            let n = self.write(move |tx| Ok(tx.trim_log(before, keep, LOG_TRIM_STEP)?))?;
            removed += n;
            if n < LOG_TRIM_STEP as u64 {
                return Ok(removed);
            }
        }
    }

    /// Gives the space deletions freed back, in bounded steps that never hold the writer
    /// up longer than a unit of work (see `Store::vacuum`).
    pub fn vacuum(&self) -> Result<cairn_api::Vacuum, Error> {
        let started = std::time::Instant::now();
        let v = self.store().vacuum()?;
        Ok(cairn_api::Vacuum {
            bytes_before: v.before.bytes,
            bytes_after: v.after.bytes,
            free_bytes_before: v.before.free_bytes,
            free_bytes_after: v.after.free_bytes,
            steps: v.steps,
            longest_step_ms: v.longest_step_us as f64 / 1000.0,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Everything recorded of one instance, as wire types.
    pub fn export(&self, ns: &str, id: &str) -> Result<cairn_api::Export, Error> {
        use crate::wire;
        let inst = self.get(ns, id)?;
        let mut usage = cairn_api::Usage::default();
        let mut tasks = Vec::new();
        for t in self.store().tasks(ns, None, None, Some(id))? {
            let attempts: Vec<cairn_api::Attempt> = self
                .store()
                .attempts(&t.id)?
                .iter()
                .map(wire::attempt)
                .collect();
            for a in &attempts {
                usage.attempts += 1;
                usage.tokens += a.tokens.unwrap_or(0);
                usage.cost += a.cost.unwrap_or(0.0);
            }
            tasks.push(cairn_api::TaskWithAttempts {
                task: wire::task(&t),
                attempts,
            });
        }
        Ok(cairn_api::Export {
            instance: wire::instance(&inst),
            history: self.history(ns, id)?.iter().map(wire::transition).collect(),
            checkpoints: self
                .store()
                .checkpoints(ns, id)?
                .iter()
                .map(wire::checkpoint)
                .collect(),
            approvals: self
                .store()
                .approvals(ns, None, Some(id))?
                .iter()
                .map(wire::approval)
                .collect(),
            timers: self
                .store()
                .timers(ns, id)?
                .iter()
                .map(wire::timer)
                .collect(),
            tasks,
            usage,
        })
    }

    /// Timers due now, per namespace, counting at most `cap` in all.
    pub fn timers_due(&self, cap: usize) -> Result<Vec<(String, u64)>, Error> {
        Ok(self.store().timers_due(self.now(), cap)?)
    }

    /// Instances by machine and status, transitions, and mean time spent in each state.
    pub fn stats(&self, ns: &str) -> Result<Stats, Error> {
        // Maintained by the units that change what they count: a read of a few rows.
        let mut stats = Stats::default();
        // (machine, state) -> (total ms, visits)
        let mut time: HashMap<(String, String), (i64, i64)> = HashMap::new();
        for f in self.store().figures(Some(ns))? {
            let n = u64::try_from(f.value).unwrap_or(0);
            match f.kind.as_str() {
                "instances" if n > 0 => {
                    stats
                        .instances
                        .entry(f.name)
                        .or_default()
                        .insert(f.detail, n);
                }
                "transitions" => stats.transitions = n,
                "dwell_ms" => time.entry((f.name, f.detail)).or_default().0 = f.value,
                "dwell_visits" => time.entry((f.name, f.detail)).or_default().1 = f.value,
                _ => {}
            }
        }
        for ((machine, state), (total, n)) in time {
            if n > 0 {
                stats
                    .mean_time_in_state_ms
                    .entry(machine)
                    .or_default()
                    .insert(state, (total as f64 / n as f64 * 10.0).round() / 10.0);
            }
        }
        Ok(stats)
    }
}

/// The timer service: fires due timers (and reclaims expired task leases) in the
/// background while it lives.
pub struct TimerService(#[allow(dead_code)] crate::clock::Background);

impl TimerService {
    /// Starts firing `engine`'s due timers and schedules every `every`, and delivering
    /// outbox entries a crash left behind.
    pub fn start<S: Store + Send + Sync>(engine: Engine<S>, every: Duration) -> TimerService {
        TimerService(crate::clock::Background::spawn(
            "cairn-timers",
            every,
            move || {
                // Outbox entries left by a crash between a commit and its delivery.
                if engine.store().outbox_waiting().unwrap_or(false) {
                    let _ = engine.drain_outbox();
                }
                // Due schedules start their instances (through the outbox, drained at once).
                let _ = engine.fire_due_schedules();
                // Fired timers may set new ones due now: look again at once.
                matches!(engine.fire_due_timers(), Ok(n) if n > 0)
            },
        ))
    }
}

/// Fires the instance's due timers inside the current unit.
pub(crate) fn fire_due_in_unit(
    tx: &mut Unit<'_>,
    machines: &crate::engine::Machines,
    inst: &mut InstanceRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize, Error> {
    let mut fired = 0;
    for t in tx.due_timers_of(&inst.namespace, &inst.id, now)? {
        if inst.status != Status::Running {
            break;
        }
        // An earlier firing in this loop may have left the timer's state.
        if !tx.delete_timer(&inst.namespace, &inst.id, &t.event)? {
            continue;
        }
        let event = Event {
            name: t.event.clone(),
            payload: json!({"due_at": t.due_at}),
            actor: "timer".into(),
            reason: String::new(),
        };
        match unit::apply_event(tx, machines, inst, &event, &Actor::default(), None, now) {
            Ok(_) => fired += 1,
            // No transition takes it now (its guards are false): nothing happens.
            Err(Error::Refused(r @ cairn_core::Rejection::NotAccepted { .. })) => unit::log(
                tx,
                inst,
                "timer_refused",
                json!({"event": t.event, "reason": r.to_string()}),
                now,
            )?,
            // The machine cannot take it (a guard or action failed, a limit was hit): the
            // instance fails, visibly, instead of retrying the same failure forever.
            Err(Error::Refused(r)) => {
                unit::fail_instance(
                    tx,
                    machines,
                    inst,
                    &format!("`{}` could not be applied: {r}", t.event),
                    now,
                )?;
                fired += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(fired)
}

/// Finished instances retention deletes in one unit.
pub const RETENTION_STEP: usize = 64;
/// Finished instances retention lists at a time.
const RETENTION_PAGE: usize = 4096;

/// Deletes an instance and the tree it spawned (children first), logging
/// `instance_deleted` for each, inside the unit; false when there is no such instance.
fn delete_tree(
    tx: &mut Unit<'_>,
    ns: &str,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, Error> {
    let Some(root) = tx.instance(ns, id)? else {
        return Ok(false);
    };
    // The whole tree, parents before children; deleted children first.
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let links = tx.children(ns, &tree[i].id)?;
        for link in links {
            if let Some(child) = tx.instance(ns, &link.child_id)?
                && !tree.iter().any(|t| t.id == child.id)
            {
                tree.push(child);
            }
        }
        i += 1;
    }
    for inst in tree.iter().rev() {
        tx.delete_instance(ns, &inst.id)?;
        unit::log(
            tx,
            inst,
            "instance_deleted",
            json!({"machine": inst.machine, "parent": inst.parent}),
            now,
        )?;
    }
    Ok(true)
}
