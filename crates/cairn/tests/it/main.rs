//! The CLI's tests, one binary: the `cairn` binary run as a real process on real data
//! directories (and PostgreSQL where a test says so). The crash tests (`tests/crash.rs`,
//! `tests/crash_tasks.rs`) and the three-node test (`tests/multinode.rs`) load the machine
//! with processes of their own and keep binaries of their own.

mod children;
mod cli;
mod common;
mod config;
mod embedded;
mod executors;
mod held;
mod lifecycle_cli;
mod migrate;
mod seed001;
mod seeds;
mod serve;
mod server_mode;
mod tidy;
