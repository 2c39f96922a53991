//! The runtime's tests, one binary: its services on a real store (SQLite, or PostgreSQL
//! with `CAIRN_TEST_BACKEND=postgres`), real processes, and a stub HTTP server on
//! 127.0.0.1 standing in for a remote API.

mod executors;
mod node;
mod services;
