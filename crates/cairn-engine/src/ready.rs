//! [`TasksReady`]: how task claims that found nothing learn that work may have arrived,
//! without polling the store in a loop. A unit that enqueued tasks signals its queues
//! once it has committed; another node's enqueues arrive as [`TasksReady::wake`] (from
//! PostgreSQL's notifications).

use std::collections::HashMap;
use std::sync::Mutex;

/// Wakes task claims waiting for work when a unit that enqueued tasks commits: async
/// waiters through `notify`, threads through the condvar.
#[derive(Default)]
pub struct TasksReady {
    pub notify: tokio::sync::Notify,
    generation: Mutex<u64>,
    cond: std::sync::Condvar,
    /// Units of this process that enqueued tasks, for telling other nodes.
    enqueued_here: std::sync::atomic::AtomicU64,
    /// Per queue, the units that enqueued there; with `any`, bumped by wakes whose queues
    /// are unknown (another node's), they make a claim's [`TasksReady::stamp`].
    queues: Mutex<HashMap<String, u64>>,
    any: std::sync::atomic::AtomicU64,
}

impl TasksReady {
    /// A unit of this process enqueued tasks on `queues`: wakes waiting claims, and those
    /// of other queues go back to waiting (see [`TasksReady::stamp`]).
    pub fn signal_queues(&self, queues: &[String]) {
        if let Ok(mut m) = self.queues.lock() {
            for q in queues {
                *m.entry(q.clone()).or_default() += 1;
            }
        }
        self.enqueued_here
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.wake_waiters();
    }

    /// Changes whenever tasks may have been enqueued on one of `queues`: a claim that
    /// found nothing looks again when this moves (or its poll interval passes), not at
    /// every wake.
    pub fn stamp(&self, queues: &[String]) -> u64 {
        let mine = self
            .queues
            .lock()
            .map(|m| queues.iter().filter_map(|q| m.get(q)).sum::<u64>())
            .unwrap_or(0);
        mine.wrapping_add(self.any.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// How many units of this process have enqueued tasks so far.
    pub fn enqueued_here(&self) -> u64 {
        self.enqueued_here
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Another node enqueued tasks, on queues unknown here: every waiting claim looks.
    pub fn wake(&self) {
        self.any.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.wake_waiters();
    }

    fn wake_waiters(&self) {
        self.notify.notify_waiters();
        if let Ok(mut g) = self.generation.lock() {
            *g += 1;
        }
        self.cond.notify_all();
    }

    /// Blocks until tasks may have been enqueued, or `timeout`.
    pub fn wait(&self, timeout: std::time::Duration) {
        if let Ok(g) = self.generation.lock() {
            let start = *g;
            let _ = self.cond.wait_timeout_while(g, timeout, |g| *g == start);
        }
    }
}
