//! Routes for a namespace's named definitions (`/v1/triggers`, `/v1/schedules`): add (201),
//! list, and remove by name (204), each through one engine method.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_engine::{Engine, Error};
use cairn_store::Store;
use serde::Serialize;

use crate::Ctx;
use crate::auth::Namespace;
use crate::error::{ApiError, Body, blocking};

async fn add<S: Store + Send + Sync + 'static, T: Serialize + Send + 'static>(
    ctx: Arc<Ctx<S>>,
    ns: String,
    t: T,
    add: fn(&Engine<S>, &str, T) -> Result<T, Error>,
) -> Result<Response, ApiError> {
    let engine = ctx.engine.clone();
    let added = blocking(move || add(&engine, &ns, t)).await?;
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

async fn list<S: Store + Send + Sync + 'static, T: Serialize + Send + 'static>(
    ctx: Arc<Ctx<S>>,
    ns: String,
    list: fn(&Engine<S>, &str) -> Result<Vec<T>, Error>,
) -> Result<Json<Vec<T>>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(blocking(move || list(&engine, &ns)).await?))
}

async fn remove<S: Store + Send + Sync + 'static>(
    ctx: Arc<Ctx<S>>,
    ns: String,
    name: String,
    remove: fn(&Engine<S>, &str, &str) -> Result<(), Error>,
) -> Result<StatusCode, ApiError> {
    let engine = ctx.engine.clone();
    blocking(move || remove(&engine, &ns, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn add_trigger<S: Store + Send + Sync + 'static>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Body(t): Body<cairn_api::Trigger>,
) -> Result<Response, ApiError> {
    add(ctx, ns, t, Engine::add_trigger).await
}

pub(super) async fn triggers<S: Store + Send + Sync + 'static>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
) -> Result<Json<Vec<cairn_api::Trigger>>, ApiError> {
    list(ctx, ns, Engine::triggers).await
}

pub(super) async fn remove_trigger<S: Store + Send + Sync + 'static>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(ctx, ns, name, Engine::remove_trigger).await
}

pub(super) async fn add_schedule<S: Store + Send + Sync + 'static>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Body(s): Body<cairn_api::Schedule>,
) -> Result<Response, ApiError> {
    add(ctx, ns, s, Engine::add_schedule).await
}

pub(super) async fn schedules<S: Store + Send + Sync + 'static>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
) -> Result<Json<Vec<cairn_api::Schedule>>, ApiError> {
    list(ctx, ns, Engine::schedules).await
}

pub(super) async fn remove_schedule<S: Store + Send + Sync + 'static>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(ctx, ns, name, Engine::remove_schedule).await
}
