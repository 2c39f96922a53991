//! Explicit conversions from store records to `cairn-api` wire types: the one place where
//! the API's shape meets storage's.

use cairn_store::{
    ApprovalRecord, CheckpointRecord, HistoryRecord, InstanceRecord, MachineRecord, TimerRecord,
    TokenRecord,
};

/// An instance as the API gives it.
pub fn instance(i: &InstanceRecord) -> cairn_api::Instance {
    cairn_api::Instance {
        id: i.id.clone(),
        namespace: i.namespace.clone(),
        machine: i.machine.clone(),
        machine_version: i.machine_version,
        status: i.status.as_str().to_string(),
        configuration: i.configuration.clone(),
        context: i.context.clone(),
        version: i.version,
        labels: i.labels.clone(),
        parent: i.parent.clone(),
        last_error: i.last_error.clone(),
        created_at: i.created_at,
        updated_at: i.updated_at,
    }
}

/// A history record as the API gives it.
pub fn transition(h: &HistoryRecord) -> cairn_api::Transition {
    cairn_api::Transition {
        seq: h.seq,
        kind: h.kind.as_str().to_string(),
        version: h.version,
        event: (h.kind == cairn_store::HistoryKind::Event).then(|| h.event.clone()),
        payload: h.payload.clone(),
        actor: h.actor.clone(),
        token: h.token_id.clone(),
        on_behalf_of: h.on_behalf_of.clone(),
        addressed_to: h.addressed_to.clone(),
        reason: h.reason.clone(),
        from: h.from_configuration.clone(),
        to: h.to_configuration.clone(),
        context: h.context.clone(),
        status: h.status.as_str().to_string(),
        idempotency_key: h.idempotency_key.clone(),
        effects: h.effects.clone(),
        time_in_states_ms: h.time_in_states_ms,
        at: h.created_at,
    }
}

/// A machine version as the API gives it.
pub fn machine(m: &MachineRecord) -> cairn_api::Machine {
    cairn_api::Machine {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        version: m.version,
        digest: m.digest.clone(),
        created_at: m.created_at,
        description: m
            .definition
            .get("description")
            .and_then(|d| d.as_str())
            .map(str::to_string),
    }
}

/// An approval as the API gives it.
pub fn approval(a: &ApprovalRecord) -> cairn_api::Approval {
    cairn_api::Approval {
        id: a.id.clone(),
        namespace: a.namespace.clone(),
        instance: a.instance_id.clone(),
        state: a.state.clone(),
        prompt: a.prompt.clone(),
        approvers: a.approvers.clone(),
        quorum: a.quorum,
        status: a.status.as_str().to_string(),
        decisions: a
            .decisions
            .iter()
            .map(|d| cairn_api::Decision {
                actor: d.actor.clone(),
                token: d.token_id.clone(),
                on_behalf_of: d.on_behalf_of.clone(),
                approve: d.approve,
                reason: d.reason.clone(),
                at: d.at,
            })
            .collect(),
        created_at: a.created_at,
        decided_at: a.decided_at,
        decided_by: a.decided_by.clone(),
        reason: a.reason.clone(),
    }
}

/// A checkpoint as the API gives it.
pub fn checkpoint(k: &CheckpointRecord) -> cairn_api::Checkpoint {
    cairn_api::Checkpoint {
        name: k.name.clone(),
        instance: k.instance_id.clone(),
        version: k.version,
        seq: k.seq,
        configuration: k.configuration.clone(),
        context: k.context.clone(),
        status: k.status.as_str().to_string(),
        created_at: k.created_at,
    }
}

/// A timer as the API gives it.
pub fn timer(t: &TimerRecord) -> cairn_api::Timer {
    cairn_api::Timer {
        event: t.event.clone(),
        state: t.state.clone(),
        due_at: t.due_at,
    }
}

/// A task as the API gives it.
pub fn task(t: &cairn_store::TaskRecord) -> cairn_api::Task {
    cairn_api::Task {
        id: t.id.clone(),
        namespace: t.namespace.clone(),
        instance: t.instance_id.clone(),
        state: t.state.clone(),
        queue: t.queue.clone(),
        action: t.action.clone(),
        input: t.input.clone(),
        status: t.status.as_str().to_string(),
        attempt: t.attempt,
        available_at: t.available_at,
        lease_owner: t.lease_owner.clone(),
        lease_expires_at: t.lease_expires_at,
        output: t.output.clone(),
        error: t.error.clone(),
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

/// A task attempt as the API gives it.
pub fn attempt(a: &cairn_store::AttemptRecord) -> cairn_api::Attempt {
    cairn_api::Attempt {
        attempt: a.attempt,
        worker: a.worker.clone(),
        started_at: a.started_at,
        ended_at: a.ended_at,
        outcome: a.outcome.clone(),
        error: a.error.clone(),
        duration_ms: a.ended_at.map(|e| (e - a.started_at).num_milliseconds()),
        tokens: a.tokens,
        cost: a.cost,
    }
}

/// A token as the API gives it (never its hash).
pub fn token(t: &TokenRecord) -> cairn_api::Token {
    cairn_api::Token {
        id: t.id.clone(),
        name: t.name.clone(),
        subject: t.subject.clone(),
        role: t.role.clone(),
        namespaces: t.namespaces.clone(),
        created_at: t.created_at,
        revoked_at: t.revoked_at,
    }
}

/// A validation finding (an error or a warning) as the API gives it.
pub fn finding(d: &cairn_core::Diagnostic) -> cairn_api::Finding {
    cairn_api::Finding {
        kind: d.kind.code().to_string(),
        severity: d.severity.as_str().to_string(),
        file: d.file.clone(),
        line: d.pos.line,
        column: d.pos.col,
        state: d.state.clone(),
        message: d.message.clone(),
    }
}
