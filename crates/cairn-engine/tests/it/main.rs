//! The engine's tests, one binary: every module runs on a real store (SQLite, or
//! PostgreSQL with `CAIRN_TEST_BACKEND=postgres`) on a manual clock.

mod addressed;
mod children;
mod common;
mod engine;
mod layers;
mod lifecycle;
mod maps;
mod schedules;
mod tasks;
mod triggers;
