//! Approval decisions: quorums, rejections, and the `approve` / `reject` event the
//! final decision delivers.

use cairn_core::{Event, Status};
use cairn_store::{ApprovalRecord, ApprovalStatus, Decision, HistoryRecord, InstanceRecord, Store};
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::unit::{self};
use crate::{Actor, Error};

/// The outcome of an approval decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decided {
    /// The approval after the decision.
    pub approval: ApprovalRecord,
    /// The instance after the decision (moved on when the approval was decided).
    pub instance: InstanceRecord,
    /// The `approve` / `reject` transition, when the decision was final and delivered now
    /// (none while a quorum is still short, or when the instance is paused and the event
    /// was queued).
    pub transition: Option<HistoryRecord>,
}

impl Decided {
    /// A decision as the API gives it.
    pub fn to_api(&self) -> cairn_api::Decided {
        cairn_api::Decided {
            approval: crate::wire::approval(&self.approval),
            instance: crate::wire::instance(&self.instance),
            transition: self.transition.as_ref().map(crate::wire::transition),
        }
    }
}

/// An approval decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecideRequest {
    /// The approval to decide; the instance's only pending one when `None`.
    pub approval: Option<String>,
    /// Approve (`true`) or reject.
    pub approve: bool,
    /// Who decides; matched against the approval's `approvers`.
    pub actor: Actor,
    /// Why; required for a rejection.
    pub reason: String,
    /// Merged into the delivered event's payload.
    pub payload: Value,
}

impl DecideRequest {
    /// An approval by `actor`.
    pub fn approve(actor: &str, reason: &str) -> DecideRequest {
        DecideRequest {
            approve: true,
            actor: actor.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    /// A rejection by `actor`, saying why.
    pub fn reject(actor: &str, reason: &str) -> DecideRequest {
        DecideRequest {
            approve: false,
            actor: actor.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }
}

impl<S: Store> Engine<S> {
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
            let mut inst = crate::unit::load_instance(tx, &ns, &id)?;
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
                    to: Some(a.state.clone()),
                };
                if inst.status == Status::Paused {
                    unit::queue_event(tx, &inst, &event, &actor, None, now)?;
                } else {
                    transition = Some(crate::apply::apply_event(tx, &machines, &mut inst, &event, &actor, None, now)?);
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
}
