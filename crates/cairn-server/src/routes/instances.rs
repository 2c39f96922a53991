//! `/v1/instances`: start, list, get, delete, events, accepts, history, checkpoints, fork,
//! pause/resume/cancel, export, and `/v1/verify`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_engine::{ForkFrom, SendRequest, StartRequest, wire};
use cairn_store::{InstanceFilter, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Ns;
use crate::Ctx;
use crate::error::{ApiError, Body, MaybeBody, blocking};

pub fn router<S: Store + Send + Sync>() -> Router<Arc<Ctx<S>>> {
    Router::new()
        .route("/v1/instances", post(start::<S>).get(list::<S>))
        .route("/v1/instances/{id}", get(show::<S>).delete(delete::<S>))
        .route("/v1/instances/{id}/events", post(send::<S>))
        .route("/v1/instances/{id}/accepts", get(accepts::<S>))
        .route("/v1/instances/{id}/history", get(history::<S>))
        .route(
            "/v1/instances/{id}/checkpoints",
            get(checkpoints::<S>).post(checkpoint::<S>),
        )
        .route("/v1/instances/{id}/fork", post(fork::<S>))
        .route("/v1/instances/{id}/pause", post(pause::<S>))
        .route("/v1/instances/{id}/resume", post(resume::<S>))
        .route("/v1/instances/{id}/cancel", post(cancel::<S>))
        .route("/v1/instances/{id}/export", get(export::<S>))
        .route("/v1/verify", post(verify::<S>))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    machine: String,
    version: Option<u32>,
    id: Option<String>,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    actor: String,
}

async fn start<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Body(b): Body<StartBody>,
) -> Result<Response, ApiError> {
    let engine = ctx.engine.clone();
    let req = StartRequest {
        machine: b.machine,
        version: b.version,
        id: b.id,
        input: b.input,
        labels: b.labels,
        actor: b.actor,
    };
    let i = blocking(move || engine.start(&ns.namespace, req)).await?;
    Ok((StatusCode::CREATED, Json(wire::instance(&i))).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default = "super::default_namespace")]
    namespace: String,
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

async fn list<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    raw: axum::extract::RawQuery,
) -> Result<Json<cairn_api::InstancePage>, ApiError> {
    let q: ListQuery = parse_query(raw.0.as_deref())?;
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
        namespace: q.namespace,
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

/// Parses a query string that may repeat keys (`label=a=1&label=b=2`).
fn parse_query<T: serde::de::DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    let mut map = serde_json::Map::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k);
        let v = percent_decode(v);
        if k == "label" {
            if let Some(a) = map
                .entry("label")
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                a.push(json!(v));
            }
        } else if k == "limit" {
            let n: usize = v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("limit `{v}` is not a number")))?;
            map.insert(k, json!(n));
        } else {
            map.insert(k, json!(v));
        }
    }
    serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::bad_request(format!("bad query: {e}")))
}

/// Decodes `+` and `%XX` in a query component; a malformed escape is kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= b.len() => match std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(byte) => {
                    out.push(byte);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn show<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(wire::instance(
        &blocking(move || engine.get(&ns.namespace, &id)).await?,
    )))
}

async fn delete<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let engine = ctx.engine.clone();
    blocking(move || engine.delete(&ns.namespace, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    event: String,
    #[serde(default)]
    payload: Value,
    key: Option<String>,
    expected_version: Option<u64>,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    reason: String,
}

async fn send<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
    Body(b): Body<EventBody>,
) -> Result<Response, ApiError> {
    let engine = ctx.engine.clone();
    let req = SendRequest {
        event: b.event,
        payload: b.payload,
        key: b.key,
        expected_version: b.expected_version,
        actor: b.actor,
        reason: b.reason,
    };
    let sent = blocking(move || engine.send(&ns.namespace, &id, req)).await?;
    let status = if sent.queued {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(wire::sent(&sent))).into_response())
}

async fn accepts<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
) -> Result<Json<Vec<String>>, ApiError> {
    let engine = ctx.engine.clone();
    Ok(Json(
        blocking(move || engine.accepts(&ns.namespace, &id)).await?,
    ))
}

