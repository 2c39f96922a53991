//! `/v1/instances`: start, list, get, delete, events, accepts, history, checkpoints, fork,
//! pause/resume/cancel, export, and `/v1/verify`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_engine::{ForkFrom, SendRequest, StartRequest, wire};
use cairn_store::{InstanceFilter, Store};
use serde::Deserialize;
use serde_json::Value;

use crate::Ctx;
use crate::auth::{Caller, Namespace};
use crate::error::{ApiError, Body, MaybeBody, blocking};
use crate::query::Q;

pub(super) async fn start<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Caller(who): Caller,
    Body(b): Body<cairn_api::Start>,
) -> Result<Response, ApiError> {
    let engine = ctx.engine.clone();
    let req = StartRequest {
        actor: who.actor(&b.actor, b.on_behalf_of.as_deref())?,
        machine: b.machine,
        version: b.version,
        id: b.id,
        input: b.input,
        labels: b.labels,
    };
    let i = blocking(move || engine.start(&ns, req)).await?;
    Ok((StatusCode::CREATED, Json(wire::instance(&i))).into_response())
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    machine: Option<String>,
    status: Option<String>,
    state: Option<String>,
    /// Only the children of this instance.
    parent: Option<String>,
    /// `key=value`; repeat the parameter for several.
    #[serde(default)]
    label: Vec<String>,
    limit: Option<usize>,
    after: Option<String>,
}

pub(super) async fn list<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Q(q): Q<ListQuery>,
) -> Result<Json<cairn_api::InstancePage>, ApiError> {
    let status = match &q.status {
        Some(s) => Some(
            cairn_core::Status::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("unknown status `{s}`")))?,
        ),
        None => None,
    };
    let labels = q
        .label
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| ApiError::bad_request(format!("label `{l}` must be key=value")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > ctx.settings.max_page {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {}",
            ctx.settings.max_page
        )));
    }
    let filter = InstanceFilter {
        namespace: ns,
        machine: q.machine,
        status,
        state: q.state,
        labels,
        parent: q.parent,
        after: q.after,
        limit,
    };
    let engine = ctx.engine.clone();
    let page = blocking(move || engine.list(&filter)).await?;
    Ok(Json(cairn_api::InstancePage {
        instances: page.items.iter().map(wire::instance).collect(),
        next: page.next,
    }))
}

pub(super) async fn show<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(id): Path<String>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(wire::instance(
        &blocking(move || engine.get(&ns, &id)).await?,
    )))
}

pub(super) async fn delete<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let engine = ctx.engine.clone();
    blocking(move || engine.delete(&ns, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn send<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Caller(who): Caller,
    Path(id): Path<String>,
    Body(b): Body<cairn_api::Send>,
) -> Result<Response, ApiError> {
    let engine = ctx.engine.clone();
    let req = SendRequest {
        actor: who.actor(&b.actor, b.on_behalf_of.as_deref())?,
        event: b.event,
        payload: b.payload,
        key: b.key,
        expected_version: b.expected_version,
        reason: b.reason,
    };
    let sent = blocking(move || engine.send(&ns, &id, req)).await?;
    let status = if sent.queued {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sent.to_api())).into_response())
}

pub(super) async fn accepts<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(id): Path<String>,
) -> Result<Json<Vec<String>>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(blocking(move || engine.accepts(&ns, &id)).await?))
}

pub(super) async fn waiting<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(id): Path<String>,
) -> Result<Json<cairn_api::Waiting>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(blocking(move || engine.waiting(&ns, &id)).await?))
}

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    /// The newest this many records (all by default).
    limit: Option<usize>,
    /// Only records with a `seq` below this one (to page back from the end).
    before: Option<u64>,
}

pub(super) async fn history<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(id): Path<String>,
    Q(q): Q<HistoryQuery>,
) -> Result<Json<Vec<cairn_api::Transition>>, ApiError> {
    if q.limit.is_some_and(|l| l == 0 || l > ctx.settings.max_page) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {}",
            ctx.settings.max_page
        )));
    }
    if q.before == Some(0) {
        return Err(ApiError::bad_request(
            "before must be a seq, 1 or more (no record comes before 1)",
        ));
    }
    let engine = ctx.engine.clone();
    let h = blocking(move || engine.history_tail(&ns, &id, q.before, q.limit)).await?;
    Ok(Json(h.iter().map(wire::transition).collect()))
}

