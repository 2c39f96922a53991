//! Bearer-token authentication and the role and namespace policy, in one middleware.
//!
//! Reads need `viewer`; task work `worker`; instance writes and decisions `operator`;
//! applying machines, deleting instances, backup and tick `admin`. The namespace of a
//! request (`?namespace=`, default `default`) must be one of the token's. Routes that are
//! not bound to one namespace (the event stream, task claims, tasks by id) check the
//! resources they touch in their handlers, through the [`Principal`] this middleware puts
//! in the request's extensions. `/healthz` is open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn_engine::{Principal, Role};
use cairn_store::Store;

use crate::Ctx;
use crate::error::ApiError;

/// The role a request needs.
pub fn required(method: &Method, path: &str) -> Role {
    if method == Method::GET || method == Method::HEAD {
        return Role::Viewer;
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        (_, ["v1", "tasks", "claim"])
        | (_, ["v1", "tasks", _, "heartbeat" | "complete" | "fail"]) => Role::Worker,
        ("POST", ["v1", "machines"])
        | ("DELETE", ["v1", "instances", _])
        | (_, ["v1", "backup" | "tick"]) => Role::Admin,
        _ => Role::Operator,
    }
}

/// Routes whose namespace is checked in the handler, not from the query.
fn namespace_free(path: &str) -> bool {
    path == "/v1/events"
        || path == "/metrics"
        || path.starts_with("/v1/tasks/")
        || path.starts_with("/v1/tokens")
}

fn query_namespace(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|p| p.strip_prefix("namespace="))
        .map(|v| {
            v.replace("%2D", "-")
                .replace("%5F", "_")
                .replace("%2E", ".")
        })
}

pub async fn authorize<S: Store + Send + Sync>(
    State(ctx): State<Arc<Ctx<S>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    if path == "/healthz" || path == "/openapi.json" {
        return next.run(req).await;
    }
    let principal = if !ctx.settings.auth {
        Principal::unrestricted()
    } else {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let Some(secret) = bearer else {
            return unauthorized(
                "this server needs a bearer token (`Authorization: Bearer ...`, or --token / CAIRN_TOKEN)",
            );
        };
        let engine = ctx.engine.clone();
        match tokio::task::spawn_blocking(move || engine.authenticate(&secret)).await {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => return unauthorized("the token is unknown or revoked"),
            Ok(Err(e)) => return ApiError::from(e).into_response(),
            Err(_) => {
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an internal error occurred",
                )
                .into_response();
            }
        }
    };
    let need = required(req.method(), &path);
    if principal.role < need {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "`{} {path}` needs the {} role; this token is {}",
                req.method(),
                need.as_str(),
                principal.role.as_str()
            ),
        )
        .into_response();
    }
    let ns = query_namespace(req.uri().query());
    if !namespace_free(&path) || ns.is_some() {
        let ns = ns.unwrap_or_else(|| "default".to_string());
        if !principal.allows(&ns) {
            return forbidden_namespace(&ns);
        }
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

fn unauthorized(detail: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

pub fn forbidden_namespace(ns: &str) -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("this token may not use namespace `{ns}`"),
    )
    .into_response()
}
