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
        ctx.metrics.render(),
    )
}

async fn stats<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
) -> Result<Json<cairn_engine::Stats>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(blocking(move || engine.stats(&ns.namespace)).await?))
}
