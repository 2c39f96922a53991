//! In-process workers for embedding programs: a handler (a Rust function) takes the tasks
//! of its queues, and its result completes or fails each attempt.

use std::sync::Arc;
use std::time::Duration;

use cairn_engine::{Batch, Claimed, DEFAULT_LEASE, Engine, NextClaim, Outcome, Report, Usage};
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
    /// claims again as handlers free up, in the unit that reports their outcomes). Agent
    /// calls wait on I/O, hence the default.
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

/// What reaches the worker's reporting loop: a handler's outcome, or a sign that tasks
/// may have been enqueued.
enum Msg {
    Done(Outcome),
    Wake,
}

impl<S: Store + Send + Sync + 'static> Service for WorkerService<S> {
    fn name(&self) -> String {
        format!("cairn-worker-{}", self.options.name)
    }

    fn run(self, shutdown: Shutdown) {
        let concurrency = self.options.concurrency.max(1);
        let (to_handlers, tasks) = std::sync::mpsc::sync_channel::<Claimed>(concurrency);
        let tasks = std::sync::Mutex::new(tasks);
        let (msgs, inbox) = std::sync::mpsc::channel::<Msg>();
        let this = &self;
        std::thread::scope(|s| {
            for _ in 0..concurrency {
                let msgs = msgs.clone();
                let tasks = &tasks;
                s.spawn(move || {
                    loop {
                        let next = match tasks.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(task) = next else { return };
                        if msgs.send(Msg::Done(this.handle(&task))).is_err() {
                            return;
                        }
                    }
                });
            }
            // Wakes the loop when a unit enqueues tasks (and every `poll` anyway).
            let waker = msgs;
            let (engine, poll, stop) = (&this.engine, this.options.poll, &shutdown);
            s.spawn(move || {
                while !stop.is_triggered() {
                    engine.tasks_ready().wait(poll);
                    if waker.send(Msg::Wake).is_err() {
                        return;
                    }
                }
            });
            let left = this.report_loop(&shutdown, concurrency, &inbox, &to_handlers);
            // Stopped: no more claims; the handlers finish what they hold, and their
            // outcomes are reported in one last batch.
            drop(to_handlers);
            let mut last = left;
            for m in inbox.iter() {
                if let Msg::Done(o) = m {
                    last.push(o);
                }
            }
            if !last.is_empty() {
                this.report(last, None);
            }
        });
    }
}

impl<S: Store + Send + Sync + 'static> WorkerService<S> {
    /// Reports what the handlers finished and claims as many tasks as they have room
    /// for, in one unit of work each round, until stopped. Returns outcomes not reported
    /// yet.
    fn report_loop(
        &self,
        shutdown: &Shutdown,
        concurrency: usize,
        inbox: &std::sync::mpsc::Receiver<Msg>,
        to_handlers: &std::sync::mpsc::SyncSender<Claimed>,
    ) -> Vec<Outcome> {
        let o = &self.options;
        let mut in_hand = 0usize;
        let mut idle = false;
        let mut outcomes: Vec<Outcome> = Vec::new();
        while !shutdown.is_triggered() {
            // Full, or nothing to claim: wait for an outcome or a wake.
            if outcomes.is_empty() && (in_hand == concurrency || idle) {
                match inbox.recv_timeout(o.poll) {
                    Ok(Msg::Done(d)) => outcomes.push(d),
                    Ok(Msg::Wake) => idle = false,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => idle = false,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            for m in inbox.try_iter() {
                match m {
                    Msg::Done(d) => outcomes.push(d),
                    Msg::Wake => idle = false,
                }
            }
            let room = concurrency - (in_hand - outcomes.len().min(in_hand));
            if outcomes.is_empty() && (room == 0 || idle) {
                continue;
            }
            let reported = outcomes.len();
            let claim = (room > 0).then(|| NextClaim {
                queues: o.queues.clone(),
                worker: o.name.clone(),
                batch: room.min(o.batch.max(1)),
                lease: DEFAULT_LEASE,
            });
            match self.report(std::mem::take(&mut outcomes), claim) {
                Some(claimed) => {
                    in_hand -= reported.min(in_hand);
                    idle = claimed.is_empty();
                    in_hand += claimed.len();
                    for task in claimed {
                        if to_handlers.send(task).is_err() {
                            return Vec::new();
                        }
                    }
                }
                None => {
                    // The unit failed: those attempts run out their leases and are retried.
                    in_hand -= reported.min(in_hand);
                    shutdown.wait(o.poll);
                }
            }
        }
        outcomes
    }

    /// Reports `outcomes` and claims, in one unit; `None` when the unit failed (the
    /// outcomes' attempts then run out their leases and are retried).
    fn report(&self, outcomes: Vec<Outcome>, claim: Option<NextClaim>) -> Option<Vec<Claimed>> {
        let name = &self.options.name;
        let batch = Batch {
            outcomes,
            claim,
            ..Default::default()
        };
        match self.engine.report(batch) {
            Ok(r) => {
                // A stale outcome (reclaimed or cancelled meanwhile) changes nothing.
                for o in r.outcomes {
                    if let Err(e) = o.result {
                        tracing::debug!(worker = %name, task = %o.task, attempt = o.attempt, error = %e, "outcome not taken");
                    }
                }
                Some(r.claimed)
            }
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, "reporting failed");
                None
            }
        }
    }

    /// Runs the handler on one task: its outcome.
    fn handle(&self, task: &Claimed) -> Outcome {
        // A handler that panics fails its attempt (retryable), never the worker.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.handler)(task)))
                .unwrap_or_else(|_| {
                    Err(TaskError {
                        message: "the handler panicked".into(),
                        retryable: true,
                    })
                });
        let report = match result {
            Ok(output) => Report::Completed { output },
            Err(e) => Report::Failed {
                error: e.message,
                retryable: e.retryable,
                details: Value::Null,
            },
        };
        Outcome {
            task: task.id.clone(),
            attempt: task.attempt,
            report,
            usage: Usage::default(),
        }
    }
}
