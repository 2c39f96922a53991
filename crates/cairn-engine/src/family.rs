//! The instance's family as a unit reaches it: [`Tree`] implements `unit::Family` with
//! `children.rs` and `maps.rs`, the one place that names both the files that apply a step
//! and the files that start children. `engine.rs` gives it to every unit it builds.

use cairn_core::Effect;
use cairn_store::InstanceRecord;
use chrono::{DateTime, Utc};

use crate::machines::Machines;
use crate::unit::{Family, Unit};
use crate::{Error, children, maps};

/// Children and map items, started and ended in the unit that asks.
pub(crate) struct Tree;

impl Family for Tree {
    fn carry(
        &self,
        tx: &mut Unit<'_>,
        machines: &Machines,
        inst: &InstanceRecord,
        effect: &Effect,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        match effect {
            Effect::Spawn {
                state,
                machine,
                id,
                input,
            } => children::spawn(
                tx,
                machines,
                inst,
                state.as_deref(),
                machine,
                id.as_deref(),
                input,
                now,
            ),
            Effect::CancelSpawn { state } => {
                self.end_children(tx, machines, inst, Some(state), now)
            }
            Effect::StartMap {
                state,
                machine,
                items,
                concurrency,
                fail_fast,
            } => maps::start(
                tx,
                machines,
                inst,
                state,
                machine,
                items,
                *concurrency,
                *fail_fast,
                now,
            ),
            _ => Ok(()),
        }
    }

    fn end_children(
        &self,
        tx: &mut Unit<'_>,
        machines: &Machines,
        inst: &InstanceRecord,
        state: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        maps::forget(tx, inst, state)?;
        children::cancel(tx, machines, inst, state, now)
    }
}
