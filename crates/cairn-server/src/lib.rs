//! The HTTP API under `/v1`, the Server-Sent Events stream of the commit-ordered log,
//! `/healthz` and `/metrics`. `app(ctx) -> Router` is apart from `serve` so tests call it
//! without a socket. Holds no business rules: every decision is the engine's; handlers
//! parse, call the engine off the async runtime, and render wire types or problems.

mod auth;
mod error;
mod metrics;
pub mod openapi;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use cairn_engine::Engine;
use cairn_store::Store;
use tokio::sync::Semaphore;

pub use error::ApiError;
pub use metrics::Metrics;

/// Server settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The largest page of a list.
    pub max_page: usize,
    /// How long a non-streaming request may take.
    pub request_timeout: Duration,
    /// How many event streams may be open at once.
    pub max_streams: usize,
    /// The longest a task claim may wait for work.
    pub max_claim_wait: Duration,
    /// Require bearer tokens (on by default for non-loopback binds; see `cairn serve`).
    pub auth: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_body_bytes: 2 * 1024 * 1024,
            max_page: 1000,
            request_timeout: Duration::from_secs(30),
            max_streams: 256,
            max_claim_wait: Duration::from_secs(30),
            auth: false,
        }
    }
}

/// Writes an online backup of the store to a file on the server; its size in bytes.
pub type BackupFn = Arc<dyn Fn(&std::path::Path) -> Result<u64, cairn_store::Error> + Send + Sync>;

/// What every handler shares.
pub struct Ctx<S: Store> {
    pub engine: Engine<S>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub streams: Arc<Semaphore>,
    /// The backend's backup, when it has one.
    pub backup: Option<BackupFn>,
    /// The backend's own metrics (e.g. commit batch sizes), Prometheus text.
    pub store_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Woken when the log has moved on another node (PostgreSQL's LISTEN/NOTIFY), so
    /// event streams read at once rather than at their next poll.
    pub log_moved: Arc<tokio::sync::Notify>,
}

impl<S: Store> Ctx<S> {
    pub fn new(engine: Engine<S>, settings: Settings) -> Arc<Ctx<S>> {
        Ctx::with_backup(engine, settings, None)
    }

    /// A context with the backend's backup and metrics hooks.
    pub fn with_hooks(
        engine: Engine<S>,
        settings: Settings,
        backup: Option<BackupFn>,
        store_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    ) -> Arc<Ctx<S>> {
        let mut ctx = Ctx::with_backup(engine, settings, backup);
        if let Some(c) = Arc::get_mut(&mut ctx) {
            c.store_metrics = store_metrics;
        }
        ctx
    }

    pub fn with_backup(
        engine: Engine<S>,
        settings: Settings,
        backup: Option<BackupFn>,
    ) -> Arc<Ctx<S>> {
        Arc::new(Ctx {
            streams: Arc::new(Semaphore::new(settings.max_streams)),
            engine,
            settings,
            metrics: Arc::new(Metrics::default()),
            backup,
            store_metrics: None,
            log_moved: Arc::new(tokio::sync::Notify::new()),
        })
    }
}

/// The whole HTTP application.
pub fn app<S: Store + Send + Sync>(ctx: Arc<Ctx<S>>) -> Router {
    let limit = ctx.settings.max_body_bytes;
    let timeout = ctx.settings.request_timeout;
    let api = Router::new()
        .merge(routes::machines::router())
        .merge(routes::instances::router())
        .merge(routes::approvals::router())
        .merge(routes::tasks::router())
        .merge(routes::named::triggers())
        .merge(routes::named::schedules())
        .merge(routes::ops::router())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ));
    Router::new()
        .merge(api)
        // Streams and long polls are exempt from the request timeout.
        .merge(routes::stream::router())
        .merge(routes::tasks::claim_router())
        .merge(routes::ops::health_router())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&ctx),
            auth::authorize::<S>,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&ctx.metrics),
            metrics::track,
        ))
        .with_state(ctx)
}

/// Connection limits of [`serve_with`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections served at once; past it, new ones are closed at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// [`serve_with`] the default [`Limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, Limits::default()).await
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish (up to the grace period). Slow clients cannot pin the
/// server: headers must arrive within the header timeout, open connections are capped,
/// and handlers run under the request timeout.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                    tracing::warn!("too many open connections; closing a new one");
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = watched.await;
                    drop(permit);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the grace period; stopping anyway");
    }
    Ok(())
}