async fn history<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
) -> Result<Json<Vec<cairn_api::Transition>>, ApiError> {
    let engine = ctx.engine.clone();
    let h = blocking(move || engine.history(&ns.namespace, &id)).await?;
    Ok(Json(h.iter().map(wire::transition).collect()))
}

async fn checkpoints<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
) -> Result<Json<Vec<cairn_api::Checkpoint>>, ApiError> {
    let engine = ctx.engine.clone();
    let ks = blocking(move || engine.checkpoints(&ns.namespace, &id)).await?;
    Ok(Json(ks.iter().map(wire::checkpoint).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointBody {
    name: String,
}

async fn checkpoint<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
    Body(b): Body<CheckpointBody>,
) -> Result<Response, ApiError> {
    let engine = ctx.engine.clone();
    let k = blocking(move || engine.checkpoint(&ns.namespace, &id, &b.name)).await?;
    Ok((StatusCode::CREATED, Json(wire::checkpoint(&k))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkBody {
    /// A version number or a checkpoint name.
    from: Value,
    id: Option<String>,
    patch: Option<Value>,
}

async fn fork<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
    Body(b): Body<ForkBody>,
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
    let i = blocking(move || engine.fork(&ns.namespace, &id, from, b.id, b.patch)).await?;
    Ok((StatusCode::CREATED, Json(wire::instance(&i))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Who {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    reason: String,
}

/// Pause, resume and cancel: the same request, a different engine operation.
type LifecycleOp<S> = fn(
    &cairn_engine::Engine<S>,
    &str,
    &str,
    &str,
    &str,
) -> Result<cairn_store::InstanceRecord, cairn_engine::Error>;

async fn lifecycle<S: Store + Send + Sync>(
    ctx: Arc<Ctx<S>>,
    ns: String,
    id: String,
    w: Who,
    op: LifecycleOp<S>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    let engine = ctx.engine.clone();
    let i = blocking(move || op(&engine, &ns, &id, &w.actor, &w.reason)).await?;
    Ok(Json(wire::instance(&i)))
}

async fn pause<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
    MaybeBody(w): MaybeBody<Who>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    lifecycle(ctx, ns.namespace, id, w, |e, ns, id, a, r| {
        e.pause(ns, id, a, r)
    })
    .await
}

async fn resume<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
    MaybeBody(w): MaybeBody<Who>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    lifecycle(ctx, ns.namespace, id, w, |e, ns, id, a, r| {
        e.resume(ns, id, a, r)
    })
    .await
}

async fn cancel<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(id): Path<String>,
    MaybeBody(w): MaybeBody<Who>,
) -> Result<Json<cairn_api::Instance>, ApiError> {
    lifecycle(ctx, ns.namespace, id, w, |e, ns, id, a, r| {
        e.cancel(ns, id, a, r)
    })
    .await
}

#[derive(Deserialize)]
struct ExportQuery {
    #[serde(default = "super::default_namespace")]
    namespace: String,
    #[serde(default = "json_format")]
    format: String,
}

fn json_format() -> String {
    "json".into()
}

async fn export<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    if !matches!(q.format.as_str(), "json" | "markdown" | "jsonl") {
        return Err(ApiError::bad_request(format!(
            "unknown export format `{}`; expected json, markdown or jsonl",
            q.format
        )));
    }
    let engine = ctx.engine.clone();
    let ns = q.namespace.clone();
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    id: Option<String>,
}

async fn verify<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    MaybeBody(b): MaybeBody<VerifyBody>,
) -> Result<Json<Value>, ApiError> {
    let id = b.id;
    let engine = ctx.engine.clone();
    let results = blocking(move || {
        let ids = match id {
            Some(id) => vec![id],
            None => engine
                .instance_ids(Some(&ns.namespace))?
                .into_iter()
                .map(|(_, id)| id)
                .collect(),
        };
        ids.iter()
            .map(|id| engine.verify(&ns.namespace, id).map(|v| wire::verified(&v)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let failed = results.iter().filter(|r| !r.ok).count();
    Ok(Json(
        json!({"ok": failed == 0, "checked": results.len(), "failed": failed, "instances": results}),
    ))
}