pub(super) async fn checkpoints<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(id): Path<String>,
) -> Result<Json<Vec<cairn_api::Checkpoint>>, ApiError> {
    let engine = ctx.engine.clone();
    let ks = blocking(move || engine.checkpoints(&ns, &id)).await?;
    Ok(Json(ks.iter().map(wire::checkpoint).collect()))
}

pub(super) async fn checkpoint<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(id): Path<String>,
    Body(b): Body<cairn_api::CheckpointRequest>,
) -> Result<Response, ApiError> {
    let engine = ctx.engine.clone();
    let k = blocking(move || engine.checkpoint(&ns, &id, &b.name)).await?;
    Ok((StatusCode::CREATED, Json(wire::checkpoint(&k))).into_response())
}

pub(super) async fn fork<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Caller(who): Caller,
    Path(id): Path<String>,
    Body(b): Body<cairn_api::Fork>,
) -> Result<Response, ApiError> {
    let from = match &b.from {
        Value::Number(n) => ForkFrom::Version(n.as_u64().ok_or_else(|| {
            ApiError::bad_request("`from` must be a version or a checkpoint name")
        })?),
        Value::String(s) => ForkFrom::parse(s),
        _ => {
            return Err(ApiError::bad_request(
                "`from` must be a version or a checkpoint name",
            ));
        }
    };
    let engine = ctx.engine.clone();
    let actor = who.actor(&b.actor, b.on_behalf_of.as_deref())?;
    let i = blocking(move || engine.fork_as(&ns, &id, from, b.id, b.patch, actor)).await?;
    Ok((StatusCode::CREATED, Json(wire::instance(&i))).into_response())
}

/// Pause, resume and cancel: the same request, a different engine operation.
type LifecycleOp<S> = fn(
    &cairn_engine::Engine<S>,
    &str,
    &str,
    cairn_engine::Actor,
    &str,
) -> Result<cairn_store::InstanceRecord, cairn_engine::Error>;

async fn lifecycle<S: Store + Send + Sync>(
    ctx: Arc<Ctx<S>>,
    (ns, who): (String, cairn_engine::Principal),
    id: String,
    w: cairn_api::Who,
    op: LifecycleOp<S>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    let engine = ctx.engine.clone();
    let actor = who.actor(&w.actor, w.on_behalf_of.as_deref())?;
    let i = blocking(move || op(&engine, &ns, &id, actor, &w.reason)).await?;
    Ok(Json(wire::instance(&i)))
}

pub(super) async fn pause<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Caller(who): Caller,
    Path(id): Path<String>,
    MaybeBody(w): MaybeBody<cairn_api::Who>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    lifecycle(ctx, (ns, who), id, w, |e, ns, id, a, r| {
        e.pause(ns, id, a, r)
    })
    .await
}

pub(super) async fn resume<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Caller(who): Caller,
    Path(id): Path<String>,
    MaybeBody(w): MaybeBody<cairn_api::Who>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    lifecycle(ctx, (ns, who), id, w, |e, ns, id, a, r| {
        e.resume(ns, id, a, r)
    })
    .await
}

pub(super) async fn cancel<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Caller(who): Caller,
    Path(id): Path<String>,
    MaybeBody(w): MaybeBody<cairn_api::Who>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    lifecycle(ctx, (ns, who), id, w, |e, ns, id, a, r| {
        e.cancel(ns, id, a, r)
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct ExportQuery {
    #[serde(default = "json_format")]
    format: String,
}

fn json_format() -> String {
    "json".into()
}

pub(super) async fn export<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(id): Path<String>,
    Q(q): Q<ExportQuery>,
) -> Result<Response, ApiError> {
    if !matches!(q.format.as_str(), "json" | "markdown" | "jsonl") {
        return Err(ApiError::bad_request(format!(
            "unknown export format `{}`; expected json, markdown or jsonl",
            q.format
        )));
    }
    let engine = ctx.engine.clone();
    let e = blocking(move || engine.export(&ns, &id)).await?;
    Ok(match q.format.as_str() {
        "json" => Json(e).into_response(),
        "markdown" => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            cairn_api::report::markdown(&e),
        )
            .into_response(),
        _ => (
            [(header::CONTENT_TYPE, "application/jsonl")],
            cairn_api::report::jsonl(&e),
        )
            .into_response(),
    })
}

pub(super) async fn verify<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    MaybeBody(b): MaybeBody<cairn_api::VerifyRequest>,
) -> Result<Json<cairn_api::VerifyReport>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(
        blocking(move || engine.verify_report(&ns, b.id.as_deref())).await?,
    ))
}
