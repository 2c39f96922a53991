//! Record types: what the store keeps, as plain data. Conversions to wire types live in
//! `cairn-api`, to engine types in `cairn-engine`.

use std::collections::BTreeMap;

use cairn_core::Status;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One immutable version of a machine definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The machine's name, unique per namespace.
    pub name: String,
    /// 1, 2, 3... per machine; a version is immutable and its number never reused.
    pub version: u32,
    /// SHA-256 of the canonical definition JSON: same content, same digest.
    pub digest: String,
    /// The canonical definition JSON.
    pub definition: Value,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// An instance: the materialised result of its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// Unique per namespace.
    pub id: String,
    /// The machine it runs.
    pub machine: String,
    /// The version it is pinned to.
    pub machine_version: u32,
    /// Running, paused or how it finished.
    pub status: Status,
    /// Sorted active leaf paths.
    pub configuration: Vec<String>,
    /// Its context (JSON) after the last change.
    pub context: Value,
    /// 1 after start, +1 per applied event.
    pub version: u64,
    /// The `seq` of the instance's last history record.
    pub history_seq: u64,
    /// Labels to filter by.
    pub labels: BTreeMap<String, String>,
    /// The instance that spawned it, if one did.
    pub parent: Option<String>,
    /// Why it failed, when it did.
    pub last_error: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When each active leaf was entered (for the time spent in states: see [`dwell`]).
    pub entered: BTreeMap<String, DateTime<Utc>>,
}

/// The time spent in states, kept as each record is written: moves `entered` from the
/// configuration `from` to `to` at `at`, and returns each leaf left with the milliseconds
/// spent in it since it was entered. A leaf in both is not left (an internal or
/// self-transition keeps its clock); a leaf whose entry is unknown is not counted.
pub fn dwell(
    entered: &mut BTreeMap<String, DateTime<Utc>>,
    from: &[String],
    to: &[String],
    at: DateTime<Utc>,
) -> Vec<(String, i64)> {
    let mut left = Vec::new();
    for leaf in from {
        if !to.contains(leaf)
            && let Some(t) = entered.remove(leaf)
        {
            left.push((leaf.clone(), (at - t).num_milliseconds()));
        }
    }
    for leaf in to {
        entered.entry(leaf.clone()).or_insert(at);
    }
    left
}

/// A figure the store keeps as units change what it counts, so reading it scans nothing:
/// instances by machine and status, transitions, tasks by queue and status, timers, the
/// outbox, the time spent in states. As a change, `value` is added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figure {
    /// The namespace it belongs to.
    pub namespace: String,
    /// `instances` (name: machine, detail: status), `transitions`, `tasks` (queue,
    /// status), `timers`, `outbox`, `dwell_ms` and `dwell_visits` (machine, state).
    pub kind: String,
    /// What it counts within its kind (a machine, a queue; `""` when none).
    pub name: String,
    /// A further split (a status, a state; `""` when none).
    pub detail: String,
    /// The count (or total, for `dwell_ms`).
    pub value: i64,
}

/// What a history record records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    /// The instance started (version 1).
    Start,
    /// An event was applied (version + 1).
    Event,
    /// The instance was paused; events sent now are queued.
    Pause,
    /// The instance was resumed.
    Resume,
    /// The instance was cancelled.
    Cancel,
    /// A snapshot taken as given: the first record of a fork, or what compaction folded
    /// the older history into. Replay starts from it.
    Base,
    /// A task attempt ended (completed, failed, expired or cancelled); its outcome event,
    /// if any, is the next record.
    Attempt,
    /// The instance's machine could not take an event the engine delivers (a `task.done`
    /// whose assign fails, say): the instance failed, with `last_error` set.
    Fail,
}

