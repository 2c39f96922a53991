//! The axum HTTP API under `/v1`, the SSE event stream, auth, the OpenAPI document and the
//! dashboard. Holds no business rules: every decision is the engine's. Not yet built: see
//! the server issue.
