//! Triggers between machines: when an instance of machine A enters a state (or one of its
//! descendants) or reaches a status, and a CEL condition on it holds, start an instance
//! of B or send an event to an instance.
//!
//! A trigger fires inside the source's unit of work, but only writes an outbox entry: the
//! start or the send happens after commit, in the unit that delivers (and deletes) the
//! entry, so it happens once and a failure downstream never rolls back the source. A
//! condition or expression that fails is logged on the source (`trigger_failed`) and
//! changes nothing. Each entry counts the triggers that led to it; a chain longer than
//! [`MAX_HOPS`] stops (`trigger_loop_stopped`), so triggers that feed each other end.

use cairn_core::Status;
use cairn_core::expr::{self, Compiled, Scope};
use cairn_core::step::Microstep;
use cairn_store::{InstanceRecord, OutboxRecord};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::Error;
use crate::armed::{Armed, MAX_HOPS, matches};
use crate::machines::Machines;
use crate::unit::{self, Unit};

/// Fires the triggers of `inst`'s machine that match the states just entered or the status
/// it just ended with: each writes an outbox entry. Never fails the source for a trigger's
/// own problem; those are logged.
pub(crate) fn fire(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    microsteps: &[Microstep],
    ended: Option<Status>,
    event: impl FnOnce() -> Value,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let all = machines.triggers.of(&mut **tx, &inst.namespace)?;
    if !all.iter().any(|t| t.def.machine == inst.machine) {
        return Ok(());
    }
    let event = &event();
    let entered: Vec<&str> = microsteps
        .iter()
        .flat_map(|m| m.entered.iter().map(String::as_str))
        .collect();
    for t in all.iter().filter(|t| t.def.machine == inst.machine) {
        if !matches(t, &entered, ended) {
            continue;
        }
        let name = &t.def.name;
        // A trigger that panics fails like one whose expression fails: logged, alone.
        let acted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            action(t, inst, event, now, &machines.limits)
        }))
        .unwrap_or_else(|_| Err("evaluating the trigger failed inside Cairn (a panic)".into()));
        match acted {
            Ok(None) => {}
            Ok(Some(mut entry)) => {
                let hops = tx.next_hop();
                if hops > MAX_HOPS {
                    unit::log(
                        tx,
                        inst,
                        "trigger_loop_stopped",
                        json!({"trigger": name, "hops": hops}),
                        now,
                    )?;
                    continue;
                }
                entry.hops = hops;
                tx.push_outbox(&entry)?;
                unit::log(
                    tx,
                    inst,
                    "trigger_fired",
                    json!({"trigger": name, "kind": entry.kind, "target": entry.instance_id}),
                    now,
                )?;
            }
            Err(why) => unit::log(
                tx,
                inst,
                "trigger_failed",
                json!({"trigger": name, "error": why}),
                now,
            )?,
        }
    }
    Ok(())
}

/// The entry a matching trigger writes, or `None` when its condition does not hold.
fn action(
    t: &Armed,
    inst: &InstanceRecord,
    event: &Value,
    now: DateTime<Utc>,
    limits: &cairn_core::Limits,
) -> Result<Option<OutboxRecord>, String> {
    let instance = unit::instance_env(inst);
    let records = json!({});
    let budget = expr::budget(limits);
    let mut scope = Scope::new(&expr::standard_env(), &budget);
    scope.set_json("context", &inst.context);
    scope.set_json("event", event);
    scope.set_json("instance", &instance);
    scope.set_json("records", &records);
    scope.set_time("now", now);
    if let Some(w) = &t.when
        && !scope.eval_bool(w).map_err(|e| format!("`when`: {e}"))?
    {
        return Ok(None);
    }
    let text = |what: &str, c: &Compiled| -> Result<String, String> {
        match scope.eval(c).map_err(|e| format!("`{what}`: {e}"))? {
            Value::String(s) if !s.is_empty() => Ok(s),
            other => Err(format!(
                "`{what}` must yield a non-empty string, yielded {other}"
            )),
        }
    };
    let value = |what: &str, c: &Option<Compiled>| -> Result<Value, String> {
        match c {
            None => Ok(json!({})),
            Some(c) => scope.eval(c).map_err(|e| format!("`{what}`: {e}")),
        }
    };
    let base = |kind: &str, instance_id: String, event: String, payload: Value| OutboxRecord {
        seq: 0,
        kind: kind.into(),
        hops: 0,
        namespace: inst.namespace.clone(),
        instance_id,
        event,
        payload,
        actor: format!("trigger:{}", t.def.name),
        reason: String::new(),
        source: format!("trigger:{}:{}", t.def.name, inst.id),
        created_at: now,
    };
    if let Some(st) = &t.def.start {
        let id = match &t.id {
            Some(c) => text("start.id", c)?,
            None => uuid::Uuid::now_v7().to_string(),
        };
        crate::ids::check_id(&id).map_err(|e| e.to_string())?;
        let input = value("start.input", &t.input)?;
        return Ok(Some(base("start", id, st.machine.clone(), input)));
    }
    let se = t.def.send.as_ref().expect("a trigger starts or sends");
    let to = text("send.to", t.to.as_ref().expect("compiled with send"))?;
    let payload = value("send.payload", &t.payload)?;
    Ok(Some(base("event", to, se.event.clone(), payload)))
}

/// Fires the triggers that wait for the status the instance now has.
pub(crate) fn fire_status(
    tx: &mut Unit<'_>,
    machines: &Machines,
    inst: &InstanceRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    fire(
        tx,
        machines,
        inst,
        &[],
        Some(inst.status),
        || unit::start_event(&Value::Null),
        now,
    )
}