impl HistoryKind {
    /// Its name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryKind::Start => "start",
            HistoryKind::Event => "event",
            HistoryKind::Pause => "pause",
            HistoryKind::Resume => "resume",
            HistoryKind::Cancel => "cancel",
            HistoryKind::Base => "base",
            HistoryKind::Attempt => "attempt",
            HistoryKind::Fail => "fail",
        }
    }

    /// The value a stored name stands for.
    pub fn parse(s: &str) -> Option<HistoryKind> {
        Some(match s {
            "start" => HistoryKind::Start,
            "event" => HistoryKind::Event,
            "pause" => HistoryKind::Pause,
            "resume" => HistoryKind::Resume,
            "cancel" => HistoryKind::Cancel,
            "base" => HistoryKind::Base,
            "attempt" => HistoryKind::Attempt,
            "fail" => HistoryKind::Fail,
            _ => return None,
        })
    }

    /// Whether the record applied an event to the machine (and so advanced the version).
    pub fn is_transition(self) -> bool {
        matches!(self, HistoryKind::Start | HistoryKind::Event)
    }

    /// Whether replay starts afresh from this record.
    pub fn is_base(self) -> bool {
        matches!(self, HistoryKind::Start | HistoryKind::Base)
    }
}

/// One durable change of an instance: its start, an applied event, or a lifecycle change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it belongs to.
    pub instance_id: String,
    /// 1, 2, 3... per instance, in the order the records were committed.
    pub seq: u64,
    /// What kind of change it records.
    pub kind: HistoryKind,
    /// The instance's version after this record.
    pub version: u64,
    /// The event name; `""` for the start.
    pub event: String,
    /// The event payload; for the start, the input.
    pub payload: Value,
    /// Who did it.
    pub actor: String,
    /// Why, as the actor said.
    pub reason: String,
    /// The API token the change was made with (its id), when the server checks tokens.
    pub token_id: Option<String>,
    /// Whom the caller said it acted for; recorded beside `actor`, never instead of it.
    pub on_behalf_of: Option<String>,
    /// The state an outcome was addressed to (a task's, an approval's, a child's or a
    /// map's state, as `cairn_core::Event::to`): replay gives it to the step again, so the
    /// event reaches the states it reached. `None` for events to the whole instance, and
    /// for every event recorded before outcomes were addressed.
    #[serde(default)]
    pub addressed_to: Option<String>,
    /// The active states before.
    pub from_configuration: Vec<String>,
    /// The active states after.
    pub to_configuration: Vec<String>,
    /// The context after the event.
    pub context: Value,
    /// The instance's status after.
    pub status: Status,
    /// The key the event was sent with, if any.
    pub idempotency_key: Option<String>,
    /// The microsteps taken, for replay and audit.
    pub microsteps: Value,
    /// The effects decided.
    pub effects: Value,
    /// How long the instance spent in the states it left, in milliseconds.
    pub time_in_states_ms: Option<i64>,
    /// When it was recorded (the `now` the step saw).
    pub created_at: DateTime<Utc>,
}

/// The first result of an idempotency key, scoped to one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it belongs to.
    pub instance_id: String,
    /// The key, as the client sent it.
    pub key: String,
    /// Identifies the event and payload the key was first used with.
    pub fingerprint: String,
    /// The version the key's first use produced.
    pub version: u64,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// An entry for the commit-ordered log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewLogEntry {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it belongs to.
    pub instance_id: String,
    /// `transition`, `started`, `status`, `machine`...
    pub kind: String,
    /// The instance's version the entry is about.
    pub version: u64,
    /// What changed, as the event stream sends it.
    pub data: Value,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// A committed log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its position: entries are read in commit order.
    pub position: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: NewLogEntry,
}

/// Which instances to list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceFilter {
    /// Instances of this namespace.
    pub namespace: String,
    /// Of this machine only.
    pub machine: Option<String>,
    /// In this status only.
    pub status: Option<Status>,
    /// A state path; matches instances in it or any of its descendants.
    pub state: Option<String>,
    /// All of these labels must match.
    pub labels: Vec<(String, String)>,
    /// Only the children of this instance.
    pub parent: Option<String>,
    /// The cursor from a previous page.
    pub after: Option<String>,
    /// At most this many on a page.
    pub limit: usize,
}

