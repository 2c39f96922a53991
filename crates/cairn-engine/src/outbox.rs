//! The transactional outbox, delivered: what a unit wrote for another instance (a
//! child's outcome, a trigger's start or send, an instance's `send`, a map's end) is
//! applied after that unit commits, one entry per unit, in the unit that deletes it, so
//! each is applied once and a failure downstream never rolls back its source.
//! `Engine::drain_outbox` loops over [`deliver_oldest`].

use cairn_core::{Event, Rejection, Status};
use cairn_store::OutboxRecord;
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::machines::Machines;
use crate::unit::{self, Unit, UnitError};
use crate::{Actor, Error};

/// Takes the oldest entry and delivers it in this unit; `None` when the outbox is empty.
/// A delivery that fails (or panics) fails with its entry, so that exactly that one is
/// dropped (with several nodes draining, the oldest entry may be another's by then).
pub(crate) fn deliver_oldest(
    tx: &mut Unit<'_>,
    machines: &Machines,
    now: DateTime<Utc>,
) -> Result<Option<i64>, Delivery> {
    let Some(e) = tx.outbox(1)?.pop() else {
        return Ok(None);
    };
    tx.delete_outbox(e.seq)?;
    let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        deliver(tx, machines, &e, now)
    }))
    .unwrap_or_else(|_| {
        Err(Error::Refused(Rejection::Internal(
            "delivering an outbox entry panicked".into(),
        )))
    });
    match delivered {
        Ok(()) => Ok(Some(e.seq)),
        Err(Error::Store(s)) => Err(Delivery::Unit(Error::Store(s))),
        Err(err) => Err(Delivery::Failed(Box::new(e), err)),
    }
}

/// Delivers one outbox entry: applied if the receiver runs, queued if it is paused,
/// dropped (and logged) if it is gone or finished, or takes no such event at all. A
/// receiver whose machine fails on it goes to `failed`.
fn deliver(
    tx: &mut Unit<'_>,
    machines: &Machines,
    e: &OutboxRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    // What this delivery sets off (the receiver's own triggers) counts one hop more.
    tx.at_hops(e.hops, |tx| deliver_entry(tx, machines, e, now))
}

fn deliver_entry(
    tx: &mut Unit<'_>,
    machines: &Machines,
    e: &OutboxRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    if e.kind == "start" {
        // Deduplicated on arrival: an instance with this id exists already.
        if tx.instance(&e.namespace, &e.instance_id)?.is_some() {
            return Ok(());
        }
        let refuse = |m: String| Error::Invalid(format!("{}: {m}", e.source));
        crate::start::in_unit(
            tx,
            machines,
            &e.namespace,
            &e.event,
            &e.instance_id,
            &e.payload,
            None,
            &e.actor,
            now,
            &refuse,
        )?;
        return Ok(());
    }
    let Some(mut inst) = tx.instance(&e.namespace, &e.instance_id)? else {
        return Ok(());
    };

    // A child's outcome reaches the state that spawned it (its payload names it).
    let to = (e.kind == "system" && e.event.starts_with("child."))
        .then(|| e.payload["state"].as_str().map(str::to_string))
        .flatten();
    let event = Event {
        name: e.event.clone(),
        payload: e.payload.clone(),
        actor: e.actor.clone(),
        reason: e.reason.clone(),
        to,
    };
    if inst.status.is_finished() {
        return unit::log(
            tx,
            &inst,
            "outbox_dropped",
            json!({"event": e.event, "source": e.source, "status": inst.status}),
            now,
        );
    }
    // A map state's child: its item moves on (and the map reports when it is done).
    if e.kind == "system"
        && e.event.starts_with("child.")
        && crate::maps::child_finished(tx, machines, &mut inst, &event, now)?
    {
        return Ok(());
    }
    if inst.status == Status::Paused {
        return unit::queue_event(tx, &inst, &event, &Actor::default(), None, now);
    }
    match crate::apply::apply_event(
        tx,
        machines,
        &mut inst,
        &event,
        &Actor::default(),
        None,
        now,
    ) {
        Ok(_) => Ok(()),
        // An ordinary event a trigger sent is refused like a client's: nothing changes.
        Err(Error::Refused(r)) if e.kind != "system" => unit::log(
            tx,
            &inst,
            "outbox_refused",
            json!({"event": e.event, "source": e.source, "reason": r.to_string()}),
            now,
        ),
        Err(Error::Refused(Rejection::NotAccepted { .. })) => unit::log(
            tx,
            &inst,
            "outbox_unhandled",
            json!({"event": e.event, "source": e.source}),
            now,
        ),
        Err(Error::Refused(r)) => crate::apply::fail_instance(
            tx,
            machines,
            &mut inst,
            &format!("`{}` could not be applied: {r}", e.event),
            now,
        ),
        Err(e) => Err(e),
    }
}

/// How an outbox unit failed: the unit itself (storage), or one entry's delivery, with the
/// entry.
pub(crate) enum Delivery {
    /// The unit itself failed (storage): nothing was delivered or dropped.
    Unit(Error),
    /// Delivering this entry failed: it is dropped and logged.
    Failed(Box<cairn_store::OutboxRecord>, Error),
}

impl From<Error> for Delivery {
    fn from(e: Error) -> Delivery {
        Delivery::Unit(e)
    }
}

impl From<cairn_store::Error> for Delivery {
    fn from(e: cairn_store::Error) -> Delivery {
        Delivery::Unit(Error::Store(e))
    }
}

impl UnitError for Delivery {
    fn refused(&self) -> bool {
        matches!(
            self,
            Delivery::Unit(Error::Refused(_)) | Delivery::Failed(_, Error::Refused(_))
        )
    }
}
