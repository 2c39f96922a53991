//! Time for the engine: the system clock in production, a manual clock in tests so that
//! nothing time-dependent ever sleeps. Times are truncated to microseconds, the precision
//! history keeps, so that replaying history sees exactly the `now` the step saw.

use std::sync::Mutex;

use chrono::{DateTime, SubsecRound, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock(Mutex::new(start.trunc_subsecs(6)))
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().expect("clock lock");
        *t = (*t + by).trunc_subsecs(6);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// A background thread that runs `tick` every `every` until dropped: the one shape of the
/// engine's runtime parts (the timer service, in-process workers).
pub struct Background {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// `tick` returns whether it found work; an idle tick waits `every` before the next.
    pub fn spawn(
        name: &str,
        every: std::time::Duration,
        mut tick: impl FnMut() -> bool + Send + 'static,
    ) -> Background {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if !tick() {
                        std::thread::park_timeout(every);
                    }
                }
            })
            .ok();
        Background { stop, thread }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
