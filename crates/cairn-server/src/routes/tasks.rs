//! `/v1/tasks`: list; claim (a long poll, up to `wait_ms`); heartbeat, complete, fail by
//! task id and attempt. Outcomes for stale attempts are refused with the reason (409).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Extension, Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_engine::{DEFAULT_LEASE, Principal, Usage, wire};
use cairn_store::{Store, TaskStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{ApiError, Body, blocking};

pub fn router<S: Store + Send + Sync>() -> Router<Arc<Ctx<S>>> {
    Router::new()
        .route("/v1/tasks", get(list::<S>))
        .route("/v1/tasks/{id}/heartbeat", post(heartbeat::<S>))
        .route("/v1/tasks/{id}/complete", post(complete::<S>))
        .route("/v1/tasks/{id}/fail", post(fail::<S>))
}

/// Refuses a task of a namespace the principal may not use (as not found: its existence
/// is none of the caller's business).
async fn visible<S: Store + Send + Sync>(
    ctx: &Ctx<S>,
    who: &Principal,
    id: &str,
) -> Result<(), ApiError> {
    let store = ctx.engine.store().clone();
    let id2 = id.to_string();
    let task = blocking(move || Ok(store.task(&id2)?)).await?;
    match task {
        Some(t) if who.allows(&t.namespace) => Ok(()),
        _ => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not-found",
            format!("no task `{id}`"),
        )),
    }
}

/// The claim is a long poll, so it lives outside the request timeout.
pub fn claim_router<S: Store + Send + Sync>() -> Router<Arc<Ctx<S>>> {
    Router::new().route("/v1/tasks/claim", post(claim::<S>))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default = "super::default_namespace")]
    namespace: String,
    queue: Option<String>,
    status: Option<String>,
    instance: Option<String>,
}

async fn list<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<cairn_api::Task>>, ApiError> {
    let status = match &q.status {
        Some(s) => Some(
            TaskStatus::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("unknown task status `{s}`")))?,
        ),
        None => None,
    };
    let engine = ctx.engine.clone();
    let list = blocking(move || {
        engine.tasks(
            &q.namespace,
            q.queue.as_deref(),
            status,
            q.instance.as_deref(),
        )
    })
    .await?;
    Ok(Json(list.iter().map(wire::task).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    queues: Vec<String>,
    worker: String,
    #[serde(default = "one")]
    batch: usize,
    #[serde(default)]
    wait_ms: u64,
    lease_ms: Option<u64>,
}

fn one() -> usize {
    1
}

async fn claim<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Extension(who): Extension<Principal>,
    Body(b): Body<ClaimBody>,
) -> Result<Json<Vec<cairn_api::Claimed>>, ApiError> {
    if b.batch == 0 || b.batch > 100 {
        return Err(ApiError::bad_request("batch must be 1 to 100"));
    }
    let lease = b.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis);
    if lease < Duration::from_millis(100) {
        return Err(ApiError::bad_request("lease_ms must be at least 100"));
    }
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
            who.namespaces.clone(),
        );
        let claimed =
            blocking(move || engine.claim_in(&queues, scope, &worker, b.batch, lease)).await?;
        let now = Instant::now();
        if !claimed.is_empty() || now >= deadline {
            return Ok(Json(claimed.iter().map(wire::claimed).collect()));
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Heartbeat {
    attempt: u32,
    lease_ms: Option<u64>,
}

async fn heartbeat<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<Heartbeat>,
) -> Result<Json<Value>, ApiError> {
    visible(&ctx, &who, &id).await?;
    let engine = ctx.engine.clone();
    let lease = b.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis);
    let t = blocking(move || engine.heartbeat(&id, b.attempt, lease)).await?;
    Ok(Json(
        json!({"task": t.id, "attempt": t.attempt, "lease_expires_at": t.lease_expires_at}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Complete {
    attempt: u32,
    #[serde(default)]
    output: Value,
    tokens: Option<i64>,
    cost: Option<f64>,
}

async fn complete<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<Complete>,
) -> Result<Json<cairn_api::Task>, ApiError> {
    visible(&ctx, &who, &id).await?;
    let engine = ctx.engine.clone();
    let o = blocking(move || {
        engine.complete(
            &id,
            b.attempt,
            b.output,
            Usage {
                tokens: b.tokens,
                cost: b.cost,
            },
        )
    })
    .await?;
    Ok(Json(wire::task(&o.task)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fail {
    attempt: u32,
    error: String,
    #[serde(default = "yes")]
    retryable: bool,
    tokens: Option<i64>,
    cost: Option<f64>,
}

fn yes() -> bool {
    true
}

async fn fail<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<Fail>,
) -> Result<Json<Value>, ApiError> {
    visible(&ctx, &who, &id).await?;
    let engine = ctx.engine.clone();
    let o = blocking(move || {
        engine.fail(
            &id,
            b.attempt,
            &b.error,
            b.retryable,
            Usage {
                tokens: b.tokens,
                cost: b.cost,
            },
        )
    })
    .await?;
    Ok(Json(
        json!({"task": wire::task(&o.task), "retrying": o.retrying}),
    ))
}
