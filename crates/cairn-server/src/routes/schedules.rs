//! `/v1/schedules`: add, list and remove the cron schedules of a namespace.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use cairn_store::Store;

use super::Ns;
use crate::Ctx;
use crate::error::{ApiError, Body, blocking};

pub fn router<S: Store + Send + Sync>() -> Router<Arc<Ctx<S>>> {
    Router::new()
        .route("/v1/schedules", post(add::<S>).get(list::<S>))
        .route("/v1/schedules/{name}", delete(remove::<S>))
}

async fn add<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Body(t): Body<cairn_api::Schedule>,
) -> Result<Response, ApiError> {
    let engine = ctx.engine.clone();
    let added = blocking(move || engine.add_schedule(&ns.namespace, t)).await?;
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

async fn list<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
) -> Result<Json<Vec<cairn_api::Schedule>>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(
        blocking(move || engine.schedules(&ns.namespace)).await?,
    ))
}

async fn remove<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let engine = ctx.engine.clone();
    blocking(move || engine.remove_schedule(&ns.namespace, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
