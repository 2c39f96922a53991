//! The engine: applies events atomically through a store (read instance, run
//! `cairn_core::step`, write instance, history and effects, commit, acknowledge), and
//! carries effects out: tasks, timers, children, triggers, schedules, approvals.
//!
//! Must not speak HTTP. Time comes through a `Clock`. Not yet built: see the write-path
//! and lifecycle issues.
