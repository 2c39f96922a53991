//! Who may call what: every route declares an [`Access`] in the route table
//! (`routes::ROUTES`), and [`guard`], layered on each route from its declaration, enforces
//! it before the handler runs. A route cannot exist without one.
//!
//! In order, for every route but the open ones (`/healthz`, `/openapi.json`):
//! 1. cross-site safety, auth on or off: the `Host` must be a loopback name, the listen
//!    address or an allowed host (DNS rebinding); a state-changing request must carry a
//!    JSON (or, for definitions, YAML/TOML) content type, which no cross-site form can
//!    send, and an `Origin`, when present, must be the server's own or an allowed one;
//! 2. the bearer token (one `Authorization` header, scheme case-insensitive) resolves to a
//!    [`Principal`]; auth off, everyone is the unrestricted principal;
//! 3. the principal's role must reach the route's;
//! 4. the namespace, from the one `namespace` query parameter (repeated: 400), is resolved
//!    as the route's [`Scope`] says, and put in the request for the handler's
//!    [`Namespace`] or [`Namespaces`] extractor, with the principal as [`Caller`].
//!
//! Objects addressed by id outside the namespaces (tasks, approvals, tokens) are checked
//! by their handlers against [`Namespaces`] and answer 404.

use cairn_api::ProblemType;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn_engine::{Principal, Role};
use cairn_store::Store;

use crate::Ctx;
use crate::error::ApiError;
use crate::query::Pairs;

/// Which namespaces a route works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// No token and no namespace: `/healthz`, `/openapi.json`.
    Open,
    /// Exactly one: `?namespace=` (default `default`), which the token must allow.
    One,
    /// The token's namespaces, narrowed to `?namespace=` when given (which the token must
    /// allow): the event stream, task claims and outcomes, `/metrics`, tokens.
    Set,
    /// Powers over every namespace (backup): a token scoped to `*`.
    Global,
}

/// What a route requires: a role, a [`Scope`], what its body is, whether it may run long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The least role the route needs.
    pub role: Role,
    /// How the route picks its namespaces.
    pub scope: Scope,
    /// The body is a definition (JSON, YAML or TOML by content type), not JSON only.
    pub definition: bool,
    /// A stream or long poll: exempt from the request timeout.
    pub long: bool,
}

impl Access {
    /// Anyone, no namespace.
    pub const OPEN: Access = Access {
        role: Role::Viewer,
        scope: Scope::Open,
        definition: false,
        long: false,
    };

    /// A route on one namespace (`?namespace=`, default `default`).
    pub const fn one(role: Role) -> Access {
        Access {
            role,
            scope: Scope::One,
            definition: false,
            long: false,
        }
    }

    /// A route over the token's namespaces, or the one asked for.
    pub const fn set(role: Role) -> Access {
        Access {
            scope: Scope::Set,
            ..Access::one(role)
        }
    }

    /// A route over every namespace: a token scoped to `*`.
    pub const fn global(role: Role) -> Access {
        Access {
            scope: Scope::Global,
            ..Access::one(role)
        }
    }

    /// The same access for a route that applies definitions (which an admin needs when they run commands).
    pub const fn definition(self) -> Access {
        Access {
            definition: true,
            ..self
        }
    }

    /// The same access for a long request (a stream or a long poll): no request timeout.
    pub const fn long(self) -> Access {
        Access { long: true, ..self }
    }
}

/// The principal of the request (a handler's extractor).
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

/// The namespace of a route on one namespace (a handler's extractor).
#[derive(Clone, Debug)]
pub struct Namespace(pub String);

/// The namespaces a route over a set may touch: `None` for every one.
#[derive(Clone, Debug)]
pub struct Namespaces(pub Option<Vec<String>>);

impl Namespaces {
    /// Whether the resolved scope includes `ns`.
    pub fn allows(&self, ns: &str) -> bool {
        self.0.as_ref().is_none_or(|n| n.iter().any(|x| x == ns))
    }
}

