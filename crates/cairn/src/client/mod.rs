//! One client interface for every command, so a command never knows whether it talks to
//! an engine in this process (embedded, on a data directory: [`Local`]) or to a server
//! over HTTP ([`http::Http`]). Errors carry their exit code, decided here and in
//! `http::code_for` for problems, and nowhere else.

pub mod http;

use std::collections::BTreeMap;
use std::path::Path;

use cairn_api::{
    Applied, Approval, Checkpoint, Decided, Export, Instance, InstancePage, Machine, Sent,
    Transition, Verified,
};
use cairn_engine::{
    Config, DecideRequest, Engine, Error, ForkFrom, Retention, SendRequest, StartRequest, Stats,
    wire,
};
use cairn_store::InstanceFilter;
use serde_json::Value;

use crate::Failure;
use crate::config::Settings;
use crate::store::AnyStore;

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
    fn complete(
        &self,
        task: &str,
        attempt: u32,
        output: Value,
        usage: cairn_engine::Usage,
    ) -> Result<(), Failure>;
    fn fail(
        &self,
        task: &str,
        attempt: u32,
        error: &str,
        retryable: bool,
        usage: cairn_engine::Usage,
    ) -> Result<(), Failure>;
}

/// An engine in this process, on a data directory (which it locks) or a PostgreSQL
/// database.
pub struct Local {
    engine: Engine<AnyStore>,
    namespace: String,
}

impl Local {
    pub fn open(settings: &Settings, namespace: &str, config: Config) -> Result<Local, Failure> {
        let engine = crate::store::engine(settings, config).map_err(failure)?;
        Ok(Local {
            engine,
            namespace: namespace.to_string(),
        })
    }
}

impl Client for Local {
    fn apply(&self, text: &str, file: &str) -> Result<Applied, Failure> {
        let a = self
            .engine
            .apply(&self.namespace, text, None, Some(file))
            .map_err(failure)?;
        Ok(Applied {
            machine: a.machine,
            version: a.version,
            created: a.created,
        })
    }

    fn delete_machine(&self, name: &str, version: u32) -> Result<(), Failure> {
        self.engine
            .delete_machine(&self.namespace, name, version)
            .map_err(failure)
    }

    fn repair(&self, dry_run: bool) -> Result<cairn_api::Repair, Failure> {
        self.engine.repair(dry_run).map_err(failure)
    }

    fn vacuum(&self) -> Result<cairn_api::Vacuum, Failure> {
        self.engine.vacuum().map_err(failure)
    }

    fn machines(&self) -> Result<Vec<Machine>, Failure> {
        Ok(self
            .engine
            .machines(&self.namespace)
            .map_err(failure)?
            .iter()
            .map(wire::machine)
            .collect())
    }

    fn start(
        &self,
        machine: &str,
        id: Option<String>,
        input: Value,
        labels: BTreeMap<String, String>,
    ) -> Result<Instance, Failure> {
        let req = StartRequest {
            machine: machine.to_string(),
            id,
            input,
            labels,
            ..Default::default()
        };
        Ok(wire::instance(
            &self.engine.start(&self.namespace, req).map_err(failure)?,
        ))
    }

    fn send(&self, id: &str, req: SendRequest) -> Result<Sent, Failure> {
        Ok(wire::sent(
            &self
                .engine
                .send(&self.namespace, id, req)
                .map_err(failure)?,
        ))
    }

    fn get(&self, id: &str) -> Result<Instance, Failure> {
        Ok(wire::instance(
            &self.engine.get(&self.namespace, id).map_err(failure)?,
        ))
    }

    fn list(&self, mut filter: InstanceFilter) -> Result<InstancePage, Failure> {
        filter.namespace = self.namespace.clone();
        let page = self.engine.list(&filter).map_err(failure)?;
        Ok(InstancePage {
            instances: page.items.iter().map(wire::instance).collect(),
            next: page.next,
        })
    }

