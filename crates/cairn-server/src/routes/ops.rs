//! `/healthz`, `/metrics`, `/v1/stats`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use cairn_store::Store;
use serde_json::{Value, json};

use super::Ns;
use crate::Ctx;
use crate::error::{ApiError, Body, MaybeBody, blocking};

pub fn router<S: Store + Send + Sync>() -> Router<Arc<Ctx<S>>> {
    Router::new()
        .route("/v1/stats", get(stats::<S>))
        .route("/v1/tick", axum::routing::post(tick::<S>))
        .route("/v1/backup", axum::routing::post(backup::<S>))
        .route(
            "/v1/tokens",
            axum::routing::post(create_token::<S>).get(tokens::<S>),
        )
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token::<S>))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    name: String,
    role: String,
    namespaces: Vec<String>,
}

/// Creates a token (admins only); the answer holds its secret, shown only now.
async fn create_token<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Body(b): Body<NewToken>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let role = cairn_engine::Role::parse(&b.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown role `{}`; expected viewer, worker, operator or admin",
            b.role
        ))
    })?;
    let engine = ctx.engine.clone();
    let (t, secret) = blocking(move || engine.create_token(&b.name, role, b.namespaces)).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(
            json!({"id": t.id, "name": t.name, "role": t.role, "namespaces": t.namespaces, "token": secret}),
        ),
    ))
}

async fn tokens<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    axum::extract::Extension(who): axum::extract::Extension<cairn_engine::Principal>,
) -> Result<Json<Value>, ApiError> {
    if who.role < cairn_engine::Role::Admin {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "listing tokens needs the admin role",
        ));
    }
    let engine = ctx.engine.clone();
    let list = blocking(move || engine.tokens()).await?;
    Ok(Json(Value::Array(
        list.iter()
            .map(|t| json!({"id": t.id, "name": t.name, "role": t.role, "namespaces": t.namespaces, "created_at": t.created_at, "revoked_at": t.revoked_at}))
            .collect(),
    )))
}

async fn revoke_token<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let engine = ctx.engine.clone();
    blocking(move || engine.revoke_token(&id)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Tick {
    retain_finished_ms: Option<i64>,
    max_history: Option<usize>,
}

/// Fires due timers, reclaims expired leases and applies retention now (the server does
/// the first two on its own every 100 ms).
async fn tick<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    MaybeBody(t): MaybeBody<Tick>,
) -> Result<Json<Value>, ApiError> {
    if t.retain_finished_ms.is_some_and(|ms| ms < 0) {
        return Err(ApiError::bad_request(
            "retain_finished_ms must not be negative",
        ));
    }
    let engine = ctx.engine.clone();
    let (fired, removed, folded) = blocking(move || {
        engine.reclaim_expired()?;
        engine.fire_due_schedules()?;
        engine.drain_outbox()?;
        let fired = engine.fire_due_timers()?;
        let policy = cairn_engine::Retention {
            finished_after: t.retain_finished_ms.map(chrono::Duration::milliseconds),
            max_history: t.max_history,
        };
        let (removed, folded) = engine.enforce_retention(&ns.namespace, &policy)?;
        Ok((fired, removed, folded))
    })
    .await?;
    Ok(Json(
        json!({"timers_fired": fired, "instances_removed": removed, "history_folded": folded}),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Backup {
    file: std::path::PathBuf,
}

/// Writes an online backup to a file on the server's machine.
async fn backup<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Body(b): Body<Backup>,
) -> Result<Json<Value>, ApiError> {
    let Some(f) = ctx.backup.clone() else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "not-supported",
            "this store has no online backup",
        ));
    };
    let file = b.file.clone();
    let bytes = blocking(move || f(&file).map_err(cairn_engine::Error::Store)).await?;
    Ok(Json(json!({"file": b.file, "bytes": bytes})))
}

pub fn health_router<S: Store + Send + Sync>() -> Router<Arc<Ctx<S>>> {
    Router::new()
        .route(
            "/openapi.json",
            get(|| async { Json(crate::openapi::document().clone()) }),
        )
        .route("/healthz", get(healthz::<S>))
        .route("/metrics", get(metrics::<S>))
}

async fn healthz<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
) -> Result<Json<Value>, ApiError> {
    // Healthy means the store answers.
    let engine = ctx.engine.clone();
    blocking(move || engine.machines("default").map(|_| ())).await?;
    Ok(Json(json!({"status": "ok"})))
}

async fn metrics<S: Store + Send + Sync>(State(ctx): State<Arc<Ctx<S>>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        // The server's counters, then the store's (commits, units, batch sizes).
        ctx.metrics.render() + &ctx.store_metrics.as_ref().map_or_else(String::new, |f| f()),
    )
}

async fn stats<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
) -> Result<Json<cairn_engine::Stats>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(blocking(move || engine.stats(&ns.namespace)).await?))
}
