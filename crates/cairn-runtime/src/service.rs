//! The one shape of the runtime's parts. A service is built from its options, runs on a
//! thread of its own until its [`Shutdown`] is triggered ([`Service::run`]), and is held
//! by a [`Running`] handle. Stopping is explicit: [`Running::stop`] triggers the shutdown
//! and waits for the service to return; a waiting service wakes at once, it does not
//! sleep out its interval. (Dropping a handle stops it too, so a forgotten handle never
//! leaves a thread behind.)

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A signal that tells services to stop. Cheap to clone; every clone sees one trigger.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<Signal>);

#[derive(Default)]
struct Signal {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Tells every holder to stop, and wakes those waiting in [`Shutdown::wait`].
    pub fn trigger(&self) {
        *self.0.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.changed.notify_all();
    }

    /// Whether the signal was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` for the trigger; returns whether it came.
    pub fn wait(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut stopped = self.0.stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stopped = match self.0.changed.wait_timeout(stopped, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        *stopped
    }
}

/// A part of the runtime: runs until its shutdown is triggered.
pub trait Service: Send + 'static {
    /// The name of the thread it runs on (`cairn-timers`, ...).
    fn name(&self) -> String;

    /// Runs until `shutdown` is triggered, then returns.
    fn run(self, shutdown: Shutdown);
}

/// Runs `tick` until `shutdown` is triggered: at once again when it found work (returned
/// `true`), after `idle` (or the trigger) when it did not.
pub fn every(shutdown: &Shutdown, idle: Duration, mut tick: impl FnMut() -> bool) {
    while !shutdown.is_triggered() {
        if !tick() && shutdown.wait(idle) {
            break;
        }
    }
}

/// A service that runs a closure every `idle` (see [`every`]): for small loops (measuring
/// a clock, a benchmark's background load) that need no type of their own.
pub struct Periodic<F> {
    name: String,
    idle: Duration,
    tick: F,
}

impl<F: FnMut() -> bool + Send + 'static> Periodic<F> {
    /// A loop named `name` running `tick`.
    pub fn new(name: &str, idle: Duration, tick: F) -> Periodic<F> {
        Periodic {
            name: name.to_string(),
            idle,
            tick,
        }
    }
}

impl<F: FnMut() -> bool + Send + 'static> Service for Periodic<F> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(self, shutdown: Shutdown) {
        every(&shutdown, self.idle, self.tick)
    }
}

/// The handle of a running service.
pub struct Running {
    name: String,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts `service` on a thread of its own.
    pub fn spawn<S: Service>(service: S) -> std::io::Result<Running> {
        let (name, shutdown) = (service.name(), Shutdown::new());
        let signal = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || service.run(signal))?;
        Ok(Running {
            name,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the service to stop without waiting for it (see [`Running::stop`]).
    pub fn trigger(&self) {
        self.shutdown.trigger();
    }

    /// Stops the service and waits until it has returned.
    pub fn stop(mut self) {
        self.join();
    }

    fn join(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!(service = %self.name, "the service panicked");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn stop_wakes_a_waiting_service_at_once() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&ticks);
        let running = Running::spawn(Periodic::new(
            "test",
            Duration::from_secs(3600),
            move || {
                seen.fetch_add(1, Ordering::SeqCst);
                false
            },
        ))
        .unwrap();
        while ticks.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let started = Instant::now();
        running.stop();
        // An hour's idle wait ends with the trigger, not the hour.
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(ticks.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_busy_service_ticks_again_at_once_and_stops_between_ticks() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&ticks);
        let running = Running::spawn(Periodic::new(
            "busy",
            Duration::from_secs(3600),
            move || {
                seen.fetch_add(1, Ordering::SeqCst);
                true
            },
        ))
        .unwrap();
        while ticks.load(Ordering::SeqCst) < 100 {
            std::thread::yield_now();
        }
        running.stop();
        let after = ticks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(ticks.load(Ordering::SeqCst), after);
    }
}
