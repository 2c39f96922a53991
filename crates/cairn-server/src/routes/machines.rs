//! `/v1/machines`: apply (JSON, YAML or TOML by content type), list, get, versions,
//! diagrams.

use cairn_api::ProblemType;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_core::Format;
use cairn_core::diagram::{DiagramFormat, render};
use cairn_engine::wire;
use cairn_store::Store;
use serde::Deserialize;

use crate::Ctx;
use crate::auth::{Caller, Namespace};
use crate::error::{ApiError, RawBody, blocking};
use crate::query::Q;

pub(super) async fn apply<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Caller(who): Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let format = Format::from_media_type(media).ok_or_else(|| {
        ApiError::new(ProblemType::UnsupportedMediaType, format!("`{media}`: send a definition as application/json, application/yaml or application/toml"))
    })?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the definition is not UTF-8 text"))?;
    let engine = ctx.engine.clone();
    let applied =
        blocking(move || engine.apply_as(&ns, &text, Some(format), None, who.role)).await?;
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
            warnings: applied.warnings,
        }),
    )
        .into_response())
}

pub(super) async fn list<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
) -> Result<Json<Vec<cairn_api::Machine>>, ApiError> {
    let engine = ctx.engine.clone();
    let ms = blocking(move || engine.machines(&ns)).await?;
    Ok(Json(ms.iter().map(wire::machine).collect()))
}

async fn one<S: Store + Send + Sync>(
    ctx: &Ctx<S>,
    ns: String,
    name: String,
    version: Option<u32>,
) -> Result<Json<cairn_api::MachineDetail>, ApiError> {
    let engine = ctx.engine.clone();
    let (record, _) = blocking(move || engine.machine(&ns, &name, version)).await?;
    Ok(Json(cairn_api::MachineDetail {
        machine: wire::machine(&record),
        definition: record.definition,
    }))
}

pub(super) async fn latest<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(name): Path<String>,
) -> Result<Json<cairn_api::MachineDetail>, ApiError> {
    one(&ctx, ns, name, None).await
}

/// Deletes a version no instance runs on (204); 409 while one does.
pub(super) async fn delete<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let v = parse_version(&version)?;
    let engine = ctx.engine.clone();
    blocking(move || engine.delete_machine(&ns, &name, v)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_version(version: &str) -> Result<u32, ApiError> {
    version
        .parse()
        .map_err(|_| ApiError::bad_request(format!("version `{version}` is not a number")))
}

pub(super) async fn version<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<cairn_api::MachineDetail>, ApiError> {
    let v = parse_version(&version)?;
    one(&ctx, ns, name, Some(v)).await
}

#[derive(Deserialize)]
pub(super) struct DiagramQuery {
    #[serde(default = "mermaid")]
    format: String,
    version: Option<u32>,
    /// Highlight the active states of this instance.
    instance: Option<String>,
}

fn mermaid() -> String {
    "mermaid".into()
}

pub(super) async fn diagram<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Path(name): Path<String>,
    Q(q): Q<DiagramQuery>,
) -> Result<Response, ApiError> {
    let format = DiagramFormat::parse(&q.format).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown diagram format `{}`; expected mermaid or dot",
            q.format
        ))
    })?;
    let engine = ctx.engine.clone();
    let (text, fmt) = blocking(move || {
        // An instance's diagram is of the version it runs, unless another is asked for.
        let (active, version) = match &q.instance {
            Some(id) => {
                let inst = engine.get(&ns, id)?;
                if inst.machine != name {
                    return Err(cairn_engine::Error::Invalid(format!(
                        "instance `{id}` runs machine `{}`, not `{name}`",
                        inst.machine
                    )));
                }
                (inst.configuration, q.version.or(Some(inst.machine_version)))
            }
            None => (Vec::new(), q.version),
        };
        let (_, m) = engine.machine(&ns, &name, version)?;
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
