//! Retention: every minute, old finished instances go (with their trees) and long
//! histories are compacted, in every namespace that holds instances (known from the
//! figures, not by listing instances), and the log is trimmed to its horizon.

use std::time::Duration;

use cairn_engine::{Engine, Retention};
use cairn_store::Store;

use crate::service::{Service, Shutdown, every};

/// What retention keeps.
#[derive(Clone, Debug)]
pub struct RetentionOptions {
    /// Of instances: finished ones older than an age, histories longer than a count.
    pub instances: Retention,
    /// Log entries older than this go.
    pub log_after: Option<chrono::Duration>,
    /// At most this many log entries are kept.
    pub log_max_entries: Option<u64>,
    /// How often it runs.
    pub every: Duration,
}

impl Default for RetentionOptions {
    fn default() -> RetentionOptions {
        RetentionOptions {
            instances: Retention::default(),
            log_after: None,
            log_max_entries: None,
            every: Duration::from_secs(60),
        }
    }
}

/// Applies [`RetentionOptions`] while it runs.
pub struct RetentionService<S: Store> {
    engine: Engine<S>,
    options: RetentionOptions,
}

impl<S: Store + Send + Sync + 'static> RetentionService<S> {
    /// Retention for `engine`.
    pub fn new(engine: Engine<S>, options: RetentionOptions) -> RetentionService<S> {
        RetentionService { engine, options }
    }

    /// One pass over every namespace and the log.
    pub fn pass(&self) {
        let (engine, o) = (&self.engine, &self.options);
        if o.instances.finished_after.is_some() || o.instances.max_history.is_some() {
            match engine.namespaces() {
                Ok(namespaces) => {
                    for ns in namespaces {
                        if let Err(e) = engine.enforce_retention(&ns, &o.instances) {
                            tracing::warn!(namespace = %ns, error = %e, "retention failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the namespaces failed"),
            }
        }
        match engine.trim_log(o.log_after, o.log_max_entries) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "log retention"),
            Err(e) => tracing::warn!(error = %e, "log retention failed"),
        }
    }
}

impl<S: Store + Send + Sync + 'static> Service for RetentionService<S> {
    fn name(&self) -> String {
        "cairn-retention".into()
    }

    fn run(self, shutdown: Shutdown) {
        every(&shutdown, self.options.every, || {
            self.pass();
            false
        })
    }
}
