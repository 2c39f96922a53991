//! What this process's engine did, counted as its units commit, for `/metrics`: events
//! applied and refused, how long units took to commit, and task attempts ended by
//! namespace, queue and outcome. Counters of a process (each node has its own, as
//! Prometheus expects); what is stored (instances by status, queue depth, timers, the
//! outbox) are the store's figures instead, the same on every node.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit latency histogram, in seconds.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What this process's units did once they committed, for `/metrics`: events applied and refused, commit latency, task attempts ended.
#[derive(Default)]
pub struct Counters {
    transitions: AtomicU64,
    refused: AtomicU64,
    /// Units that committed, by latency bucket (the last one: beyond every bound).
    commits: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    commit_micros: AtomicU64,
    /// (namespace, queue, outcome) -> attempts ended.
    attempts: Mutex<BTreeMap<(String, String, String), u64>>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CountersSnapshot {
    /// Events applied (starts included) and committed.
    pub transitions: u64,
    /// Events refused: not accepted, a guard that failed to evaluate, a limit.
    pub refused: u64,
    /// Committed units per latency bucket (cumulative, as Prometheus has it), the last
    /// for `+Inf`.
    pub commit_buckets: Vec<u64>,
    /// The sum of the commit latencies, in seconds.
    pub commit_seconds: f64,
    /// (namespace, queue, outcome) -> task attempts ended.
    pub attempts: BTreeMap<(String, String, String), u64>,
}

impl Counters {
    pub(crate) fn committed(&self, took: Duration, applied: u64) {
        let s = took.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.commits[i].fetch_add(1, Ordering::Relaxed);
        self.commit_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.transitions.fetch_add(applied, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn attempts_ended(&self, ended: Vec<(String, String, String)>) {
        if ended.is_empty() {
            return;
        }
        if let Ok(mut a) = self.attempts.lock() {
            for key in ended {
                *a.entry(key).or_default() += 1;
            }
        }
    }

    /// A copy of the counters as they are now.
    pub fn snapshot(&self) -> CountersSnapshot {
        let mut cumulative = 0;
        let commit_buckets = self
            .commits
            .iter()
            .map(|c| {
                cumulative += c.load(Ordering::Relaxed);
                cumulative
            })
            .collect();
        CountersSnapshot {
            transitions: self.transitions.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            commit_buckets,
            commit_seconds: self.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
            attempts: self.attempts.lock().map(|a| a.clone()).unwrap_or_default(),
        }
    }
}
