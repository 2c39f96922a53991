//! `/v1/tasks`: list; claim (a long poll, up to `wait_ms`); heartbeat, complete, fail by
//! task id and attempt; report many outcomes and claim the next tasks in one request.
//! Outcomes for stale attempts are refused with the reason (409).

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
    let lease = checked_claim(&b)?;
    let claimed = claim_waiting(&ctx, scope, &b, lease, None).await?;
    Ok(Json(
        claimed.iter().map(cairn_engine::Claimed::to_api).collect(),
    ))
}

/// The lease a claim asks for, once its batch and lease are checked.
fn checked_claim(b: &cairn_api::ClaimRequest) -> Result<Duration, ApiError> {
    if b.batch == 0 || b.batch > 100 {
        return Err(ApiError::bad_request("batch must be 1 to 100"));
    }
    let lease = b.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis);
    cairn_engine::check_lease(lease)?;
    Ok(lease)
}

/// Claims, waiting up to `b.wait_ms` (bounded by the server's) for a task when none is
/// ready. `tried`: the stamp of the queues taken before a claim that just found nothing
/// (a report's): then it waits for the queues to move before claiming.
async fn claim_waiting<S: Store + Send + Sync>(
    ctx: &Arc<Ctx<S>>,
    scope: Option<Vec<String>>,
    b: &cairn_api::ClaimRequest,
    lease: Duration,
    mut tried: Option<u64>,
) -> Result<Vec<cairn_engine::Claimed>, ApiError> {
    let wait = Duration::from_millis(b.wait_ms).min(ctx.settings.max_claim_wait);
    let deadline = Instant::now() + wait;
    let ready = Arc::clone(ctx.engine.tasks_ready());
    // Wake-ups in a row after which the claim found nothing: a competitor (another
    // claimer of this node or another node) took the work.
    let mut beaten = 0u32;
    let mut woken = false;
    loop {
        // Stamp before trying, so a task enqueued in between still counts.
        let (stamp, claimed) = match tried.take() {
            Some(stamp) => (stamp, Vec::new()),
            None => {
                let stamp = ready.stamp(&b.queues);
                let (engine, queues, worker, scope, batch) = (
                    ctx.engine.clone(),
                    b.queues.clone(),
                    b.worker.clone(),
                    scope.clone(),
                    b.batch,
                );
                let claimed =
                    blocking(move || engine.claim_in(&queues, scope, &worker, batch, lease))
                        .await?;
                (stamp, claimed)
            }
        };
        let mut now = Instant::now();
        if !claimed.is_empty() || now >= deadline {
            return Ok(claimed);
        }
        if woken {
            // Back off before looking again (1 ms, doubling to 32 ms, jittered), so that
            // claimers woken together do not all query the store for one task each time.
            beaten = (beaten + 1).min(6);
            let pause = back_off(beaten).min(deadline - now);
            tokio::time::sleep(pause).await;
            now = Instant::now();
            if now >= deadline {
                return Ok(claimed);
            }
        }
        // Wait for a task on one of our queues; other queues' tasks wake us too, but we go
        // back to waiting without reading the store. Retried tasks come due by time, not
        // by a commit: look again within a second anyway.
        let until = now + Duration::from_secs(1).min(deadline - now);
        woken = false;
        loop {
            let notified = ready.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left = until.saturating_duration_since(Instant::now());
            if ready.stamp(&b.queues) != stamp {
                woken = true;
                break;
            }
            if left.is_zero() {
                break;
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// A claimer's pause after its `beaten`-th wake-up in a row that found the work taken:
/// up to 2^(beaten-1) ms, at least 1 ms, at random.
fn back_off(beaten: u32) -> Duration {
    let most = 1u64 << beaten.saturating_sub(1).min(5);
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_micros(1000 + noise % (most * 1000))
}

/// Outcomes and a claim in one request: each outcome applied or refused on its own (the
/// answer says which, with the reason), in one unit of work with the claim.
pub(super) async fn report<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    Namespaces(scope): Namespaces,
    Caller(who): Caller,
    Body(b): Body<cairn_api::ReportRequest>,
) -> Result<Json<cairn_api::Reported>, ApiError> {
    if b.outcomes.len() > cairn_engine::MAX_OUTCOMES {
        return Err(ApiError::bad_request(format!(
            "a report carries at most {} outcomes; this one has {}",
            cairn_engine::MAX_OUTCOMES,
            b.outcomes.len()
        )));
    }
    let outcomes = b
        .outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| outcome(i, o))
        .collect::<Result<Vec<_>, _>>()?;
    let claim = match &b.claim {
        Some(c) => Some(cairn_engine::NextClaim {
            lease: checked_claim(c)?,
            queues: c.queues.clone(),
            worker: c.worker.clone(),
            batch: c.batch,
        }),
        None => None,
    };
    // Stamped before the report's claim: should it find nothing, the wait below starts
    // from here and misses no task enqueued meanwhile.
    let stamp = b
        .claim
        .as_ref()
        .map(|c| ctx.engine.tasks_ready().stamp(&c.queues));
    let engine = ctx.engine.clone();
    let batch = cairn_engine::Batch {
        outcomes,
        claim: claim.clone(),
        namespaces: scope.clone(),
        by: reporter(&who),
    };
    let r = blocking(move || engine.report(batch)).await?;
    let mut claimed = r.claimed;
    if let (Some(c), Some(next)) = (&b.claim, &claim)
        && claimed.is_empty()
        && c.wait_ms > 0
    {
        claimed = claim_waiting(&ctx, scope, c, next.lease, stamp).await?;
    }
    Ok(Json(cairn_api::Reported {
        outcomes: r
            .outcomes
            .into_iter()
            .map(|o| match o.result {
                Ok(t) => cairn_api::OutcomeReport {
                    task: o.task,
                    attempt: o.attempt,
                    applied: true,
                    repeated: t.repeated,
                    retrying: t.retrying,
                    status: Some(t.task.status.as_str().to_string()),
                    problem: None,
                },
                Err(e) => cairn_api::OutcomeReport {
                    task: o.task,
                    attempt: o.attempt,
                    applied: false,
                    repeated: false,
                    retrying: false,
                    status: None,
                    problem: Some(ApiError::from(e).problem()),
                },
            })
            .collect(),
        claimed: claimed.iter().map(cairn_engine::Claimed::to_api).collect(),
    }))
}

/// The engine's outcome for the request's `i`th, whose fields must fit its kind.
fn outcome(i: usize, o: cairn_api::OutcomeRequest) -> Result<cairn_engine::Outcome, ApiError> {
    let report = match (o.outcome, o.error) {
        (cairn_api::OutcomeKind::Completed, None) => {
            cairn_engine::Report::Completed { output: o.output }
        }
        (cairn_api::OutcomeKind::Failed, Some(error)) if o.output.is_null() => {
            cairn_engine::Report::Failed {
                error,
                retryable: o.retryable,
                details: serde_json::Value::Null,
            }
        }
        (cairn_api::OutcomeKind::Completed, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "outcomes[{i}] (task `{}`): a completed outcome has no `error`",
                o.task
            )));
        }
        (cairn_api::OutcomeKind::Failed, None) => {
            return Err(ApiError::bad_request(format!(
                "outcomes[{i}] (task `{}`): a failed outcome needs an `error`",
                o.task
            )));
        }
        (cairn_api::OutcomeKind::Failed, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "outcomes[{i}] (task `{}`): a failed outcome has no `output`",
                o.task
            )));
        }
    };
    Ok(cairn_engine::Outcome {
        task: o.task,
        attempt: o.attempt,
        report,
        usage: Usage {
            tokens: o.tokens,
            cost: o.cost,
        },
    })
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
