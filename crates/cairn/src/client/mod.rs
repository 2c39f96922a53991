//! One client interface for every command, and one implementation of it
//! ([`http::Http`]): embedded, the server's router runs in this process; with
//! `--server`, requests go over the network. Exit codes come from
//! `cairn_api::ProblemType`, whichever way an error came.

pub mod http;

use std::collections::BTreeMap;
use std::path::Path;

use cairn_api::{
    Applied, Approval, Checkpoint, Decided, Export, Instance, InstancePage, Machine, Sent,
    Transition, Verified,
};
use cairn_engine::{DecideRequest, Error, ForkFrom, Retention, SendRequest, Stats};
use cairn_store::InstanceFilter;
use serde_json::Value;

use crate::Failure;

/// Maps engine errors to exit codes: 2 malformed, 3 not found, 4 refused, 1 other.
pub fn failure(e: Error) -> Failure {
    Failure {
        // The same exit code a server's answer for this error gives (`ProblemType`).
        code: e.problem().exit_code(),
        error: anyhow::Error::msg(e.to_string()),
    }
}

/// What the CLI can ask of Cairn.
pub trait Client {
    fn apply(&self, text: &str, file: &str) -> Result<Applied, Failure>;
    fn machines(&self) -> Result<Vec<Machine>, Failure>;
    /// Deletes a machine version no instance runs on.
    fn delete_machine(&self, name: &str, version: u32) -> Result<(), Failure>;
    /// Finds (and unless `dry_run` deletes) unreadable stored machine versions.
    fn repair(&self, dry_run: bool) -> Result<cairn_api::Repair, Failure>;
    /// Gives the space deletions freed back.
    fn vacuum(&self) -> Result<cairn_api::Vacuum, Failure>;
    fn start(
        &self,
        machine: &str,
        id: Option<String>,
        input: Value,
        labels: BTreeMap<String, String>,
    ) -> Result<Instance, Failure>;
    fn send(&self, id: &str, req: SendRequest) -> Result<Sent, Failure>;
    fn get(&self, id: &str) -> Result<Instance, Failure>;
    fn list(&self, filter: InstanceFilter) -> Result<InstancePage, Failure>;
    /// The newest `limit` records (all when `None`) with a seq below `before`.
    fn history(
        &self,
        id: &str,
        before: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<Transition>, Failure>;
    fn accepts(&self, id: &str) -> Result<Vec<String>, Failure>;
    /// A machine's diagram (`mermaid` or `dot`), with an instance's active states marked.
    fn diagram(
        &self,
        machine: &str,
        format: &str,
        instance: Option<&str>,
    ) -> Result<String, Failure>;
    /// What the instance waits for now.
    fn waiting(&self, id: &str) -> Result<cairn_api::Waiting, Failure>;
    fn verify(&self, id: &str) -> Result<Verified, Failure>;
    /// Ids of every instance of the namespace, for `verify` of all.
    fn ids(&self) -> Result<Vec<String>, Failure>;
    /// Fires due timers and applies retention; returns (timer events, instances removed,
    /// history records folded).
    fn tick(&self, retention: &Retention) -> Result<cairn_api::Ticked, Failure>;
    fn checkpoint(&self, id: &str, name: &str) -> Result<Checkpoint, Failure>;
    fn fork(
        &self,
        id: &str,
        from: ForkFrom,
        new_id: Option<String>,
        patch: Option<Value>,
    ) -> Result<Instance, Failure>;
    fn pause(&self, id: &str, actor: &str, reason: &str) -> Result<Instance, Failure>;
    fn resume(&self, id: &str, actor: &str, reason: &str) -> Result<Instance, Failure>;
    fn cancel(&self, id: &str, actor: &str, reason: &str) -> Result<Instance, Failure>;
    fn approvals(
        &self,
        status: Option<cairn_store::ApprovalStatus>,
        instance: Option<&str>,
    ) -> Result<Vec<Approval>, Failure>;
    fn decide(&self, id: &str, req: DecideRequest) -> Result<Decided, Failure>;
    fn delete(&self, id: &str) -> Result<(), Failure>;
    fn add_trigger(&self, t: cairn_api::Trigger) -> Result<cairn_api::Trigger, Failure>;
    fn triggers(&self) -> Result<Vec<cairn_api::Trigger>, Failure>;
    fn remove_trigger(&self, name: &str) -> Result<(), Failure>;
    fn add_schedule(&self, s: cairn_api::Schedule) -> Result<cairn_api::Schedule, Failure>;
    fn schedules(&self) -> Result<Vec<cairn_api::Schedule>, Failure>;
    fn remove_schedule(&self, name: &str) -> Result<(), Failure>;
    fn finished_before(&self, age: chrono::Duration) -> Result<Vec<String>, Failure>;
    fn export(&self, id: &str) -> Result<Export, Failure>;
    fn stats(&self) -> Result<Stats, Failure>;
    /// Writes a consistent copy of the store to `file`; its size in bytes.
    fn backup(&self, file: &Path) -> Result<u64, Failure>;
    fn tasks(
        &self,
        queue: Option<&str>,
        status: Option<cairn_store::TaskStatus>,
        instance: Option<&str>,
    ) -> Result<Vec<cairn_api::Task>, Failure>;
    fn claim(
        &self,
        queues: &[String],
        worker: &str,
        batch: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<cairn_api::Claimed>, Failure>;
    fn heartbeat(
        &self,
        task: &str,
        attempt: u32,
        lease: std::time::Duration,
    ) -> Result<(), Failure>;
    /// Outcomes, and a claim of the next tasks, in one round trip (`POST /v1/tasks/report`).
    fn report(&self, report: cairn_api::ReportRequest) -> Result<cairn_api::Reported, Failure>;
}
