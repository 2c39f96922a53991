//! The HTTP API under `/v1`, the Server-Sent Events stream of the commit-ordered log,
//! `/healthz` and `/metrics`. `app(ctx) -> Router` is apart from `serve` so tests call it
//! without a socket; the router is built from one route table (`routes::ROUTES`), where
//! every route declares who may call it (`auth::Access`). Holds no business rules: every
//! decision is the engine's; handlers parse, call the engine off the async runtime, and
//! render wire types or problems.
#![warn(missing_docs)]

pub mod auth;
mod error;
mod metrics;
pub mod openapi;
mod query;
pub mod routes;

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
    /// The address the server listens on: a `Host` naming it is this server's.
    pub listen: Option<std::net::SocketAddr>,
    /// Host names (beyond loopback names and the listen address) that name this server;
    /// `*` turns the check off.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://app.example.com`) whose pages may call the API from a browser:
    /// they get CORS headers; no other origin does.
    pub cors_origins: Vec<String>,
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
            listen: None,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

/// Writes an online backup of the store to a file; its size in bytes. The server writes
/// into a file it then streams to the client and removes.
pub type BackupFn = Arc<dyn Fn(&std::path::Path) -> Result<u64, cairn_store::Error> + Send + Sync>;

/// What every handler shares.
pub struct Ctx<S: Store> {
    /// The engine the handlers call.
    pub engine: Engine<S>,
    /// The server's settings.
    pub settings: Settings,
    /// The HTTP counters.
    pub metrics: Arc<Metrics>,
    /// Permits for open event streams (`max_streams`).
    pub streams: Arc<Semaphore>,
    /// The backend's backup, when it has one, and the directory its temporary files go
    /// in (beside the data).
    pub backup: Option<(BackupFn, std::path::PathBuf)>,
    /// The backend's own metrics (e.g. commit batch sizes), Prometheus text.
    pub store_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Woken when the log has moved on another node (PostgreSQL's LISTEN/NOTIFY), so
    /// event streams read at once rather than at their next poll.
    pub log_moved: Arc<tokio::sync::Notify>,
}

impl<S: Store> Ctx<S> {
    /// A context without backup or store metrics.
    pub fn new(engine: Engine<S>, settings: Settings) -> Arc<Ctx<S>> {
        Ctx::with_backup(engine, settings, None)
    }

    /// A context with the backend's backup and metrics hooks.
    pub fn with_hooks(
        engine: Engine<S>,
        settings: Settings,
        backup: Option<(BackupFn, std::path::PathBuf)>,
        store_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    ) -> Arc<Ctx<S>> {
        let mut ctx = Ctx::with_backup(engine, settings, backup);
        if let Some(c) = Arc::get_mut(&mut ctx) {
            c.store_metrics = store_metrics;
        }
        ctx
    }

    /// A context with the backend's backup (a writer and the directory its temporary files go in).
    pub fn with_backup(
        engine: Engine<S>,
        settings: Settings,
        backup: Option<(BackupFn, std::path::PathBuf)>,
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

/// The whole HTTP application, built from the route table: each route gets its access
/// guard and (unless it is a stream or long poll) the request timeout.
pub fn app<S: Store + Send + Sync + 'static>(ctx: Arc<Ctx<S>>) -> Router {
    let limit = ctx.settings.max_body_bytes;
    let timeout = ctx.settings.request_timeout;
    let mut router = Router::new();
    for (route, handler) in routes::ROUTES.iter().zip(routes::handlers::<S>()) {
        let known: auth::Known = Arc::new(
            openapi::query_params(route.method, route.path)
                .into_iter()
                .map(|(name, _, _)| name)
                .collect(),
        );
        let mut handler = handler.route_layer(axum::middleware::from_fn_with_state(
            (Arc::clone(&ctx), route.access, known),
            auth::guard::<S>,
        ));
        if !route.access.long {
            handler = handler.layer(tower_http::timeout::TimeoutLayer::with_status_code(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                timeout,
            ));
        }
        router = router.route(route.path, handler);
    }
    let mut app = router
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(error::problems))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&ctx.metrics),
            metrics::track,
        ));
    if !ctx.settings.cors_origins.is_empty() {
        app = app.layer(cors(&ctx.settings.cors_origins));
    }
    app.with_state(ctx)
}

/// CORS for the allowed origins only (none by default: no CORS header is ever sent).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(Duration::from_secs(600))
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
