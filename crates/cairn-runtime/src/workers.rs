//! In-process workers for embedding programs: a handler (a Rust function) takes the tasks
//! of its queues, and its result completes or fails each attempt.

use std::sync::Arc;
use std::time::Duration;

use cairn_engine::{Claimed, DEFAULT_LEASE, Engine, Usage};
use cairn_store::Store;
use serde_json::Value;

use crate::service::{Service, Shutdown};

/// Why an in-process handler failed.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskError {
    /// What went wrong, recorded on the attempt.
    pub message: String,
    /// Whether another attempt may succeed (the task's retry policy then applies).
    pub retryable: bool,
}

/// An in-process handler: gets a claimed task, returns its output.
pub type Handler = Arc<dyn Fn(&Claimed) -> Result<Value, TaskError> + Send + Sync>;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The queues it takes tasks from.
    pub queues: Vec<String>,
    /// Its name, recorded on every attempt.
    pub name: String,
    /// How long it waits for a task before reading the store again (a unit that enqueues
    /// tasks wakes it sooner).
    pub poll: Duration,
    /// How many tasks it claims at once.
    pub batch: usize,
}

impl WorkerOptions {
    /// A worker named `name` on `queues`, polling every 50 ms, 16 tasks a claim.
    pub fn new(name: &str, queues: Vec<String>) -> WorkerOptions {
        WorkerOptions {
            queues,
            name: name.to_string(),
            poll: Duration::from_millis(50),
            batch: 16,
        }
    }
}

/// Claims tasks of its queues and completes or fails them with the handler's result,
/// until stopped.
pub struct WorkerService<S: Store> {
    engine: Engine<S>,
    options: WorkerOptions,
    handler: Handler,
}

impl<S: Store + Send + Sync + 'static> WorkerService<S> {
    /// A worker on `engine` running `handler`.
    pub fn new(engine: Engine<S>, options: WorkerOptions, handler: Handler) -> WorkerService<S> {
        WorkerService {
            engine,
            options,
            handler,
        }
    }
}

impl<S: Store + Send + Sync + 'static> Service for WorkerService<S> {
    fn name(&self) -> String {
        format!("cairn-worker-{}", self.options.name)
    }

    fn run(self, shutdown: Shutdown) {
        let (engine, o) = (&self.engine, &self.options);
        while !shutdown.is_triggered() {
            let claimed = match engine.claim(&o.queues, &o.name, o.batch, DEFAULT_LEASE) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(worker = %o.name, error = %e, "claiming failed");
                    shutdown.wait(o.poll);
                    continue;
                }
            };
            if claimed.is_empty() {
                // Woken as soon as a unit that enqueues tasks commits.
                engine.tasks_ready().wait(o.poll);
                continue;
            }
            for task in claimed {
                let reported = match (self.handler)(&task) {
                    Ok(output) => engine
                        .complete(&task.id, task.attempt, output, Usage::default())
                        .map(|_| ()),
                    Err(e) => engine
                        .fail(
                            &task.id,
                            task.attempt,
                            &e.message,
                            e.retryable,
                            Usage::default(),
                        )
                        .map(|_| ()),
                };
                // A stale report (reclaimed or cancelled meanwhile) changes nothing; any
                // other error leaves the lease to expire, and the attempt is retried.
                if let Err(e) = reported {
                    tracing::debug!(task = %task.id, attempt = task.attempt, error = %e, "report not taken");
                }
            }
        }
    }
}
