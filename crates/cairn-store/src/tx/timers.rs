//! [`TimersTx`]: timers.

use crate::*;

/// Timers. Part of [`Tx`], whose contract holds for every method.
pub trait TimersTx {
    /// Sets (or resets) the timer of `(namespace, instance_id, event)`.
    fn set_timer(&mut self, timer: &TimerRecord) -> Result<(), Error>;
    /// One timer of an instance by its event, if set.
    fn timer(
        &mut self,
        namespace: &str,
        instance_id: &str,
        event: &str,
    ) -> Result<Option<TimerRecord>, Error>;
    /// Removes one timer; whether it existed.
    ///
    /// # Contract
    /// Of two units removing the same timer, exactly one sees `true`: a timer fires once.
    fn delete_timer(
        &mut self,
        namespace: &str,
        instance_id: &str,
        event: &str,
    ) -> Result<bool, Error>;
    /// Removes every timer of the instance.
    fn delete_timers(&mut self, namespace: &str, instance_id: &str) -> Result<(), Error>;
    /// The instance's timers due at or before `now`, earliest first.
    fn due_timers_of(
        &mut self,
        namespace: &str,
        instance_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<TimerRecord>, Error>;
}
