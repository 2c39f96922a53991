//! Routes for a namespace's named definitions (`/v1/triggers`, `/v1/schedules`): add (201),
//! list, and remove by name (204), each through one engine method.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use cairn_engine::{Engine, Error};
use cairn_store::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Ns;
use crate::Ctx;
use crate::error::{ApiError, Body, blocking};

/// The engine's methods for one kind of definition.
pub struct Methods<S: Store, T> {
    pub add: fn(&Engine<S>, &str, T) -> Result<T, Error>,
    pub list: fn(&Engine<S>, &str) -> Result<Vec<T>, Error>,
    pub remove: fn(&Engine<S>, &str, &str) -> Result<(), Error>,
}

/// `POST|GET {path}` and `DELETE {path}/{name}`.
pub fn router<S, T>(path: &'static str, m: Methods<S, T>) -> Router<Arc<Ctx<S>>>
where
    S: Store + Send + Sync + 'static,
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let (add, list, remove) = (m.add, m.list, m.remove);
    Router::new()
        .route(
            path,
            post(
                move |State(ctx): State<Arc<Ctx<S>>>,
                      Query(ns): Query<Ns>,
                      Body(t): Body<T>| async move {
                    let engine = ctx.engine.clone();
                    let added = blocking(move || add(&engine, &ns.namespace, t)).await?;
                    Ok::<Response, ApiError>((StatusCode::CREATED, Json(added)).into_response())
                },
            )
            .get(
                move |State(ctx): State<Arc<Ctx<S>>>, Query(ns): Query<Ns>| async move {
                    let engine = ctx.engine.clone();
                    let all = blocking(move || list(&engine, &ns.namespace)).await?;
                    Ok::<Json<Vec<T>>, ApiError>(Json(all))
                },
            ),
        )
        .route(
            &format!("{path}/{{name}}"),
            delete(
                move |State(ctx): State<Arc<Ctx<S>>>,
                      Query(ns): Query<Ns>,
                      Path(name): Path<String>| async move {
                    let engine = ctx.engine.clone();
                    blocking(move || remove(&engine, &ns.namespace, &name)).await?;
                    Ok::<StatusCode, ApiError>(StatusCode::NO_CONTENT)
                },
            ),
        )
}

pub fn triggers<S: Store + Send + Sync + 'static>() -> Router<Arc<Ctx<S>>> {
    router(
        "/v1/triggers",
        Methods {
            add: Engine::add_trigger,
            list: Engine::triggers,
            remove: Engine::remove_trigger,
        },
    )
}

pub fn schedules<S: Store + Send + Sync + 'static>() -> Router<Arc<Ctx<S>>> {
    router(
        "/v1/schedules",
        Methods {
            add: Engine::add_schedule,
            list: Engine::schedules,
            remove: Engine::remove_schedule,
        },
    )
}
