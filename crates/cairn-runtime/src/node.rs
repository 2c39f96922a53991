//! A node: the services that run beside an engine in `cairn serve` (or in an embedding
//! program), started together and stopped together. On PostgreSQL a node also measures
//! the database's clock, and tells the other nodes what moved (`NOTIFY`) and listens for
//! theirs (`LISTEN`).

use std::sync::Arc;
use std::time::Duration;

use cairn_engine::Engine;
use cairn_store_any::{AnyStore, PgStore};

use crate::executors::ExecutorService;
use crate::retention::{RetentionOptions, RetentionService};
use crate::service::{Periodic, Running, Service, Shutdown};
use crate::timers::{TimerOptions, TimerService};

/// What a node runs.
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// The timer service's.
    pub timers: TimerOptions,
    /// Retention's.
    pub retention: RetentionOptions,
    /// Woken when another node has committed (PostgreSQL): the server's event streams
    /// wait on it.
    pub log_moved: Option<Arc<tokio::sync::Notify>>,
}

/// The running services of a node. [`Node::stop`] stops them all.
pub struct Node {
    services: Vec<Running>,
}

impl Node {
    /// Starts the timer service, the built-in executors and retention on `engine`, and on
    /// PostgreSQL the clock measurement and the notifications between nodes.
    pub fn start(engine: Engine<AnyStore>, options: NodeOptions) -> std::io::Result<Node> {
        let mut services = vec![
            Running::spawn(TimerService::new(engine.clone(), options.timers))?,
            // `exec` and `http` tasks run here; when the node stops, commands still
            // running are killed and their attempts fail as retryable.
            Running::spawn(ExecutorService::new(engine.clone()))?,
            Running::spawn(RetentionService::new(engine.clone(), options.retention))?,
        ];
        if let Some(pg) = engine.store().postgres() {
            // The database clock is measured again now and then: a node's clock drifts.
            let clock = pg.clone();
            services.push(Running::spawn(Periodic::new(
                "cairn-clock",
                Duration::from_secs(30),
                move || {
                    if let Err(e) = clock.sync_clock() {
                        tracing::warn!(error = %e, "measuring the database clock failed");
                    }
                    false
                },
            ))?);
            services.push(Running::spawn(notifier(pg.clone(), &engine))?);
            services.push(Running::spawn(Listener {
                pg: pg.clone(),
                engine: engine.clone(),
                log_moved: options.log_moved,
            })?);
        }
        Ok(Node { services })
    }

    /// The names of the running services.
    pub fn services(&self) -> Vec<&str> {
        self.services.iter().map(Running::name).collect()
    }

    /// Stops every service and waits for each to return.
    pub fn stop(self) {
        // All are told first, so they wind down together.
        for s in &self.services {
            s.trigger();
        }
        for s in self.services {
            s.stop();
        }
    }
}

/// Every 20 ms at most, sends `NOTIFY cairn_log` when this node has committed since the
/// last time and `NOTIFY cairn_tasks` when it has enqueued tasks (never one per unit,
/// which would serialise commits).
fn notifier(pg: PgStore, engine: &Engine<AnyStore>) -> impl Service {
    let ready = Arc::clone(engine.tasks_ready());
    let (mut last_commits, mut last_enqueued) = (0, 0);
    Periodic::new("cairn-notify", Duration::from_millis(20), move || {
        let (commits, enqueued) = (pg.commits(), ready.enqueued_here());
        let (log, tasks) = (commits != last_commits, enqueued != last_enqueued);
        (last_commits, last_enqueued) = (commits, enqueued);
        if let Err(e) = pg.notify(log, tasks) {
            tracing::warn!(error = %e, "NOTIFY failed");
        }
        false
    })
}

/// Listens for the other nodes' notifications: the log wakes this node's event streams,
/// tasks its waiting claims.
struct Listener {
    pg: PgStore,
    engine: Engine<AnyStore>,
    log_moved: Option<Arc<tokio::sync::Notify>>,
}

impl Service for Listener {
    fn name(&self) -> String {
        "cairn-listen".into()
    }

    fn run(self, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            match self.pg.listen() {
                Ok(mut l) => {
                    while !shutdown.is_triggered() {
                        match l.wait(Duration::from_millis(500)) {
                            Ok(m) => {
                                if m.log
                                    && let Some(moved) = &self.log_moved
                                {
                                    moved.notify_waiters();
                                }
                                // Claims wake for new tasks only, not for every commit.
                                if m.tasks {
                                    self.engine.tasks_ready().wake();
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN failed; retrying"),
            }
            shutdown.wait(Duration::from_secs(1));
        }
    }
}
