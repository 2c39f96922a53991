//! Timers: firing the due ones (each exactly once, deleted in the unit that applies its
//! event), and the background service that does it.

use std::collections::HashMap;

use cairn_core::{Event, Status};
use cairn_store::{InstanceRecord, Store};
use serde_json::json;

use super::retention::Retention;
use crate::engine::Engine;
use crate::unit::{self, Unit};
use crate::{Actor, Error};

impl<S: Store> Engine<S> {
    /// Everything due now, at once (`cairn tick`, `POST /v1/tick`): reclaims expired
    /// leases, fires due schedules, delivers the outbox, fires due timers, and applies
    /// `retention` to the namespace.
    pub fn tick(&self, ns: &str, retention: &Retention) -> Result<cairn_api::Ticked, Error> {
        self.reclaim_expired()?;
        self.fire_due_schedules()?;
        self.drain_outbox()?;
        let timers_fired = self.fire_due_timers()?;
        let (instances_removed, history_folded) = self.enforce_retention(ns, retention)?;
        Ok(cairn_api::Ticked {
            timers_fired,
            instances_removed,
            history_folded,
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

    /// Timers due now, per namespace, counting at most `cap` in all.
    pub fn timers_due(&self, cap: usize) -> Result<Vec<(String, u64)>, Error> {
        Ok(self.store().timers_due(self.now(), cap)?)
    }
}

/// Fires the instance's due timers inside the current unit.
pub(crate) fn fire_due_in_unit(
    tx: &mut Unit<'_>,
    machines: &crate::machines::Machines,
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
            to: None,
        };
        match crate::apply::apply_event(tx, machines, inst, &event, &Actor::default(), None, now) {
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
                crate::apply::fail_instance(
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
