//! `/v1/approvals`: the inbox, and decisions by approval id. An approval of another
//! namespace than the request's is not found.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use cairn_engine::{DecideRequest, wire};
use cairn_store::{ApprovalStatus, Store};
use serde::Deserialize;

use crate::Ctx;
use crate::auth::{Caller, Namespace};
use crate::error::{ApiError, MaybeBody, blocking};
use crate::query::Q;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    /// pending (default), approved, rejected, cancelled or all.
    status: Option<String>,
    instance: Option<String>,
}

pub(super) async fn list<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Q(q): Q<ListQuery>,
) -> Result<Json<Vec<cairn_api::Approval>>, ApiError> {
    let status = match q.status.as_deref().unwrap_or("pending") {
        "all" => None,
        s => Some(
            ApprovalStatus::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("unknown approval status `{s}`")))?,
        ),
    };
    let engine = ctx.engine.clone();
    let list = blocking(move || engine.approvals(&ns, status, q.instance.as_deref())).await?;
    Ok(Json(list.iter().map(wire::approval).collect()))
}

async fn decide<S: Store + Send + Sync>(
    ctx: Arc<Ctx<S>>,
    (ns, who): (String, cairn_engine::Principal),
    aid: String,
    approve: bool,
    d: cairn_api::Decide,
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
            actor: who.actor(&d.actor, d.on_behalf_of.as_deref())?,
            reason: d.reason,
            payload: d.payload,
        };
        engine.decide(&ns, &a.instance_id, req)
    })
    .await?;
    Ok(Json(decided.to_api()))
}

pub(super) async fn approve<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Caller(who): Caller,
    Path(aid): Path<String>,
    MaybeBody(b): MaybeBody<cairn_api::Decide>,
) -> Result<Json<cairn_api::Decided>, ApiError> {
    decide(ctx, (ns, who), aid, true, b).await
}

pub(super) async fn reject<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Caller(who): Caller,
    Path(aid): Path<String>,
    MaybeBody(b): MaybeBody<cairn_api::Decide>,
) -> Result<Json<cairn_api::Decided>, ApiError> {
    decide(ctx, (ns, who), aid, false, b).await
}
