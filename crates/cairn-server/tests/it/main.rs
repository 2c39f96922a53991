//! The HTTP API's tests, one binary: the routes through `app()` without a socket, the
//! authorization matrix, and the OpenAPI document, on a real store (SQLite, or PostgreSQL
//! with `CAIRN_TEST_BACKEND=postgres`). Slow clients on a real socket are `tests/slow.rs`.

mod api;
mod auth;
mod openapi;
