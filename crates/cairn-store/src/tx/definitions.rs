//! [`DefinitionsTx`]: machine versions, triggers and schedules: what instances run by.

use crate::*;

/// Machine versions, triggers and schedules: what instances run by. Part of [`Tx`], whose contract holds for every method.
pub trait DefinitionsTx {
    /// The machine `name` at `version`, or its latest version when `version` is `None`.
    ///
    /// # Contract
    /// A deleted version is not found. A version whose stored definition cannot be read
    /// back (stored by an older Cairn) comes back with `definition` null, never as an
    /// error, so it can be listed, reported and deleted.
    fn machine(
        &mut self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<MachineRecord>, Error>;
    /// Records a machine version.
    fn insert_machine(&mut self, record: &MachineRecord) -> Result<(), Error>;
    /// The highest version `name` ever had, deleted ones included: a version number is
    /// never given twice.
    fn max_machine_version(&mut self, namespace: &str, name: &str) -> Result<Option<u32>, Error>;
    /// Deletes one version: it is no longer found, its definition is dropped, and its
    /// number stays taken. Whether it existed (and was not deleted already).
    fn delete_machine(
        &mut self,
        namespace: &str,
        name: &str,
        version: u32,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, Error>;
    /// How many instances, in any status, run on this version.
    fn machine_in_use(&mut self, namespace: &str, name: &str, version: u32) -> Result<u64, Error>;

    /// Stores a trigger; a name in use in the namespace is a conflict.
    fn insert_trigger(&mut self, trigger: &TriggerRecord) -> Result<(), Error>;
    /// Removes a trigger; whether it existed.
    fn delete_trigger(&mut self, namespace: &str, name: &str) -> Result<bool, Error>;
    /// The namespace's triggers, by name.
    fn triggers(&mut self, namespace: &str) -> Result<Vec<TriggerRecord>, Error>;

    /// Stores a schedule; a name in use in the namespace is a conflict.
    fn insert_schedule(&mut self, schedule: &ScheduleRecord) -> Result<(), Error>;
    /// Removes a schedule; whether it existed.
    fn delete_schedule(&mut self, namespace: &str, name: &str) -> Result<bool, Error>;
    /// Schedules whose next tick is at or before `now`, earliest first.
    fn due_schedules(
        &mut self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, Error>;
    /// Moves a schedule's next tick (and its last, when it started an instance).
    ///
    /// # Contract
    /// Done in the unit that starts the tick's instance, so a tick runs once.
    fn update_schedule(&mut self, schedule: &ScheduleRecord) -> Result<(), Error>;
}
