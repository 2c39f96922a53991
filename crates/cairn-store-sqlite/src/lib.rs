//! The embedded SQLite backend: WAL, `synchronous=FULL`, one group-committing writer
//! thread and a pool of readers, with its own embedded migrations.
//!
//! Implements the traits of `cairn-store`; holds no statechart logic. Not yet built: see
//! the write-path issue.