/// One page of results and the cursor of the next, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// A durable timer: `event` is delivered to the instance once `due_at` has passed, unless
/// the state that set it is left first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimerRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it belongs to.
    pub instance_id: String,
    /// The event the timer delivers (`timer.<state>.<delay>`); one timer per event.
    pub event: String,
    /// The state that set it (leaving the state deletes it).
    pub state: String,
    /// When it fires.
    pub due_at: DateTime<Utc>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Where an approval stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for decisions.
    Pending,
    /// Approved (by a quorum).
    Approved,
    /// Rejected.
    Rejected,
    /// Its state was left, or the instance ended, before a decision.
    Cancelled,
}

impl ApprovalStatus {
    /// Its name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }

    /// The value a stored name stands for.
    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        Some(match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "rejected" => ApprovalStatus::Rejected,
            "cancelled" => ApprovalStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One approver's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided.
    pub actor: String,
    /// As [`HistoryRecord::token_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// As [`HistoryRecord::on_behalf_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Approved (`true`) or rejected.
    pub approve: bool,
    /// Why, as the approver said.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A human approval requested by a state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Unique across namespaces.
    pub id: String,
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it belongs to.
    pub instance_id: String,
    /// The requesting state's path.
    pub state: String,
    /// What the approver is asked.
    pub prompt: Option<String>,
    /// Who may decide; anyone when empty.
    pub approvers: Vec<String>,
    /// How many approvals it takes.
    pub quorum: u32,
    /// Pending, approved or rejected.
    pub status: ApprovalStatus,
    /// The decisions so far, in order (a quorum needs several).
    pub decisions: Vec<Decision>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it was decided.
    pub decided_at: Option<DateTime<Utc>>,
    /// Who made the deciding decision.
    pub decided_by: Option<String>,
    /// The deciding decision's reason.
    pub reason: Option<String>,
}

/// A named snapshot of an instance at a point of its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it belongs to.
    pub instance_id: String,
    /// Unique per instance.
    pub name: String,
    /// The history record it was taken after.
    pub seq: u64,
    /// The instance's version it names.
    pub version: u64,
    /// The active states at that version.
    pub configuration: Vec<String>,
    /// The context at that version.
    pub context: Value,
    /// The instance's status at that version.
    pub status: Status,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// An event sent to a paused instance, kept in order until it resumes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboxRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it belongs to.
    pub instance_id: String,
    /// Its place in the inbox: events are applied in this order on resume.
    pub seq: u64,
    /// The event's name.
    pub event: String,
    /// The event's payload.
    pub payload: Value,
    /// Who did it.
    pub actor: String,
    /// Why, as the actor said.
    pub reason: String,
    /// As [`HistoryRecord::token_id`].
    pub token_id: Option<String>,
    /// As [`HistoryRecord::on_behalf_of`].
    pub on_behalf_of: Option<String>,
    /// As [`HistoryRecord::addressed_to`].
    pub addressed_to: Option<String>,
    /// The key it was sent with, if any.
    pub idempotency_key: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting to be claimed (possibly not before `available_at`, after a backoff).
    Pending,
    /// Claimed by a worker until its lease expires.
    Leased,
    /// Completed by a worker (or an executor).
    Completed,
    /// Failed for good: attempts ran out, or the failure was not retryable.
    Failed,
    /// Its state was left (or the instance ended) first.
    Cancelled,
}