/// Reads what [`guard`] resolved; a route whose declaration does not provide it is a bug,
/// answered 500 (and caught by the authorization matrix test).
fn resolved<T: Clone + Send + Sync + 'static>(parts: &Parts) -> Result<T, ApiError> {
    parts.extensions.get::<T>().cloned().ok_or_else(|| {
        tracing::error!(
            path = %parts.uri.path(),
            "a handler asked for what its route's access does not resolve"
        );
        ApiError::internal()
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        resolved(parts)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Namespace {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        resolved(parts)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Namespaces {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        resolved(parts)
    }
}

/// What a route takes besides its access: the query parameters it knows (besides
/// `namespace`); any other is refused.
pub type Known = Arc<Vec<&'static str>>;

/// Enforces a route's [`Access`]; see the module docs for the order of the checks.
pub async fn guard<S: Store + Send + Sync>(
    State((ctx, access, known)): State<(Arc<Ctx<S>>, Access, Known)>,
    mut req: Request,
    next: Next,
) -> Response {
    let pairs = Pairs::parse(req.uri().query());
    if let Some(unknown) = pairs
        .keys()
        .find(|k| *k != "namespace" && !known.contains(k))
    {
        return ApiError::bad_request(format!(
            "unknown query parameter `{unknown}`; this route takes {}",
            if known.is_empty() {
                "`namespace` only".to_string()
            } else {
                format!("`namespace`, `{}`", known.join("`, `"))
            }
        ))
        .into_response();
    }
    if access.scope == Scope::Open {
        return next.run(req).await;
    }
    let (method, uri, headers) = (req.method(), req.uri(), req.headers());
    match admit(&ctx, access, (method, uri, headers), &pairs).await {
        Ok((caller, scope)) => {
            match scope {
                Resolved::One(ns) => {
                    req.extensions_mut().insert(Namespace(ns));
                }
                Resolved::Set(set) => {
                    req.extensions_mut().insert(Namespaces(set));
                }
            }
            req.extensions_mut().insert(Caller(caller));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

enum Resolved {
    One(String),
    Set(Option<Vec<String>>),
}

async fn admit<S: Store + Send + Sync>(
    ctx: &Ctx<S>,
    access: Access,
    (method, uri, headers): (&Method, &Uri, &HeaderMap),
    pairs: &Pairs,
) -> Result<(Principal, Resolved), ApiError> {
    let settings = &ctx.settings;
    check_site(settings, method, headers, access)?;
    let principal = if settings.auth {
        let secret = bearer(headers)?;
        let engine = ctx.engine.clone();
        match tokio::task::spawn_blocking(move || engine.authenticate(&secret)).await {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => return Err(unauthorized("the token is unknown or revoked")),
            Ok(Err(e)) => return Err(ApiError::from(e)),
            Err(_) => return Err(ApiError::internal()),
        }
    } else {
        Principal::unrestricted()
    };
    if principal.role < access.role {
        return Err(ApiError::new(
            ProblemType::Forbidden,
            format!(
                "`{} {}` needs the {} role; this token is {}",
                method,
                uri.path(),
                access.role.as_str(),
                principal.role.as_str()
            ),
        ));
    }
    let asked = pairs.one("namespace")?;
    if let Some(ns) = asked
        && !principal.allows(ns)
    {
        return Err(forbidden_namespace(ns));
    }
    let scope = match access.scope {
        Scope::One => {
            let ns = asked.unwrap_or("default");
            if !principal.allows(ns) {
                return Err(forbidden_namespace(ns));
            }
            Resolved::One(ns.to_string())
        }
        Scope::Set => Resolved::Set(match asked {
            Some(ns) => Some(vec![ns.to_string()]),
            None => principal.namespaces.clone(),
        }),
        Scope::Global => {
            if !principal.is_global() {
                return Err(ApiError::new(
                    ProblemType::Forbidden,
                    format!(
                        "`{} {}` reaches every namespace: it needs a token scoped to `*`",
                        method,
                        uri.path()
                    ),
                ));
            }
            Resolved::Set(asked.map(|ns| vec![ns.to_string()]))
        }
        Scope::Open => Resolved::Set(None),
    };
    Ok((principal, scope))
}

/// The secret of the request's one `Authorization: Bearer ...` header.
fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (all.next(), all.next()) else {
        return Err(if headers.contains_key(header::AUTHORIZATION) {
            ApiError::bad_request("send one `Authorization` header, not several")
        } else {
            unauthorized(
                "this server needs a bearer token (`Authorization: Bearer ...`, or --token / CAIRN_TOKEN)",
            )
        });
    };
    let text = value
        .to_str()
        .map_err(|_| unauthorized("the `Authorization` header is not text"))?;
    match text.trim().split_once(' ') {
        Some((scheme, secret))
            if scheme.eq_ignore_ascii_case("bearer") && !secret.trim().is_empty() =>
        {
            Ok(secret.trim().to_string())
        }
        _ => Err(unauthorized(
            "the `Authorization` header must be `Bearer <token>`",
        )),
    }
}

/// Refuses what a web page the user visits could send: a foreign `Host` (DNS
/// rebinding), a state change without a JSON content type (a form or `text/plain`), or
/// one from a foreign `Origin`.
fn check_site(
    settings: &crate::Settings,
    method: &Method,
    headers: &HeaderMap,
    access: Access,
) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(host) = host
        && !host_allowed(settings, host)
    {
        return Err(ApiError::new(
            ProblemType::ForbiddenHost,
            format!(
                "`Host: {host}` is not this server's: use a loopback name or the listen address, or list the name in `http.allowed_hosts`"
            ),
        ));
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = host.is_some_and(|h| {
            origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h))
        });
        if !same && !settings.cors_origins.iter().any(|o| o == origin) {
            return Err(ApiError::new(
                ProblemType::CrossSite,
                format!(
                    "a request from `{origin}` is refused: list the origin in `http.cors_origins` to allow it"
                ),
            ));
        }
    }
    if method == Method::POST {
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let json = media == "application/json" || media.ends_with("+json");
        let ok = json
            || access.definition
                && matches!(
                    media.as_str(),
                    "application/yaml"
                        | "application/x-yaml"
                        | "text/yaml"
                        | "text/x-yaml"
                        | "application/toml"
                        | "text/toml"
                );
        if !ok {
            let expected = if access.definition {
                "application/json, application/yaml or application/toml"
            } else {
                "application/json (even when the body is empty)"
            };
            return Err(ApiError::new(
                ProblemType::UnsupportedMediaType,
                format!(
                    "`Content-Type: {}`: send {expected}",
                    if media.is_empty() { "(none)" } else { &media }
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `host` (a `Host` header: a name or address, maybe with a port) names this
/// server: a loopback name or address, the listen address (any address literal when
/// listening on all interfaces: a rebinding page always uses a name), or a name in
/// `allowed_hosts` (`*` allows every one).
pub fn host_allowed(settings: &crate::Settings, host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => match host.rsplit_once(':') {
            Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
            _ => host,
        },
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        let listen = settings.listen.map(|a: SocketAddr| a.ip());
        if ip.is_loopback() || listen.is_some_and(|l| l == ip || l.is_unspecified()) {
            return true;
        }
    }
    settings
        .allowed_hosts
        .iter()
        .any(|h| h == "*" || h.eq_ignore_ascii_case(&name))
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(ProblemType::Unauthorized, detail)
}

/// The problem of a namespace beyond the token's.
pub fn forbidden_namespace(ns: &str) -> ApiError {
    ApiError::new(
        ProblemType::Forbidden,
        format!("this token may not use namespace `{ns}`"),
    )
}
