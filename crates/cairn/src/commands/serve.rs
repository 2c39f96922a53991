//! `cairn serve`: the HTTP API on the store of the settings (the embedded SQLite store of
//! a data directory, or PostgreSQL with `database`), with the timer service running. SIGTERM (or Ctrl-C) stops accepting, finishes in-flight requests
//! and their commits, then exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use cairn_engine::{ExecutorService, TimerService};
use cairn_server::{Ctx, Settings};

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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .json()
        .try_init();
    let engine =
        crate::store::engine(settings, settings.engine_config()).map_err(crate::client::failure)?;
    let _clock = engine.store().postgres().map(|pg| {
        // The database clock is measured again now and then: a node's clock drifts.
        let pg = pg.clone();
        cairn_engine::Background::spawn("cairn-clock", Duration::from_secs(30), move || {
            if let Err(e) = pg.sync_clock() {
                tracing::warn!(error = %e, "measuring the database clock failed");
            }
            false
        })
    });
    let _timers = TimerService::start(engine.clone(), Duration::from_millis(100));
    // `exec` and `http` tasks run here; when serve stops, commands still running are killed
    // and their attempts fail as retryable.
    let _executors = ExecutorService::start(engine.clone());
    // PostgreSQL has its own backup tools; `/v1/backup` answers "not supported" there.
    // Backups are written beside the data, then streamed to the client and removed.
    let store = engine.store().clone();
    let backup = store.postgres().is_none().then(|| {
        let write =
            Arc::new(move |file: &std::path::Path| store.backup(file)) as cairn_server::BackupFn;
        (write, settings.data.clone())
    });
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
    // Retention runs every minute: of instances (when configured) in every namespace,
    // and of the log.
    let _retention = retention(engine.clone(), &settings.retention);
    let stats_store = engine.store().clone();
    let label = stats_store.label();
    let store_metrics: Arc<dyn Fn() -> String + Send + Sync> =
        Arc::new(move || stats_store.metrics());
    let ctx = Ctx::with_hooks(engine, server_settings, backup, Some(store_metrics));
    let _notify = notifications(&ctx);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::from(anyhow!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        println!(
            "cairn listening on http://{bound} (data {}, auth {})",
            label,
            if auth { "on" } else { "off" }
        );
        tracing::info!(%bound, data = %label, "listening");
        cairn_server::serve(listener, cairn_server::app(Arc::clone(&ctx)), shutdown())
            .await
            .context("serving")?;
        tracing::info!("stopped");
        Ok::<(), Failure>(())
    })
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// On PostgreSQL, nodes tell each other what moved: every 20 ms at most, this node sends
/// `NOTIFY cairn_log` when it has committed since the last time and `NOTIFY cairn_tasks`
/// when it has enqueued tasks (never one per unit, which would serialise commits). It
/// listens for the others': the log wakes its event streams, tasks its waiting claims.
fn notifications(
    ctx: &Arc<Ctx<crate::store::AnyStore>>,
) -> Option<(cairn_engine::Background, std::thread::JoinHandle<()>)> {
    let pg = ctx.engine.store().postgres()?.clone();
    let sender = pg.clone();
    let ready = Arc::clone(ctx.engine.tasks_ready());
    let (mut last_commits, mut last_enqueued) = (0, 0);
    let notify =
        cairn_engine::Background::spawn("cairn-notify", Duration::from_millis(20), move || {
            let (commits, enqueued) = (sender.commits(), ready.enqueued_here());
            let (log, tasks) = (commits != last_commits, enqueued != last_enqueued);
            (last_commits, last_enqueued) = (commits, enqueued);
            if let Err(e) = sender.notify(log, tasks) {
                tracing::warn!(error = %e, "NOTIFY failed");
            }
            false
        });
    let (moved, engine) = (Arc::clone(&ctx.log_moved), ctx.engine.clone());
    let listen = std::thread::Builder::new()
        .name("cairn-listen".into())
        .spawn(move || {
            loop {
                match pg.listen() {
                    Ok(mut l) => loop {
                        match l.wait(Duration::from_secs(1)) {
                            Ok(m) => {
                                if m.log {
                                    moved.notify_waiters();
                                }
                                // Claims wake for new tasks only, not for every commit.
                                if m.tasks {
                                    engine.tasks_ready().wake();
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                                break;
                            }
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; retrying"),
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .ok()?;
    Some((notify, listen))
}

fn retention(
    engine: cairn_engine::Engine<crate::store::AnyStore>,
    r: &crate::config::Retention,
) -> cairn_engine::Background {
    let age = |v: &Option<String>| {
        v.as_deref()
            .and_then(crate::config::duration)
            .and_then(|d| chrono::Duration::from_std(d).ok())
    };
    let policy = cairn_engine::Retention {
        finished_after: age(&r.finished_after),
        max_history: r.max_history,
    };
    let (log_after, log_max) = (age(&r.log_after), r.log_max_entries);
    cairn_engine::Background::spawn("cairn-retention", Duration::from_secs(60), move || {
        if policy.finished_after.is_some() || policy.max_history.is_some() {
            let mut namespaces: Vec<String> = engine
                .instance_ids(None)
                .unwrap_or_default()
                .into_iter()
                .map(|(ns, _)| ns)
                .collect();
            namespaces.sort();
            namespaces.dedup();
            for ns in namespaces {
                if let Err(e) = engine.enforce_retention(&ns, &policy) {
                    tracing::warn!(namespace = %ns, error = %e, "retention failed");
                }
            }
        }
        match engine.trim_log(log_after, log_max) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "log retention"),
            Err(e) => tracing::warn!(error = %e, "log retention failed"),
        }
        false
    })
}
