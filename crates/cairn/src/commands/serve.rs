//! `cairn serve`: the HTTP API on the store of the settings (the SQLite store of a data
//! directory, or PostgreSQL with `database`), beside a runtime node (`cairn_runtime::Node`:
//! timers, executors, retention, and on PostgreSQL the notifications between nodes).
//! SIGTERM (or Ctrl-C) stops accepting, finishes in-flight requests and their commits,
//! stops the node's services, then exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use cairn_server::Settings;

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The address to listen on [setting `listen`; default 127.0.0.1:7878].
    #[arg(long)]
    pub listen: Option<String>,
    /// Require bearer tokens: `on` or `off` [setting `auth`; default on unless the address
    /// is loopback].
    #[arg(long, value_parser = ["on", "off"])]
    pub auth: Option<String>,
}

pub fn run(settings: &crate::config::Settings, _a: Args) -> Result<(), Failure> {
    // Validated when the settings were loaded.
    let addr: SocketAddr = settings
        .listen
        .parse()
        .map_err(|e| anyhow!("listen: {e}"))?;
    // Readable lines for a person at a terminal, JSON lines for a log collector.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = match settings.log_format.as_str() {
        "json" => true,
        "text" => false,
        _ => !terminal,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    let _ = if json {
        logs.json().try_init()
    } else {
        logs.try_init()
    };
    let engine = crate::store::engine(settings, settings.engine_config()).map_err(|e| {
        let served = matches!(
            &e,
            cairn_engine::Error::Store(cairn_store::Error::Locked(_))
        )
        .then(|| crate::held::server(&settings.data))
        .flatten();
        match served {
            Some((url, pid)) => Failure::from(anyhow!(
                "{} is already served at {url} (pid {pid}); use `--server {url}`, or stop it",
                settings.data.display()
            )),
            None => crate::client::failure(e),
        }
    })?;
    let auth = match settings.auth.as_deref() {
        Some("on") => true,
        Some("off") => false,
        _ => !addr.ip().is_loopback(),
    };
    if auth
        && engine
            .tokens()
            .map_err(crate::client::failure)?
            .iter()
            .all(|t| t.revoked_at.is_some())
    {
        eprintln!(
            "warning: auth is on and no token exists yet; stop the server and create one with `cairn token create --role admin --scope '*'`"
        );
    }
    if !auth && !addr.ip().is_loopback() {
        eprintln!(
            "warning: auth is off on a non-loopback address ({addr}): anyone who can reach it can do anything"
        );
    }
    let dur = |s: &str| crate::config::duration(s).unwrap_or(Duration::from_secs(30));
    let server_settings = Settings {
        auth,
        max_body_bytes: settings.http.max_body_bytes,
        max_page: settings.http.max_page,
        request_timeout: dur(&settings.http.request_timeout),
        max_streams: settings.http.max_streams,
        max_claim_wait: dur(&settings.http.max_claim_wait),
        listen: Some(addr),
        allowed_hosts: settings.http.allowed_hosts.clone(),
        cors_origins: settings.http.cors_origins.clone(),
    };
    let label = engine.store().label();
    let ctx = crate::store::server_context(engine, server_settings, settings);
    let node = cairn_runtime::Node::start(
        ctx.engine.clone(),
        cairn_runtime::NodeOptions {
            timers: cairn_runtime::TimerOptions {
                every: Duration::from_millis(100),
            },
            retention: retention(&settings.retention),
            log_moved: Some(Arc::clone(&ctx.log_moved)),
        },
    )
    .context("starting the node's services")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::from(anyhow!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        // Beside the lock, so commands on this data directory find the server (removed
        // when it stops; a killed server's record names a pid that holds nothing).
        let _recorded = match settings.database {
            None => Some(
                crate::held::record(&settings.data, &crate::held::local_url(bound))
                    .context("recording the server's address in the data directory")?,
            ),
            Some(_) => None,
        };
        // The signal handlers go in before anyone learns the address: a SIGTERM sent the
        // moment "listening" appears stops the server gracefully, instead of killing it.
        let stop = shutdown();
        println!(
            "cairn listening on http://{bound} (data {}, auth {})",
            label,
            if auth { "on" } else { "off" }
        );
        tracing::info!(%bound, data = %label, "listening");
        cairn_server::serve(listener, cairn_server::app(Arc::clone(&ctx)), stop)
            .await
            .context("serving")?;
        Ok::<(), Failure>(())
    });
    node.stop();
    tracing::info!("stopped");
    served
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled.
fn shutdown() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let int = async {
            match int.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => {}
            _ = int => {}
        }
    }
}

/// Retention as the settings say: of instances (when configured) in every namespace,
/// and of the log, every minute.
fn retention(r: &crate::config::Retention) -> cairn_runtime::RetentionOptions {
    let age = |v: &Option<String>| {
        v.as_deref()
            .and_then(crate::config::duration)
            .and_then(|d| chrono::Duration::from_std(d).ok())
    };
    cairn_runtime::RetentionOptions {
        instances: cairn_engine::Retention {
            finished_after: age(&r.finished_after),
            max_history: r.max_history,
        },
        log_after: age(&r.log_after),
        log_max_entries: r.log_max_entries,
        every: Duration::from_secs(60),
    }
}
