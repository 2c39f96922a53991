//! Child instances and the outbox that carries their outcome to the parent.
//!
//! A `spawn` (a state's, or an action's) starts the child in the parent's own unit of work:
//! the child exists exactly when the parent's transition does. The child is linked to its
//! parent (`parent`, and a `children` record naming the spawning state). When the child
//! finishes, `child.done` (completed) or `child.failed` (failed or cancelled) is written to
//! the transactional outbox in the child's unit (`apply.rs`), and delivered to the parent
//! after commit (`outbox.rs`): the entry is deleted in the unit that applies it, so it is
//! applied once, and a failure in the parent never rolls back the child.
//!
//! The tree moves together: leaving the spawning state cancels that state's children; a
//! parent that finishes cancels the children still running (here, reached through
//! `unit::Family`); pause and resume cascade down too (`lifecycle/status.rs`). A child
//! cancelled by its parent does not report back.

use cairn_core::{Rejection, Status};
use cairn_store::{ChildRecord, HistoryKind, InstanceRecord};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::machines::Machines;
use crate::unit::{self, Unit};
use crate::{Actor, Error};

/// How deep children may nest (a machine that spawns itself stops here).
pub const MAX_DEPTH: u32 = 16;

fn depth_of(tx: &mut Unit<'_>, inst: &InstanceRecord) -> Result<u32, Error> {
    let mut depth = 0;
    let mut parent = inst.parent.clone();
    while let Some(p) = parent {
        depth += 1;
        if depth > MAX_DEPTH {
            break;
        }
        parent = tx.instance(&inst.namespace, &p)?.and_then(|i| i.parent);
    }
    Ok(depth)
}

/// Starts a child of `parent` inside the current unit, from `state` (`None`: an action).
/// A problem (unknown machine, an id in use, bad input, too deep) refuses the parent's
/// event, so nothing of it is written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    tx: &mut Unit<'_>,
    machines: &Machines,
    parent: &InstanceRecord,
    state: Option<&str>,
    machine: &str,
    id: Option<&str>,
    input: &Value,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let refuse = |message: String| {
        Error::Refused(Rejection::Action {
            state: state.unwrap_or_default().to_string(),
            what: format!("spawn `{machine}`"),
            message,
        })
    };
    if depth_of(tx, parent)? >= MAX_DEPTH {
        return Err(refuse(format!("children nest at most {MAX_DEPTH} deep")));
    }
    let id = match id {
        Some(id) => id.to_string(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let child = crate::start::in_unit(
        tx,
        machines,
        &parent.namespace,
        machine,
        &id,
        input,
        Some(parent),
        &format!("instance:{}", parent.id),
        now,
        &refuse,
    )?;
    tx.insert_child(&ChildRecord {
        namespace: parent.namespace.clone(),
        parent_id: parent.id.clone(),
        child_id: id.clone(),
        state: state.map(str::to_string),
        created_at: now,
    })?;
    unit::log(
        tx,
        parent,
        "child_spawned",
        json!({"child": id, "machine": child.machine, "state": state}),
        now,
    )
}

/// Runs `f` on each child of `parent` (those started in `state` only, when given) that
/// still exists, in the order they were started.
pub(crate) fn each_child(
    tx: &mut Unit<'_>,
    parent: &InstanceRecord,
    state: Option<&str>,
    mut f: impl FnMut(&mut Unit<'_>, InstanceRecord) -> Result<(), Error>,
) -> Result<(), Error> {
    for link in tx.children(&parent.namespace, &parent.id)? {
        if state.is_some() && link.state.as_deref() != state {
            continue;
        }
        let Some(child) = tx.instance(&parent.namespace, &link.child_id)? else {
            continue;
        };
        f(tx, child)?;
    }
    Ok(())
}

/// Cancels the children of `parent` (those of `state` only, when given) and their
/// descendants, in this unit. Children already finished are left alone; a cancelled child
/// does not report to the parent that cancelled it.
pub(crate) fn cancel(
    tx: &mut Unit<'_>,
    machines: &Machines,
    parent: &InstanceRecord,
    state: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let actor = Actor::from(format!("instance:{}", parent.id));
    each_child(tx, parent, state, |tx, mut child| {
        if !matches!(child.status, Status::Running | Status::Paused) {
            return Ok(());
        }
        child.status = Status::Cancelled;
        let why = match state {
            Some(s) => format!("the parent left state `{s}`"),
            None => "the parent ended".to_string(),
        };
        unit::record_lifecycle(tx, &mut child, HistoryKind::Cancel, &actor, &why, now)?;
        // Silent: the parent cancelled it and does not hear back.
        crate::apply::finish_quietly(tx, machines, &child, now)
    })
}
