//! `GET /v1/events`: Server-Sent Events for every entry of the commit-ordered log,
//! filterable by namespace, machine and instance. The SSE id is the log position; a client
//! reconnecting with `Last-Event-ID` (or `?after=`) gets everything it missed, in order,
//! read from durable storage, never from a memory buffer that could overflow. Each stream
//! reads the log on its own, so a slow client holds nothing up; open streams are capped.
//! A stream that starts or resumes below the log's horizon (what log retention removed)
//! first gets a `reset` event naming the horizon, then everything after it.

use cairn_api::ProblemType;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use cairn_store::Store;
use futures_util::stream::Stream;
use serde::Deserialize;
use serde_json::json;

use crate::Ctx;
use crate::auth::Namespaces;
use crate::error::ApiError;
use crate::query::Q;

#[derive(Deserialize, Clone)]
pub(super) struct Filter {
    machine: Option<String>,
    instance: Option<String>,
    /// Resume after this position (as `Last-Event-ID` does).
    after: Option<u64>,
}

struct Guard(
    Arc<crate::Metrics>,
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn events<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    scope: Namespaces,
    headers: HeaderMap,
    Q(f): Q<Filter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be a log position (a number)")
                })?,
        ),
        None => None,
    };
    let start = i64::try_from(last.or(f.after).unwrap_or(0))
        .map_err(|_| ApiError::bad_request("a log position is at most 9223372036854775807"))?;
    let permit = Arc::clone(&ctx.streams).try_acquire_owned().map_err(|_| {
        ApiError::new(
            ProblemType::TooManyStreams,
            "too many event streams are open; retry later",
        )
    })?;
    ctx.metrics.open_streams.fetch_add(1, Ordering::Relaxed);
    let guard = Guard(Arc::clone(&ctx.metrics), permit);
    let state = (
        ctx,
        (f, scope),
        start,
        guard,
        HashMap::<(String, String), Option<String>>::new(),
        std::collections::VecDeque::<Event>::new(),
    );
    let stream = futures_util::stream::unfold(
        state,
        |(ctx, (f, scope), mut after, guard, mut machines, mut ready)| async move {
            loop {
                if let Some(ev) = ready.pop_front() {
                    return Some((Ok(ev), (ctx, (f, scope), after, guard, machines, ready)));
                }
                let store = ctx.engine.store().clone();
                // The horizon is read after the entries: when retention has moved it past
                // `after`, entries may be missing from the batch, which is dropped: the
                // stream says so (`reset`) and goes on from the horizon.
                let batch = tokio::task::spawn_blocking(move || {
                    let entries = store.log(after, 500)?;
                    Ok::<_, cairn_store::Error>((entries, store.log_horizon()?))
                })
                .await;
                let entries = match batch {
                    Ok(Ok((_, horizon))) if horizon > after => {
                        let data = cairn_api::LogEvent {
                            position: horizon,
                            namespace: String::new(),
                            instance: String::new(),
                            kind: "reset".into(),
                            version: 0,
                            at: chrono::Utc::now(),
                            data: json!({"horizon": horizon, "after": after}),
                        };
                        ready.push_back(
                            Event::default()
                                .id(horizon.to_string())
                                .event("reset")
                                .data(serde_json::to_string(&data).unwrap_or_default()),
                        );
                        after = horizon;
                        continue;
                    }
                    Ok(Ok((e, _))) => e,
                    _ => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                if entries.is_empty() {
                    // Polled, and woken early when another node's commits are announced.
                    let moved = ctx.log_moved.notified();
                    let _ = tokio::time::timeout(Duration::from_millis(100), moved).await;
                    continue;
                }
                for e in entries {
                    after = e.position;
                    let n = &e.entry;
                    // Only the request's namespaces (the token's, or the one asked for).
                    if !scope.allows(&n.namespace)
                        || f.instance.as_ref().is_some_and(|i| i != &n.instance_id)
                    {
                        continue;
                    }
                    if let Some(want) = &f.machine {
                        let key = (n.namespace.clone(), n.instance_id.clone());
                        if !machines.contains_key(&key) {
                            let store = ctx.engine.store().clone();
                            let (ns, id) = key.clone();
                            let m = tokio::task::spawn_blocking(move || {
                                store.instance(&ns, &id).ok().flatten().map(|i| i.machine)
                            })
                            .await
                            .ok()
                            .flatten();
                            machines.insert(key.clone(), m);
                        }
                        let of_machine = machines.get(&key).cloned().flatten();
                        let is_machine_entry = n.kind == "machine"
                            && n.data.get("machine").and_then(|m| m.as_str())
                                == Some(want.as_str());
                        if of_machine.as_deref() != Some(want.as_str()) && !is_machine_entry {
                            continue;
                        }
                    }
                    let data = cairn_api::LogEvent {
                        position: e.position,
                        namespace: n.namespace.clone(),
                        instance: n.instance_id.clone(),
                        kind: n.kind.clone(),
                        version: n.version,
                        at: n.created_at,
                        data: n.data.clone(),
                    };
                    ready.push_back(
                        Event::default()
                            .id(e.position.to_string())
                            .event(n.kind.clone())
                            .data(serde_json::to_string(&data).unwrap_or_default()),
                    );
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
