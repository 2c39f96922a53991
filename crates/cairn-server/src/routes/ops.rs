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
use crate::error::{ApiError, blocking};

pub fn router<S: Store + Send + Sync>() -> Router<Arc<Ctx<S>>> {
    Router::new().route("/v1/stats", get(stats::<S>))
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
