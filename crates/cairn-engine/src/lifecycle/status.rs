//! Pause, resume and cancel: each one unit of work that records a lifecycle history
//! record and carries the change down the instance's tree of children.

use cairn_core::Status;
use cairn_store::{HistoryKind, InstanceRecord, Store};
use serde_json::Value;

use crate::children::Cascade;
use crate::engine::Engine;
use crate::unit::{self};
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
}
