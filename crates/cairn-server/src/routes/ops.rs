//! `/healthz`, `/metrics`, `/openapi.json`, `/v1/stats`, `/v1/tick`, `/v1/backup` and
//! `/v1/tokens`.

use cairn_api::ProblemType;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_store::Store;
use serde_json::Value;

use crate::Ctx;
use crate::auth::{Caller, Namespace, Namespaces};
use crate::error::{ApiError, Body, MaybeBody, blocking};

/// Creates a token no stronger and no wider than the caller's; the answer holds its
/// secret, shown only now.
pub(super) async fn create_token<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Caller(who): Caller,
    Body(b): Body<cairn_api::NewToken>,
) -> Result<(StatusCode, Json<cairn_api::CreatedToken>), ApiError> {
    let role = cairn_engine::Role::parse(&b.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown role `{}`; expected viewer, worker, operator or admin",
            b.role
        ))
    })?;
    let engine = ctx.engine.clone();
    let (t, secret) =
        blocking(move || engine.create_token_as(&who, &b.name, role, b.namespaces)).await?;
    Ok((
        StatusCode::CREATED,
        Json(cairn_api::CreatedToken {
            token: cairn_engine::wire::token(&t),
            secret,
        }),
    ))
}

/// The tokens the caller may administer (never their secrets).
pub(super) async fn tokens<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Caller(who): Caller,
) -> Result<Json<Vec<cairn_api::Token>>, ApiError> {
    let engine = ctx.engine.clone();
    let list = blocking(move || engine.tokens_as(&who)).await?;
    Ok(Json(list.iter().map(cairn_engine::wire::token).collect()))
}

pub(super) async fn revoke_token<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let engine = ctx.engine.clone();
    blocking(move || engine.revoke_token_as(&who, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fires due timers, reclaims expired leases and applies retention now (the server does
/// the first two on its own every 100 ms).
pub(super) async fn tick<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    MaybeBody(t): MaybeBody<cairn_api::TickRequest>,
) -> Result<Json<cairn_api::Ticked>, ApiError> {
    // Up to about 100 years; beyond that no date arithmetic is attempted.
    const MAX_RETAIN_MS: i64 = 100 * 366 * 24 * 3600 * 1000;
    let retain = match t.retain_finished_ms {
        Some(ms) if !(0..=MAX_RETAIN_MS).contains(&ms) => {
            return Err(ApiError::bad_request(format!(
                "retain_finished_ms is 0 to {MAX_RETAIN_MS} (about 100 years); got {ms}"
            )));
        }
        Some(ms) => Some(chrono::Duration::milliseconds(ms)),
        None => None,
    };
    let policy = cairn_engine::Retention {
        finished_after: retain,
        max_history: t.max_history,
    };
    let engine = ctx.engine.clone();
    Ok(Json(blocking(move || engine.tick(&ns, &policy)).await?))
}

/// An online, consistent backup of every namespace, streamed in the response (a SQLite
/// database file): the client writes it where it likes; nothing stays on the server.
pub(super) async fn backup<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    MaybeBody(cairn_api::Empty {}): MaybeBody<cairn_api::Empty>,
) -> Result<Response, ApiError> {
    let Some((write, dir)) = ctx.backup.clone() else {
        return Err(ApiError::new(
            ProblemType::NotSupported,
            "this store has no online backup (on PostgreSQL, use pg_dump)",
        ));
    };
    let (file, bytes) = blocking(move || {
        // A file of our own beside the data, unlinked as soon as it is open: it goes
        // away when the stream ends, and also when the server dies mid-way.
        let path = dir.join(format!(
            ".backup-{}-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let written = write(&path);
        let opened = written.and_then(|n| {
            std::fs::File::open(&path)
                .map(|f| (f, n))
                .map_err(|e| cairn_store::Error::Database(format!("reading the backup: {e}")))
        });
        let _ = std::fs::remove_file(&path);
        opened.map_err(cairn_engine::Error::Store)
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut file = file;
        loop {
            let mut chunk = vec![0u8; 256 * 1024];
            match file.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3".to_string()),
            (header::CONTENT_LENGTH, bytes.to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"cairn-backup.db\"".to_string(),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// Finds stored machine versions that cannot be read back and deletes those no instance
/// runs on (every namespace: a token scoped to `*`).
pub(super) async fn repair<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    MaybeBody(b): MaybeBody<cairn_api::RepairRequest>,
) -> Result<Json<cairn_api::Repair>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(blocking(move || engine.repair(b.dry_run)).await?))
}

/// Gives the space deletions freed back, in bounded steps (every namespace: a token
/// scoped to `*`).
pub(super) async fn vacuum<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    MaybeBody(_): MaybeBody<cairn_api::Empty>,
) -> Result<Json<cairn_api::Vacuum>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(blocking(move || engine.vacuum()).await?))
}

/// Generic like every handler of the table (which names each as `handler::<S>`).
#[allow(clippy::extra_unused_type_parameters)]
pub(super) async fn openapi<S: Store + Send + Sync>() -> Json<Value> {
    Json(crate::openapi::document().clone())
}

/// `GET /`: a small page for whoever opens the server in a browser, linking what it
/// serves.
pub(super) async fn index<S: Store + Send + Sync>(
    State(_): State<Arc<Ctx<S>>>,
) -> axum::response::Html<&'static str> {
    axum::response::Html(INDEX)
}

const INDEX: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Cairn</title></head>
<body>
<h1>Cairn</h1>
<p>Durable statecharts for AI-agent workflows. This server speaks HTTP and JSON:</p>
<ul>
<li><a href=\"/openapi.json\">/openapi.json</a>: every route, its body and its role (OpenAPI 3.1)</li>
<li><a href=\"/healthz\">/healthz</a>: whether the store answers</li>
<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics (a viewer token when auth is on)</li>
<li><a href=\"/v1/instances\">/v1/instances</a>, <a href=\"/v1/machines\">/v1/machines</a>: the namespace's instances and machines</li>
</ul>
<p>The CLI talks to it with <code>cairn --server URL</code>; the routes are described in
<code>docs/http.md</code> of the Cairn repository.</p>
</body></html>
";

pub(super) async fn healthz<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
) -> Result<Json<cairn_api::Health>, ApiError> {
    // Healthy means the store answers (a read that no stored record can fail).
    let store = ctx.engine.store().clone();
    blocking(move || Ok(store.log(i64::MAX, 1).map(|_| ())?)).await?;
    Ok(Json(cairn_api::Health {
        status: "ok".into(),
    }))
}

/// The server's counters, the engine's, the store's figures for the caller's namespaces
/// (with namespace and machine labels for a token scoped to `*` only), and the store's
/// own counters (commits, units, batch sizes, the WAL).
pub(super) async fn metrics<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    scope: Namespaces,
) -> Result<impl IntoResponse, ApiError> {
    let engine = ctx.engine.clone();
    let (figures, due) = blocking(move || {
        Ok((
            engine.store().figures(None)?,
            engine.timers_due(TIMERS_DUE_CAP)?,
        ))
    })
    .await?;
    let named = scope.0.is_none();
    let text = ctx.metrics.render()
        + &crate::metrics::engine_text(
            &ctx.engine.counters().snapshot(),
            &figures,
            &due,
            |ns| scope.allows(ns),
            named,
        )
        + &ctx.store_metrics.as_ref().map_or_else(String::new, |f| f());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// The most due timers a scrape counts.
const TIMERS_DUE_CAP: usize = 100_000;

pub(super) async fn stats<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
) -> Result<Json<cairn_engine::Stats>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(blocking(move || engine.stats(&ns)).await?))
}
