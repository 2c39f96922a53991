//! One error type for the HTTP layer: every failure becomes `application/problem+json`
//! with a stable `type`, the right status, and, for internal failures, a logged cause
//! instead of a leaked one. Also the JSON body extractor that turns malformed or oversized
//! bodies into problems rather than axum's plain-text rejections.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_api::ProblemType;
use cairn_core::Rejection;
use cairn_engine::Error;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// A problem (RFC 9457).
#[derive(Debug)]
pub struct ApiError {
    /// Its problem type's status, unless the answer it stands for had another
    /// (a 408 timeout).
    pub status: StatusCode,
    /// The stable problem type, rendered as `/problems/<slug>`.
    pub kind: ProblemType,
    /// What went wrong and where, for the person reading it.
    pub detail: String,
    /// Members some problems carry (`accepts`, `current_version`, `problems`...).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// A problem of type `kind`, answered with its status.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::BAD_REQUEST),
            kind,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// An `invalid-request` problem.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(ProblemType::InvalidRequest, detail)
    }

    /// A failure of ours; its cause is logged where it happened, never sent.
    pub fn internal() -> ApiError {
        ApiError::new(
            ProblemType::Internal,
            "an internal error occurred; it has been logged",
        )
    }

    /// A `not-found` problem.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(ProblemType::NotFound, detail)
    }

    /// Adds a member to the problem.
    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.extra.insert(key.into(), value);
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        // The problem type is the engine's to decide (`Error::problem`, which the CLI's
        // exit codes use too); here the members some problems carry are added.
        let mut problem = ApiError::new(e.problem(), e.to_string());
        match e {
            Error::Definition(load) => {
                let problems: Vec<Value> = load
                    .diagnostics
                    .iter()
                    .map(|d| json!(cairn_engine::wire::finding(d)))
                    .collect();
                problem = problem.with("problems", Value::Array(problems));
            }
            Error::TooLarge { limit, size, .. } => {
                problem = problem
                    .with("limit", json!(limit))
                    .with("size", json!(size));
            }
            Error::Refused(Rejection::NotAccepted {
                accepts,
                configuration,
                ..
            }) => {
                problem = problem
                    .with("accepts", json!(accepts))
                    .with("configuration", json!(configuration));
            }
            Error::Finished { status, .. } => {
                problem = problem.with("instance_status", json!(status.as_str()));
            }
            Error::VersionMismatch {
                current, expected, ..
            } => {
                problem = problem
                    .with("current_version", json!(current))
                    .with("expected_version", json!(expected));
            }
            Error::KeyReused { version, .. } => {
                problem = problem.with("version", json!(version));
            }
            Error::Store(other) if problem.kind == ProblemType::Internal => {
                tracing::error!(error = %other, "storage failure");
                problem = ApiError::internal();
            }
            _ => {}
        }
        problem
    }
}

/// Turns every error response that is not a problem yet (axum's own rejections as
/// plain text, an unknown route's or method's empty 404 and 405, the timeout's 504) into
/// `application/problem+json` with the HTTP status in `status`, keeping its headers
/// (`Allow` of a 405).
pub async fn problems(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // Longer addresses are no request of ours (hyper itself refuses those over 64 KiB).
    const MAX_URI: usize = 8 * 1024;
    if req.uri().to_string().len() > MAX_URI {
        return ApiError::new(
            ProblemType::UriTooLong,
            format!("the request's address is over {MAX_URI} bytes"),
        )
        .into_response();
    }
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (kind, default) = match status {
        StatusCode::NOT_FOUND => (ProblemType::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ProblemType::MethodNotAllowed,
            "this route does not take that method",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => (
            ProblemType::Timeout,
            "the request took longer than the server allows (setting `http.request_timeout`)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            ProblemType::TooLarge,
            "the body is over the limit (setting `http.max_body_bytes`)",
        ),
        StatusCode::URI_TOO_LONG => (ProblemType::UriTooLong, "the request's address is too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ProblemType::UnsupportedMediaType,
            "send the body as application/json",
        ),
        s if s.is_server_error() => (
            ProblemType::Internal,
            "an internal error occurred; it has been logged",
        ),
        _ => (ProblemType::InvalidRequest, "the request is malformed"),
    };
    let detail = if text.is_empty() || status.is_server_error() {
        default.to_string()
    } else {
        text
    };
    let mut problem = ApiError {
        status,
        ..ApiError::new(kind, detail)
    }
    .into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

impl ApiError {
    /// The problem as a body: how it is answered, or carried inside another answer (a
    /// refused outcome of a batch).
    pub fn problem(&self) -> cairn_api::Problem {
        cairn_api::Problem {
            kind: self.kind.uri(),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            extra: self
                .extra
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!(self.problem());
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A JSON body whose rejections are problems: 400 for malformed JSON, a body that is not
/// an object, or wrong fields; 413 for a body over the limit; 415 for a missing JSON
/// content type.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => object(v).map(Body),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `v` as `T`, when it is a JSON object (serde would read a struct from a list too).
fn object<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object, not {}",
            match v {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )));
    }
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

pub fn json_rejection(r: JsonRejection) -> ApiError {
    let text = r.body_text();
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ProblemType::UnsupportedMediaType,
            "send the body as application/json",
        ),
        JsonRejection::BytesRejection(_) if text.contains("length limit") => {
            ApiError::new(ProblemType::TooLarge, text)
        }
        _ => ApiError::bad_request(text),
    }
}

/// Runs blocking engine work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "a blocking task failed");
            Err(ApiError::internal())
        }
    }
}

/// An optional JSON body: empty means `T::default()`; anything else must be valid JSON.
pub struct MaybeBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for MaybeBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let text = e.body_text();
                if text.contains("length limit") {
                    ApiError::new(ProblemType::TooLarge, text)
                } else {
                    ApiError::bad_request(text)
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeBody(T::default()));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        object(v).map(MaybeBody)
    }
}

/// A raw body whose rejections (too large, unreadable) are problems.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                let text = e.body_text();
                if text.contains("length limit") {
                    ApiError::new(ProblemType::TooLarge, text)
                } else {
                    ApiError::bad_request(text)
                }
            })
    }
}
