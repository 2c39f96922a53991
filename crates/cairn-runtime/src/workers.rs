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
    /// How many tasks its handlers run at once: the handler is called on that many
    /// threads, and the worker holds no more claimed tasks than that (backpressure: it
    /// claims again as handlers free up). Agent calls wait on I/O, hence the default.
    pub concurrency: usize,
}

impl WorkerOptions {
    /// A worker named `name` on `queues`, polling every 50 ms, 16 tasks a claim, 32
    /// handlers at once.
    pub fn new(name: &str, queues: Vec<String>) -> WorkerOptions {
        WorkerOptions {
            queues,
            name: name.to_string(),
            poll: Duration::from_millis(50),
            batch: 16,
            concurrency: 32,
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
        let o = &self.options;
        let concurrency = o.concurrency.max(1);
        // Tasks in hand (claimed, not yet reported), and a signal when one is reported.
        let in_hand = std::sync::Mutex::new(0usize);
        let freed = std::sync::Condvar::new();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Claimed>(concurrency);
        let rx = std::sync::Mutex::new(rx);
        std::thread::scope(|s| {
            for _ in 0..concurrency {
                s.spawn(|| {
                    loop {
                        let next = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(task) = next else { return };
                        self.report(&task);
                        if let Ok(mut n) = in_hand.lock() {
                            *n -= 1;
                        }
                        freed.notify_one();
                    }
                });
            }
            self.claim_loop(&shutdown, concurrency, &in_hand, &freed, &tx);
            // Stopped: no more claims; the handlers finish what they hold, then end.
            drop(tx);
        });
    }
}

impl<S: Store + Send + Sync + 'static> WorkerService<S> {
    /// Claims while not stopped, never holding more than `concurrency` tasks, and hands
    /// each claimed task to the handlers.
    fn claim_loop(
        &self,
        shutdown: &Shutdown,
        concurrency: usize,
        in_hand: &std::sync::Mutex<usize>,
        freed: &std::sync::Condvar,
        tx: &std::sync::mpsc::SyncSender<Claimed>,
    ) {
        let (engine, o) = (&self.engine, &self.options);
        while !shutdown.is_triggered() {
            // Room for how many more: wait (briefly, to see a stop) while none.
            let room = match in_hand.lock() {
                Ok(n) if *n >= concurrency => {
                    let _ = freed.wait_timeout(n, o.poll);
                    continue;
                }
                Ok(n) => concurrency - *n,
                Err(_) => return,
            };
            let claimed = match engine.claim(&o.queues, &o.name, o.batch.min(room), DEFAULT_LEASE) {
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
            if let Ok(mut n) = in_hand.lock() {
                *n += claimed.len();
            }
            for task in claimed {
                if tx.send(task).is_err() {
                    return;
                }
            }
        }
    }

    /// Runs the handler on one task and reports its result.
    fn report(&self, task: &Claimed) {
        let engine = &self.engine;
        // A handler that panics fails its attempt (retryable), never the worker.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.handler)(task)))
                .unwrap_or_else(|_| {
                    Err(TaskError {
                        message: "the handler panicked".into(),
                        retryable: true,
                    })
                });
        let reported = match result {
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
        // A stale report (reclaimed or cancelled meanwhile) changes nothing; any other
        // error leaves the lease to expire, and the attempt is retried.
        if let Err(e) = reported {
            tracing::debug!(task = %task.id, attempt = task.attempt, error = %e, "report not taken");
        }
    }
}
