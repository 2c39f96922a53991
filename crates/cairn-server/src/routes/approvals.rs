//! `/v1/approvals`: the inbox, and decisions by approval id.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_engine::{DecideRequest, wire};
use cairn_store::{ApprovalStatus, Store};
use serde::Deserialize;
use serde_json::Value;

use super::Ns;
use crate::Ctx;
use crate::error::{ApiError, MaybeBody, blocking};

pub fn router<S: Store + Send + Sync>() -> Router<Arc<Ctx<S>>> {
    Router::new()
        .route("/v1/approvals", get(list::<S>))
        .route("/v1/approvals/{aid}/approve", post(approve::<S>))
        .route("/v1/approvals/{aid}/reject", post(reject::<S>))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default = "super::default_namespace")]
    namespace: String,
    /// pending (default), approved, rejected, cancelled or all.
    status: Option<String>,
    instance: Option<String>,
}

async fn list<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<cairn_api::Approval>>, ApiError> {
    let status = match q.status.as_deref().unwrap_or("pending") {
        "all" => None,
        s => Some(
            ApprovalStatus::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("unknown approval status `{s}`")))?,
        ),
    };
    let engine = ctx.engine.clone();
    let list =
        blocking(move || engine.approvals(&q.namespace, status, q.instance.as_deref())).await?;
    Ok(Json(list.iter().map(wire::approval).collect()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Decision {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    payload: Value,
}

async fn decide<S: Store + Send + Sync>(
    ctx: Arc<Ctx<S>>,
    ns: String,
    aid: String,
    approve: bool,
    d: Decision,
) -> Result<Json<cairn_api::Decided>, ApiError> {
    let engine = ctx.engine.clone();
    let decided = blocking(move || {
        let a = engine
            .store()
            .approval(&aid)?
            .filter(|a| a.namespace == ns)
            .ok_or_else(|| {
                cairn_engine::Error::NotFound(format!("no approval `{aid}` in namespace `{ns}`"))
            })?;
        let req = DecideRequest {
            approval: Some(aid),
            approve,
            actor: d.actor,
            reason: d.reason,
            payload: d.payload,
        };
        engine.decide(&ns, &a.instance_id, req)
    })
    .await?;
    Ok(Json(wire::decided(&decided)))
}

async fn approve<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(aid): Path<String>,
    MaybeBody(b): MaybeBody<Decision>,
) -> Result<Json<cairn_api::Decided>, ApiError> {
    decide(ctx, ns.namespace, aid, true, b).await
}

async fn reject<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(ns): Query<Ns>,
    Path(aid): Path<String>,
    MaybeBody(b): MaybeBody<Decision>,
) -> Result<Json<cairn_api::Decided>, ApiError> {
    decide(ctx, ns.namespace, aid, false, b).await
}
