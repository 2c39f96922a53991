//! `/v1/machines`: apply (JSON, YAML or TOML by content type), list, get, versions,
//! diagrams.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_core::Format;
use cairn_core::diagram::{DiagramFormat, render};
use cairn_engine::wire;
use cairn_store::Store;
use serde::Deserialize;

use super::Ns;
use crate::Ctx;
use crate::error::{ApiError, RawBody, blocking};

pub fn router<S: Store + Send + Sync>() -> Router<Arc<Ctx<S>>> {
    Router::new()
        .route("/v1/machines", post(apply::<S>).get(list::<S>))
        .route("/v1/machines/{name}", get(latest::<S>))
        .route("/v1/machines/{name}/versions/{version}", get(version::<S>))
        .route("/v1/machines/{name}/diagram", get(diagram::<S>))
}

async fn apply<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    axum::extract::Extension(who): axum::extract::Extension<cairn_engine::Principal>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let format = Format::from_media_type(media).ok_or_else(|| {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", format!("`{media}`: send a definition as application/json, application/yaml or application/toml"))
    })?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the definition is not UTF-8 text"))?;
    let engine = ctx.engine.clone();
    let applied =
        blocking(move || engine.apply_as(&ns.namespace, &text, Some(format), None, who.role))
            .await?;
    let status = if applied.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(cairn_api::Applied {
            machine: applied.machine,
            version: applied.version,
            created: applied.created,
        }),
    )
        .into_response())
}

async fn list<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
) -> Result<Json<Vec<cairn_api::Machine>>, ApiError> {
    let engine = ctx.engine.clone();
    let ms = blocking(move || engine.machines(&ns.namespace)).await?;
    Ok(Json(ms.iter().map(wire::machine).collect()))
}

async fn one<S: Store + Send + Sync>(
    ctx: &Ctx<S>,
    ns: String,
    name: String,
    version: Option<u32>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = ctx.engine.clone();
    let (record, _) = blocking(move || engine.machine(&ns, &name, version)).await?;
    let mut v = serde_json::to_value(wire::machine(&record)).unwrap_or_default();
    v["definition"] = record.definition;
    Ok(Json(v))
}

async fn latest<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    one(&ctx, ns.namespace, name, None).await
}

async fn version<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v: u32 = version
        .parse()
        .map_err(|_| ApiError::bad_request(format!("version `{version}` is not a number")))?;
    one(&ctx, ns.namespace, name, Some(v)).await
}

#[derive(Deserialize)]
struct DiagramQuery {
    #[serde(default = "super::default_namespace")]
    namespace: String,
    #[serde(default = "mermaid")]
    format: String,
    version: Option<u32>,
    /// Highlight the active states of this instance.
    instance: Option<String>,
}

fn mermaid() -> String {
    "mermaid".into()
}

async fn diagram<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Path(name): Path<String>,
    Query(q): Query<DiagramQuery>,
) -> Result<Response, ApiError> {
    let format = DiagramFormat::parse(&q.format).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown diagram format `{}`; expected mermaid or dot",
            q.format
        ))
    })?;
    let engine = ctx.engine.clone();
    let (text, fmt) = blocking(move || {
        let active = match &q.instance {
            Some(id) => engine.get(&q.namespace, id)?.configuration,
            None => Vec::new(),
        };
        let (_, m) = engine.machine(&q.namespace, &name, q.version)?;
        Ok((render(&m, format, &active), q.format))
    })
    .await?;
    let media = if fmt == "dot" {
        "text/vnd.graphviz"
    } else {
        "text/plain; charset=utf-8"
    };
    Ok(([(header::CONTENT_TYPE, media)], text).into_response())
}