impl TaskStatus {
    /// Its name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Leased => "leased",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// The value a stored name stands for.
    pub fn parse(s: &str) -> Option<TaskStatus> {
        Some(match s {
            "pending" => TaskStatus::Pending,
            "leased" => TaskStatus::Leased,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether it may still be claimed or completed (pending or leased).
    pub fn is_open(self) -> bool {
        matches!(self, TaskStatus::Pending | TaskStatus::Leased)
    }
}

/// Work for a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Unique across namespaces.
    pub id: String,
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it belongs to.
    pub instance_id: String,
    /// The state that declared it.
    pub state: String,
    /// The queue workers claim it from.
    pub queue: String,
    /// What to do (the state's `action`).
    pub action: String,
    /// Its input, evaluated when the state was entered.
    pub input: Value,
    /// Where it stands.
    pub status: TaskStatus,
    /// The current (or last) attempt, from 1; 0 before the first claim.
    pub attempt: u32,
    /// The retry policy, as `cairn_core::machine::RetryPolicy` JSON.
    pub retry: Value,
    /// How long an attempt may take, when limited.
    pub timeout_ms: Option<u64>,
    /// How often a worker must renew its lease, when required.
    pub heartbeat_ms: Option<u64>,
    /// Not claimed before this (a retry's backoff).
    pub available_at: DateTime<Utc>,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease ends unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The output of the attempt that completed it.
    pub output: Option<Value>,
    /// The error of the last failed attempt.
    pub error: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One attempt at a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The task.
    pub task_id: String,
    /// 1, 2, 3... per task.
    pub attempt: u32,
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it belongs to.
    pub instance_id: String,
    /// The worker that ran it.
    pub worker: String,
    /// When it was claimed.
    pub started_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub ended_at: Option<DateTime<Utc>>,
    /// `completed`, `failed`, `expired` or `cancelled`; `None` while running.
    pub outcome: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Tokens it used, as the worker reported them.
    pub tokens: Option<i64>,
    /// What it cost, as the worker reported it.
    pub cost: Option<f64>,
}

/// An API token (its secret is never stored, only its SHA-256).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its id, shown in lists and used to revoke it.
    pub id: String,
    /// The name it was created with (`""` when none).
    pub name: String,
    /// Who it stands for: the recorded actor of every change made with it (its name, or
    /// `token:<id>` when it has none).
    pub subject: String,
    /// The SHA-256 of its secret.
    pub hash: String,
    /// `viewer`, `worker`, `operator` or `admin`.
    pub role: String,
    /// The namespaces it may use; `["*"]` for all.
    pub namespaces: Vec<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A child instance and the parent that spawned it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance that spawned it.
    pub parent_id: String,
    /// The spawned instance.
    pub child_id: String,
    /// The parent's state that spawned it (leaving it cancels the child); `None` when an
    /// action did.
    pub state: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// An event for an instance, written with the transition that caused it and delivered
/// after commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// Assigned by the store.
    pub seq: i64,
    /// `system` (an engine event such as `child.done`), `event` (an ordinary event a
    /// trigger sends) or `start` (start `instance_id` of machine `event` with `payload` as
    /// input).
    pub kind: String,
    /// How many triggers led to this entry, to bound loops.
    pub hops: u32,
    /// The receiver's namespace.
    pub namespace: String,
    /// The receiver.
    pub instance_id: String,
    /// The event to deliver (for a `start` entry, the machine).
    pub event: String,
    /// The event's payload (for a `start` entry, the input).
    pub payload: Value,
    /// Who did it.
    pub actor: String,
    /// Why, as the actor said.
    pub reason: String,
    /// What wrote it (e.g. `child:ID`), for the log.
    pub source: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// A trigger's stored definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// Unique per namespace.
    pub name: String,
    /// The source machine.
    pub machine: String,
    /// The trigger as it was added (`cairn_api::Trigger`).
    pub definition: Value,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// A cron schedule and its next tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The namespace it belongs to.
    pub namespace: String,
    /// Unique per namespace.
    pub name: String,
    /// The schedule as it was added (`cairn_api::Schedule`).
    pub definition: Value,
    /// Its next tick.
    pub next_at: DateTime<Utc>,
    /// Its last tick, if it has had one.
    pub last_at: Option<DateTime<Utc>>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}
