//! Pause, resume and cancel: each one unit of work that records a lifecycle history
//! record and carries the change down the instance's tree of children.

use cairn_core::Status;
use cairn_store::{HistoryKind, InstanceRecord, Store};
use chrono::{DateTime, Utc};

use cairn_core::Event;
use serde_json::json;

use crate::engine::Engine;
use crate::machines::Machines;
use crate::unit::{self, Unit};
use crate::{Actor, Error};

impl<S: Store> Engine<S> {
    /// Pauses a running instance: events sent to it are queued, timers wait.
    pub fn pause(
        &self,
        ns: &str,
        id: &str,
        actor: impl Into<Actor>,
        reason: &str,
    ) -> Result<InstanceRecord, Error> {
        self.change_status(
            ns,
            id,
            actor.into(),
            reason,
            |tx, machines, inst, actor, reason, now| {
                unit::check_running(inst).map_err(|e| match e {
                    Error::Paused(id) => {
                        Error::Conflict(format!("instance `{id}` is already paused"))
                    }
                    other => other,
                })?;
                inst.status = Status::Paused;
                unit::record_lifecycle(tx, inst, HistoryKind::Pause, actor, reason, now)?;
                cascade(tx, machines, inst, Cascade::Pause, now)?;
                crate::triggers::fire_status(tx, machines, inst, now)
            },
        )
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
        self.change_status(
            ns,
            id,
            actor.into(),
            reason,
            |tx, machines, inst, actor, reason, now| {
                if inst.status != Status::Paused {
                    if inst.status.is_finished() {
                        return Err(Error::Finished {
                            id: inst.id.clone(),
                            status: inst.status,
                        });
                    }
                    return Err(Error::Conflict(format!(
                        "instance `{}` is not paused",
                        inst.id
                    )));
                }
                resume_in_unit(tx, machines, inst, actor, reason, now)?;
                cascade(tx, machines, inst, Cascade::Resume, now)?;
                // Resuming may have finished it (a queued event reached a final state).
                if inst.status == Status::Running {
                    crate::triggers::fire_status(tx, machines, inst, now)?;
                }
                Ok(())
            },
        )
    }

    /// Cancels an instance: status `cancelled`, its timers and approvals cancelled.
    pub fn cancel(
        &self,
        ns: &str,
        id: &str,
        actor: impl Into<Actor>,
        reason: &str,
    ) -> Result<InstanceRecord, Error> {
        self.change_status(
            ns,
            id,
            actor.into(),
            reason,
            |tx, machines, inst, actor, reason, now| {
                if inst.status.is_finished() {
                    return Err(Error::Finished {
                        id: inst.id.clone(),
                        status: inst.status,
                    });
                }
                inst.status = Status::Cancelled;
                unit::record_lifecycle(tx, inst, HistoryKind::Cancel, actor, reason, now)?;
                // Its children are cancelled with it; its parent hears `child.failed`.
                crate::apply::finish_instance(tx, machines, inst, now)
            },
        )
    }

    /// One lifecycle change of an instance in a unit of its own: `change` moves it (and
    /// records why); the instance as it then is comes back.
    fn change_status<F>(
        &self,
        ns: &str,
        id: &str,
        actor: Actor,
        reason: &str,
        change: F,
    ) -> Result<InstanceRecord, Error>
    where
        F: FnOnce(
                &mut Unit<'_>,
                &Machines,
                &mut InstanceRecord,
                &Actor,
                &str,
                DateTime<Utc>,
            ) -> Result<(), Error>
            + Send
            + 'static,
    {
        let (ns, id, reason) = (ns.to_string(), id.to_string(), reason.to_string());
        let now = self.now();
        let machines = self.machine_cache();
        self.write(move |tx| {
            let mut inst = crate::unit::load_instance(tx, &ns, &id)?;
            change(tx, &machines, &mut inst, &actor, &reason, now)?;
            Ok(inst)
        })
    }
}

/// What a cascade does to each descendant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cascade {
    Pause,
    Resume,
}

/// Pauses the running (or resumes the paused) children of `parent` and their
/// descendants, in this unit. Cancelling is `children::cancel`: a step cancels children
/// too, when it leaves the state that started them.
fn cascade(
    tx: &mut Unit<'_>,
    machines: &Machines,
    parent: &InstanceRecord,
    op: Cascade,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let actor = Actor::from(format!("instance:{}", parent.id));
    crate::children::each_child(tx, parent, None, |tx, mut child| {
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
            }
            (Cascade::Resume, Status::Paused) => resume_in_unit(
                tx,
                machines,
                &mut child,
                &actor,
                "the parent was resumed",
                now,
            )?,
            _ => return Ok(()),
        }
        cascade(tx, machines, &child, op, now)
    })
}

/// Resumes a paused instance in this unit: queued events in order, then due timers.
fn resume_in_unit(
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
            to: queued.addressed_to.clone(),
        };
        let by = Actor {
            name: String::new(),
            token: queued.token_id.clone(),
            on_behalf_of: queued.on_behalf_of.clone(),
        };
        let key = queued
            .idempotency_key
            .clone()
            .map(|k| (k, crate::ids::fingerprint(&queued.event, &queued.payload)));
        match crate::apply::apply_event(tx, machines, inst, &event, &by, key, now) {
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
    super::timers::fire_due_in_unit(tx, machines, inst, now)?;
    crate::maps::resume(tx, machines, inst, now)
}
