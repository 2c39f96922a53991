//! Carrying a step's effects into its unit: timers, approvals and tasks of the instance
//! itself; children and maps through the unit's family (`unit::Family`); sends to other
//! instances through the outbox; emits on the event stream.

use cairn_core::Effect;
use cairn_store::{
    ApprovalRecord, ApprovalStatus, InstanceRecord, TaskRecord, TaskStatus, TimerRecord,
};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::Error;
use crate::machines::Machines;
use crate::unit::{Unit, log};

/// Carries a step's effects into the unit: timers, approvals, tasks, children and maps
/// here; sends to other instances through the outbox; emits on the event stream.
pub fn apply_effects(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    effects: &[Effect],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for e in effects {
        match e {
            Effect::SetTimer {
                state,
                event,
                delay_ms,
            } => tx.set_timer(&TimerRecord {
                namespace: inst.namespace.clone(),
                instance_id: inst.id.clone(),
                event: event.clone(),
                state: state.clone(),
                due_at: now + chrono::Duration::milliseconds(*delay_ms as i64),
                created_at: now,
            })?,
            Effect::CancelTimer { event, .. } => {
                tx.delete_timer(&inst.namespace, &inst.id, event)?;
            }
            Effect::RequestApproval {
                state,
                prompt,
                approvers,
                quorum,
            } => {
                let a = ApprovalRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    namespace: inst.namespace.clone(),
                    instance_id: inst.id.clone(),
                    state: state.clone(),
                    prompt: prompt.clone(),
                    approvers: approvers.clone(),
                    quorum: *quorum,
                    status: ApprovalStatus::Pending,
                    decisions: Vec::new(),
                    created_at: now,
                    decided_at: None,
                    decided_by: None,
                    reason: None,
                };
                tx.insert_approval(&a)?;
                log(
                    tx,
                    inst,
                    "approval_requested",
                    json!({"approval": a.id, "state": state, "prompt": prompt}),
                    now,
                )?;
            }
            Effect::CancelApproval { state } => {
                for mut a in tx.pending_approvals(&inst.namespace, &inst.id)? {
                    if &a.state == state {
                        cancel_approval(tx, inst, &mut a, now)?;
                    }
                }
            }
            Effect::EnqueueTask {
                state,
                queue,
                action,
                input,
                timeout_ms,
                heartbeat_ms,
                retry,
            } => {
                let t = TaskRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    namespace: inst.namespace.clone(),
                    instance_id: inst.id.clone(),
                    state: state.clone(),
                    queue: queue.clone(),
                    action: action.clone(),
                    input: input.clone(),
                    status: TaskStatus::Pending,
                    attempt: 0,
                    retry: serde_json::to_value(retry).unwrap_or_default(),
                    timeout_ms: *timeout_ms,
                    heartbeat_ms: *heartbeat_ms,
                    available_at: now,
                    lease_owner: None,
                    lease_expires_at: None,
                    output: None,
                    error: None,
                    created_at: now,
                    updated_at: now,
                };
                tx.insert_task(&t)?;
                log(
                    tx,
                    inst,
                    "task_enqueued",
                    json!({"task": t.id, "queue": queue, "action": action, "state": state}),
                    now,
                )?;
            }
            Effect::CancelTask { state } => cancel_tasks(tx, inst, Some(state), now)?,
            Effect::Spawn { .. } | Effect::CancelSpawn { .. } | Effect::StartMap { .. } => {
                tx.family().carry(tx, machines, inst, e, now)?
            }
            // To another instance, after commit, through the outbox; like a trigger's send
            // it counts a hop, so instances that send to each other in a loop stop.
            Effect::Send { to, event, payload } => {
                let hops = tx.next_hop();
                if cairn_core::is_reserved_event(event) {
                    log(
                        tx,
                        inst,
                        "send_refused",
                        json!({"to": to, "event": event, "reason": "reserved: the engine delivers it"}),
                        now,
                    )?;
                    continue;
                }
                if hops > crate::armed::MAX_HOPS {
                    log(
                        tx,
                        inst,
                        "send_loop_stopped",
                        json!({"to": to, "event": event, "hops": hops}),
                        now,
                    )?;
                    continue;
                }
                tx.push_outbox(&cairn_store::OutboxRecord {
                    seq: 0,
                    kind: "event".into(),
                    hops,
                    namespace: inst.namespace.clone(),
                    instance_id: to.clone(),
                    event: event.clone(),
                    payload: payload.clone(),
                    actor: format!("instance:{}", inst.id),
                    reason: String::new(),
                    source: format!("send:{}", inst.id),
                    created_at: now,
                })?;
            }
            // On the instance's event stream.
            Effect::Emit { event, payload } => log(
                tx,
                inst,
                "emitted",
                json!({"event": event, "payload": payload}),
                now,
            )?,
        }
    }
    Ok(())
}

/// Cancels a pending approval.
pub(crate) fn cancel_approval(
    tx: &mut Unit<'_>,
    inst: &InstanceRecord,
    a: &mut ApprovalRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    a.status = ApprovalStatus::Cancelled;
    a.decided_at = Some(now);
    tx.update_approval(a)?;
    log(
        tx,
        inst,
        "approval_cancelled",
        json!({"approval": a.id, "state": a.state}),
        now,
    )
}

/// Cancels the instance's open tasks (of one state, or all).
pub(crate) fn cancel_tasks(
    tx: &mut Unit<'_>,
    inst: &InstanceRecord,
    state: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for mut t in tx.open_tasks(&inst.namespace, &inst.id)? {
        if state.is_some_and(|s| s != t.state) {
            continue;
        }
        if t.status == TaskStatus::Leased {
            tx.put_attempt(&cairn_store::AttemptRecord {
                task_id: t.id.clone(),
                attempt: t.attempt,
                namespace: t.namespace.clone(),
                instance_id: t.instance_id.clone(),
                worker: t.lease_owner.clone().unwrap_or_default(),
                started_at: t.updated_at,
                ended_at: Some(now),
                outcome: Some("cancelled".into()),
                error: None,
                tokens: None,
                cost: None,
            })?;
        }
        t.status = TaskStatus::Cancelled;
        t.lease_owner = None;
        t.lease_expires_at = None;
        t.updated_at = now;
        tx.update_task(&t)?;
        log(
            tx,
            inst,
            "task_cancelled",
            json!({"task": t.id, "state": t.state}),
            now,
        )?;
    }
    Ok(())
}