    fn history(
        &self,
        id: &str,
        before: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<Transition>, Failure> {
        Ok(self
            .engine
            .history_tail(&self.namespace, id, before, limit)
            .map_err(failure)?
            .iter()
            .map(wire::transition)
            .collect())
    }

    fn accepts(&self, id: &str) -> Result<Vec<String>, Failure> {
        self.engine.accepts(&self.namespace, id).map_err(failure)
    }

    fn verify(&self, id: &str) -> Result<Verified, Failure> {
        Ok(wire::verified(
            &self.engine.verify(&self.namespace, id).map_err(failure)?,
        ))
    }

    fn tick(&self, retention: &Retention) -> Result<cairn_api::Ticked, Failure> {
        self.engine.tick(self.ns(), retention).map_err(failure)
    }

    fn checkpoint(&self, id: &str, name: &str) -> Result<Checkpoint, Failure> {
        Ok(wire::checkpoint(
            &self
                .engine
                .checkpoint(self.ns(), id, name)
                .map_err(failure)?,
        ))
    }

    fn fork(
        &self,
        id: &str,
        from: ForkFrom,
        new_id: Option<String>,
        patch: Option<Value>,
    ) -> Result<Instance, Failure> {
        Ok(wire::instance(
            &self
                .engine
                .fork(self.ns(), id, from, new_id, patch)
                .map_err(failure)?,
        ))
    }

    fn pause(&self, id: &str, actor: &str, reason: &str) -> Result<Instance, Failure> {
        Ok(wire::instance(
            &self
                .engine
                .pause(self.ns(), id, actor, reason)
                .map_err(failure)?,
        ))
    }

    fn resume(&self, id: &str, actor: &str, reason: &str) -> Result<Instance, Failure> {
        Ok(wire::instance(
            &self
                .engine
                .resume(self.ns(), id, actor, reason)
                .map_err(failure)?,
        ))
    }

    fn cancel(&self, id: &str, actor: &str, reason: &str) -> Result<Instance, Failure> {
        Ok(wire::instance(
            &self
                .engine
                .cancel(self.ns(), id, actor, reason)
                .map_err(failure)?,
        ))
    }

    fn approvals(
        &self,
        status: Option<cairn_store::ApprovalStatus>,
        instance: Option<&str>,
    ) -> Result<Vec<Approval>, Failure> {
        Ok(self
            .engine
            .approvals(self.ns(), status, instance)
            .map_err(failure)?
            .iter()
            .map(wire::approval)
            .collect())
    }

    fn decide(&self, id: &str, req: DecideRequest) -> Result<Decided, Failure> {
        Ok(wire::decided(
            &self.engine.decide(self.ns(), id, req).map_err(failure)?,
        ))
    }

    fn delete(&self, id: &str) -> Result<(), Failure> {
        self.engine.delete(self.ns(), id).map_err(failure)
    }

    fn add_trigger(&self, t: cairn_api::Trigger) -> Result<cairn_api::Trigger, Failure> {
        self.engine.add_trigger(self.ns(), t).map_err(failure)
    }

    fn triggers(&self) -> Result<Vec<cairn_api::Trigger>, Failure> {
        self.engine.triggers(self.ns()).map_err(failure)
    }

    fn remove_trigger(&self, name: &str) -> Result<(), Failure> {
        self.engine.remove_trigger(self.ns(), name).map_err(failure)
    }

    fn add_schedule(&self, s: cairn_api::Schedule) -> Result<cairn_api::Schedule, Failure> {
        self.engine.add_schedule(self.ns(), s).map_err(failure)
    }

    fn schedules(&self) -> Result<Vec<cairn_api::Schedule>, Failure> {
        self.engine.schedules(self.ns()).map_err(failure)
    }

    fn remove_schedule(&self, name: &str) -> Result<(), Failure> {
        self.engine
            .remove_schedule(self.ns(), name)
            .map_err(failure)
    }

    fn finished_before(&self, age: chrono::Duration) -> Result<Vec<String>, Failure> {
        self.engine.finished_before(self.ns(), age).map_err(failure)
    }

    fn export(&self, id: &str) -> Result<Export, Failure> {
        self.engine.export(self.ns(), id).map_err(failure)
    }

    fn stats(&self) -> Result<Stats, Failure> {
        self.engine.stats(self.ns()).map_err(failure)
    }

    fn backup(&self, file: &Path) -> Result<u64, Failure> {
        self.engine
            .store()
            .backup(file)
            .map_err(|e| failure(Error::Store(e)))
    }

    fn tasks(
        &self,
        queue: Option<&str>,
        status: Option<cairn_store::TaskStatus>,
        instance: Option<&str>,
    ) -> Result<Vec<cairn_api::Task>, Failure> {
        Ok(self
            .engine
            .tasks(self.ns(), queue, status, instance)
            .map_err(failure)?
            .iter()
            .map(wire::task)
            .collect())
    }

    fn claim(
        &self,
        queues: &[String],
        worker: &str,
        batch: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<cairn_api::Claimed>, Failure> {
        Ok(self
            .engine
            .claim(queues, worker, batch, lease)
            .map_err(failure)?
            .iter()
            .map(wire::claimed)
            .collect())
    }

    fn heartbeat(
        &self,
        task: &str,
        attempt: u32,
        lease: std::time::Duration,
    ) -> Result<(), Failure> {
        self.engine
            .heartbeat(task, attempt, lease)
            .map(|_| ())
            .map_err(failure)
    }

    fn complete(
        &self,
        task: &str,
        attempt: u32,
        output: Value,
        usage: cairn_engine::Usage,
    ) -> Result<(), Failure> {
        self.engine
            .complete(task, attempt, output, usage)
            .map(|_| ())
            .map_err(failure)
    }

    fn fail(
        &self,
        task: &str,
        attempt: u32,
        error: &str,
        retryable: bool,
        usage: cairn_engine::Usage,
    ) -> Result<(), Failure> {
        self.engine
            .fail(task, attempt, error, retryable, usage)
            .map(|_| ())
            .map_err(failure)
    }

    fn ids(&self) -> Result<Vec<String>, Failure> {
        Ok(self
            .engine
            .instance_ids(Some(&self.namespace))
            .map_err(failure)?
            .into_iter()
            .map(|(_, id)| id)
            .collect())
    }
}

impl Local {
    fn ns(&self) -> &str {
        &self.namespace
    }
}
