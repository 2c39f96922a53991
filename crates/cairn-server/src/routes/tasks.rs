//! `/v1/tasks`: list; claim (a long poll, up to `wait_ms`); heartbeat, complete, fail by
//! task id and attempt. Outcomes for stale attempts are refused with the reason (409).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use cairn_engine::{DEFAULT_LEASE, Usage, wire};
use cairn_store::{Store, TaskStatus};
use serde::Deserialize;

use crate::Ctx;
use crate::auth::{Caller, Namespace, Namespaces};
use crate::error::{ApiError, Body, blocking};
use crate::query::Q;

/// Refuses a task outside the request's namespaces (as not found: its existence is none
/// of the caller's business).
async fn visible<S: Store + Send + Sync>(
    ctx: &Ctx<S>,
    scope: &Namespaces,
    id: &str,
) -> Result<(), ApiError> {
    let store = ctx.engine.store().clone();
    let id2 = id.to_string();
    let task = blocking(move || Ok(store.task(&id2)?)).await?;
    match task {
        Some(t) if scope.allows(&t.namespace) => Ok(()),
        _ => Err(ApiError::not_found(format!("no task `{id}`"))),
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    queue: Option<String>,
    status: Option<String>,
    instance: Option<String>,
}

pub(super) async fn list<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespace(ns): Namespace,
    Q(q): Q<ListQuery>,
) -> Result<Json<Vec<cairn_api::Task>>, ApiError> {
    let status = match &q.status {
        Some(s) => Some(
            TaskStatus::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("unknown task status `{s}`")))?,
        ),
        None => None,
    };
    let engine = ctx.engine.clone();
    let list =
        blocking(move || engine.tasks(&ns, q.queue.as_deref(), status, q.instance.as_deref()))
            .await?;
    Ok(Json(list.iter().map(wire::task).collect()))
}

pub(super) async fn claim<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespaces(scope): Namespaces,
    Body(b): Body<cairn_api::ClaimRequest>,
) -> Result<Json<Vec<cairn_api::Claimed>>, ApiError> {
    if b.batch == 0 || b.batch > 100 {
        return Err(ApiError::bad_request("batch must be 1 to 100"));
    }
    let lease = b.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis);
    cairn_engine::check_lease(lease)?;
    let wait = Duration::from_millis(b.wait_ms).min(ctx.settings.max_claim_wait);
    let deadline = Instant::now() + wait;
    let ready = Arc::clone(ctx.engine.tasks_ready());
    loop {
        // Stamp before trying, so a task enqueued in between still counts.
        let stamp = ready.stamp(&b.queues);
        let (engine, queues, worker, scope) = (
            ctx.engine.clone(),
            b.queues.clone(),
            b.worker.clone(),
            scope.clone(),
        );
        let claimed =
            blocking(move || engine.claim_in(&queues, scope, &worker, b.batch, lease)).await?;
        let now = Instant::now();
        if !claimed.is_empty() || now >= deadline {
            return Ok(Json(
                claimed.iter().map(cairn_engine::Claimed::to_api).collect(),
            ));
        }
        // Wait for a task on one of our queues; other queues' tasks wake us too, but we go
        // back to waiting without reading the store. Retried tasks come due by time, not
        // by a commit: look again within a second anyway.
        let until = now + Duration::from_secs(1).min(deadline - now);
        loop {
            let notified = ready.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left = until.saturating_duration_since(Instant::now());
            if ready.stamp(&b.queues) != stamp || left.is_zero() {
                break;
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

pub(super) async fn heartbeat<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    scope: Namespaces,
    Path(id): Path<String>,
    Body(b): Body<cairn_api::HeartbeatRequest>,
) -> Result<Json<cairn_api::Heartbeat>, ApiError> {
    let lease = b.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis);
    cairn_engine::check_lease(lease)?;
    visible(&ctx, &scope, &id).await?;
    let engine = ctx.engine.clone();
    let t = blocking(move || engine.heartbeat(&id, b.attempt, lease)).await?;
    Ok(Json(cairn_api::Heartbeat {
        task: t.id,
        attempt: t.attempt,
        lease_expires_at: t.lease_expires_at,
    }))
}

pub(super) async fn complete<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    scope: Namespaces,
    Caller(who): Caller,
    Path(id): Path<String>,
    Body(b): Body<cairn_api::CompleteRequest>,
) -> Result<Json<cairn_api::Task>, ApiError> {
    visible(&ctx, &scope, &id).await?;
    let engine = ctx.engine.clone();
    let o = blocking(move || {
        engine.complete_as(
            &id,
            b.attempt,
            b.output,
            Usage {
                tokens: b.tokens,
                cost: b.cost,
            },
            reporter(&who),
        )
    })
    .await?;
    Ok(Json(wire::task(&o.task)))
}

pub(super) async fn fail<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    scope: Namespaces,
    Caller(who): Caller,
    Path(id): Path<String>,
    Body(b): Body<cairn_api::FailRequest>,
) -> Result<Json<cairn_api::Failed>, ApiError> {
    visible(&ctx, &scope, &id).await?;
    let engine = ctx.engine.clone();
    let o = blocking(move || {
        engine.fail_as(
            &id,
            b.attempt,
            &b.error,
            b.retryable,
            Usage {
                tokens: b.tokens,
                cost: b.cost,
            },
            reporter(&who),
        )
    })
    .await?;
    Ok(Json(cairn_api::Failed {
        task: wire::task(&o.task),
        retrying: o.retrying,
    }))
}

/// Who reports an outcome: with a token, its subject (the worker's name stays on the
/// attempt); without auth, the worker holding the lease.
fn reporter(who: &cairn_engine::Principal) -> Option<cairn_engine::Actor> {
    who.token.as_ref().map(|id| cairn_engine::Actor {
        name: who.subject.clone(),
        token: Some(id.clone()),
        on_behalf_of: None,
    })
}
