//! Pause, resume and cancel: each one unit of work that records a lifecycle history
//! record and carries the change down the instance's tree of children.

use cairn_core::Status;
use cairn_store::{HistoryKind, InstanceRecord, Store};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::children::Cascade;
use crate::engine::Engine;
use crate::engine::Machines;
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
                crate::children::cascade(tx, machines, inst, None, Cascade::Pause, now)?;
                fire_status(tx, machines, inst, now)
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
                crate::children::resume_in_unit(tx, machines, inst, actor, reason, now)?;
                crate::children::cascade(tx, machines, inst, None, Cascade::Resume, now)?;
                // Resuming may have finished it (a queued event reached a final state).
                if inst.status == Status::Running {
                    fire_status(tx, machines, inst, now)?;
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
                unit::finish_instance(tx, machines, inst, now)
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
            let mut inst = Self::load_instance(tx, &ns, &id)?;
            change(tx, &machines, &mut inst, &actor, &reason, now)?;
            Ok(inst)
        })
    }
}

/// Fires the triggers that wait for the status the instance now has.
fn fire_status(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    crate::triggers::fire(
        tx,
        machines,
        inst,
        &[],
        Some(inst.status),
        || unit::start_event(&Value::Null),
        now,
    )
}
