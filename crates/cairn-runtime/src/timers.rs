//! The timer service: fires due timers and schedules, and delivers outbox entries a crash
//! left behind between a commit and its delivery. The rules (what a firing does) are the
//! engine's; this is the loop that asks for them.

use std::time::Duration;

use cairn_engine::Engine;
use cairn_store::Store;

use crate::service::{Service, Shutdown, every};

/// How the timer service runs.
#[derive(Clone, Debug)]
pub struct TimerOptions {
    /// How long an idle pass waits before looking again.
    pub every: Duration,
}

impl Default for TimerOptions {
    fn default() -> TimerOptions {
        TimerOptions {
            every: Duration::from_millis(100),
        }
    }
}

/// Fires `engine`'s due timers and schedules while it runs.
pub struct TimerService<S: Store> {
    engine: Engine<S>,
    options: TimerOptions,
}

impl<S: Store + Send + Sync + 'static> TimerService<S> {
    /// The service for `engine`.
    pub fn new(engine: Engine<S>, options: TimerOptions) -> TimerService<S> {
        TimerService { engine, options }
    }

    /// One pass; returns whether it fired anything (then the next pass comes at once:
    /// fired timers may set new ones due now).
    pub fn tick(&self) -> bool {
        let engine = &self.engine;
        // Outbox entries left by a crash between a commit and its delivery.
        if engine.store().outbox_waiting().unwrap_or(false)
            && let Err(e) = engine.drain_outbox()
        {
            tracing::warn!(error = %e, "delivering the outbox failed");
        }
        // Due schedules start their instances (through the outbox, drained at once).
        if let Err(e) = engine.fire_due_schedules() {
            tracing::warn!(error = %e, "firing schedules failed");
        }
        match engine.fire_due_timers() {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e, "firing timers failed");
                false
            }
        }
    }
}

impl<S: Store + Send + Sync + 'static> Service for TimerService<S> {
    fn name(&self) -> String {
        "cairn-timers".into()
    }

    fn run(self, shutdown: Shutdown) {
        every(&shutdown, self.options.every, || self.tick())
    }
}
