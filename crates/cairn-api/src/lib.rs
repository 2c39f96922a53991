//! Wire types (requests, responses, stream events) shared by `cairn-server`, the CLI and
//! the clients. They are converted explicitly from internal records (in
//! `cairn-engine`'s `wire` module), so a storage change never silently changes the API.
//! Must not know about storage.
#![warn(missing_docs)]

mod problem;
pub mod report;

pub use problem::ProblemType;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An instance as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Instance {
    /// Unique per namespace.
    pub id: String,
    /// The namespace it belongs to.
    pub namespace: String,
    /// The machine it runs.
    pub machine: String,
    /// The version it is pinned to.
    pub machine_version: u32,
    /// `running`, `paused`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Sorted active leaf states, by dotted path.
    pub configuration: Vec<String>,
    /// Its context after the last change.
    pub context: Value,
    /// 1 after start, +1 per applied event.
    pub version: u64,
    /// Labels to filter by.
    pub labels: BTreeMap<String, String>,
    /// The instance that spawned it, if one did.
    pub parent: Option<String>,
    /// Why it failed, when it did.
    pub last_error: Option<String>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One record of an instance's history: its start, an applied event, a lifecycle change
/// (pause, resume, cancel), a base snapshot (a fork's first record, or what compaction
/// folded older history into), a task attempt's end, or a failure the engine recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Transition {
    /// 1, 2, 3... in commit order.
    pub seq: u64,
    /// `start`, `event`, `pause`, `resume`, `cancel`, `base`, `attempt` or `fail`.
    pub kind: String,
    /// The instance's version after this record (only starts and events advance it).
    pub version: u64,
    /// The event name; `null` for the start.
    pub event: Option<String>,
    /// The event's payload.
    pub payload: Value,
    /// Who made the change: with auth on, the subject of the token used.
    pub actor: String,
    /// The id of the token the change was made with (auth on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Whom the caller said it acted for, recorded beside `actor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// The state an outcome (`task.done`, `approve`, `child.done`, ...) was addressed to:
    /// only that state, its ancestors and its descendants could take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addressed_to: Option<String>,
    /// Why, as the actor said.
    pub reason: String,
    /// The active states before.
    pub from: Vec<String>,
    /// The active states after.
    pub to: Vec<String>,
    /// The context after.
    pub context: Value,
    /// The instance's status after.
    pub status: String,
    /// The key the event was sent with, if any.
    pub idempotency_key: Option<String>,
    /// The effects decided (timers, tasks, approvals, children, sends).
    pub effects: Value,
    /// How long the instance spent in the states it left, in milliseconds.
    pub time_in_states_ms: Option<i64>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// A machine version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Machine {
    /// Unique per namespace.
    pub name: String,
    /// The namespace it belongs to.
    pub namespace: String,
    /// 1, 2, 3... per machine; versions are immutable.
    pub version: u32,
    /// SHA-256 of the canonical definition: same content, same digest.
    pub digest: String,
    /// When this version was applied.
    pub created_at: DateTime<Utc>,
    /// The definition's `description`, if it has one.
    pub description: Option<String>,
}

/// The answer to applying a definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Applied {
    /// The machine's name.
    pub machine: String,
    /// The version applied (or found, when the definition was unchanged).
    pub version: u32,
    /// False when the content equalled the latest version: nothing was written.
    pub created: bool,
    /// What validation found that does not refuse the definition (an outcome of a task,
    /// approval, child or map that no state takes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Finding>,
}

/// One finding of validation: a problem that refuses a definition (listed in an
/// `invalid-definition` problem's `problems`) or a warning (in [`Applied::warnings`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Finding {
    /// The stable kind: `unknown-target`, `unhandled-outcome`, ...
    pub kind: String,
    /// `error` (refuses the definition) or `warning`.
    pub severity: String,
    /// The file, when the definition came from one.
    pub file: Option<String>,
    /// The line (1-based).
    pub line: u32,
    /// The column (1-based).
    pub column: u32,
    /// The dotted path of the state concerned, when there is one.
    pub state: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

/// The answer to sending an event: the instance as it is now (its fields at the top
/// level), with the transition recorded for this event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Sent {
    /// The instance after the event.
    #[serde(flatten)]
    pub instance: Instance,
    /// The transition recorded; `null` when the event was queued.
    pub transition: Option<Transition>,
    /// True when the idempotency key had been used already: nothing was applied.
    pub replayed: bool,
    /// True when the instance is paused: the event waits, in order, for `resume`.
    pub queued: bool,
}

/// A page of instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstancePage {
    /// This page's instances.
    pub instances: Vec<Instance>,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
}

/// The result of verifying one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Verified {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance.
    pub id: String,
    /// How many versions were replayed.
    pub versions: u64,
    /// Replay reproduced every version and the stored instance.
    pub ok: bool,
    /// What differed, when something did.
    pub problem: Option<String>,
}

/// One approver's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    /// Who decided.
    pub actor: String,
    /// As [`Transition::token`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// As [`Transition::on_behalf_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Approved (`true`) or rejected.
    pub approve: bool,
    /// Why, as the actor said.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A human approval requested by a state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Approval {
    /// Unique across namespaces.
    pub id: String,
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance.
    pub instance: String,
    /// The requesting state's path.
    pub state: String,
    /// What the approver is asked.
    pub prompt: Option<String>,
    /// Who may decide (empty: anyone with the role).
    pub approvers: Vec<String>,
    /// How many approvals it takes.
    pub quorum: u32,
    /// `pending`, `approved`, `rejected` or `cancelled`.
    pub status: String,
    /// The decisions so far, in order.
    pub decisions: Vec<Decision>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was decided.
    pub decided_at: Option<DateTime<Utc>>,
    /// Who made the deciding decision.
    pub decided_by: Option<String>,
    /// The deciding decision's reason.
    pub reason: Option<String>,
}

/// The answer to an approve / reject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decided {
    /// The approval after the decision.
    pub approval: Approval,
    /// The instance after the decision.
    pub instance: Instance,
    /// The `approve` / `reject` transition; `null` while a quorum is short or when the
    /// instance is paused (the event is then queued).
    pub transition: Option<Transition>,
}

/// A named checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Checkpoint {
    /// Unique per instance.
    pub name: String,
    /// The instance.
    pub instance: String,
    /// The instance's version it names.
    pub version: u64,
    /// The history record it was taken at.
    pub seq: u64,
    /// The active states at that version.
    pub configuration: Vec<String>,
    /// The context at that version.
    pub context: Value,
    /// The instance's status at that version.
    pub status: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A pending timer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Timer {
    /// The event it delivers (`timer.<state>.<duration>`).
    pub event: String,
    /// The state that set it.
    pub state: String,
    /// When it fires.
    pub due_at: DateTime<Utc>,
}

/// What an instance waits for now (`GET /v1/instances/{id}/waiting`, `cairn show`): the
/// work it asked for that has not come back, and the events a pause holds back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Waiting {
    /// Pending approvals: prompt, approvers, quorum and the decisions so far.
    pub approvals: Vec<Approval>,
    /// Timers not fired yet, soonest first.
    pub timers: Vec<Timer>,
    /// Tasks pending or leased, each with its attempts so far.
    pub tasks: Vec<TaskWithAttempts>,
    /// How many children the instance has, by status.
    pub children_by_status: std::collections::BTreeMap<String, u64>,
    /// Its children still running or paused (at most 100).
    pub children: Vec<WaitingChild>,
    /// Events a pause holds back, in the order they will be applied on resume.
    pub queued: Vec<String>,
}

/// A child an instance waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WaitingChild {
    /// The child's id.
    pub id: String,
    /// Its machine.
    pub machine: String,
    /// `running` or `paused`.
    pub status: String,
    /// Its current states.
    pub configuration: Vec<String>,
}

/// Everything about one instance, as `export --format json` writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Export {
    /// The instance.
    pub instance: Instance,
    /// Every history record, oldest first.
    pub history: Vec<Transition>,
    /// Its checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// Its approvals.
    pub approvals: Vec<Approval>,
    /// Its pending timers.
    pub timers: Vec<Timer>,
    /// The instance's tasks, each with its attempts.
    #[serde(default)]
    pub tasks: Vec<TaskWithAttempts>,
    /// Token and cost figures workers reported, summed over every attempt.
    #[serde(default)]
    pub usage: Usage,
}

/// One attempt at a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Attempt {
    /// The attempt, 1, 2, 3... per task.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When it was claimed.
    pub started_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub ended_at: Option<DateTime<Utc>>,
    /// `completed`, `failed`, `expired` or `cancelled`; `null` while running.
    pub outcome: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it ran, in milliseconds, once ended.
    pub duration_ms: Option<i64>,
    /// Tokens it used, as the worker reported them.
    pub tokens: Option<i64>,
    /// What it cost, as the worker reported it.
    pub cost: Option<f64>,
}

/// A task and its attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskWithAttempts {
    /// The task.
    #[serde(flatten)]
    pub task: Task,
    /// Its attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

/// Summed token and cost figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Usage {
    /// How many attempts it took.
    pub attempts: u64,
    /// Tokens used in all, as workers reported them.
    pub tokens: i64,
    /// What it cost in all, as workers reported it.
    pub cost: f64,
}

/// A task for a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Task {
    /// Unique across namespaces.
    pub id: String,
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it works for.
    pub instance: String,
    /// The state that owns it.
    pub state: String,
    /// The queue workers claim it from.
    pub queue: String,
    /// What to do (the state's `action`).
    pub action: String,
    /// Its input.
    pub input: Value,
    /// `pending`, `leased`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// How many attempts it has had.
    pub attempt: u32,
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
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A task claimed by a worker: do the work, then complete or fail this attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Claimed {
    /// The task.
    pub id: String,
    /// The namespace it belongs to.
    pub namespace: String,
    /// The instance it works for.
    pub instance: String,
    /// The state that owns it.
    pub state: String,
    /// Its queue.
    pub queue: String,
    /// What to do.
    pub action: String,
    /// Its input.
    pub input: Value,
    /// From 1; with `id`, the idempotency key of the worker's own side effects.
    pub attempt: u32,
    /// How many attempts it may take.
    pub max_attempts: u32,
    /// When this attempt's lease ends unless renewed.
    pub lease_expires_at: DateTime<Utc>,
}

/// What `stats` reports for a namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Stats {
    /// machine -> status -> instances.
    pub instances: BTreeMap<String, BTreeMap<String, u64>>,
    /// Applied events (starts included).
    pub transitions: u64,
    /// machine -> state -> mean milliseconds spent in it (over the visits that ended).
    pub mean_time_in_state_ms: BTreeMap<String, BTreeMap<String, f64>>,
}

/// An error (RFC 9457 problem details), as `application/problem+json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Problem {
    /// A stable identifier: `/problems/not-found`, `/problems/event-not-accepted`, ...
    /// (one of [`ProblemType::ALL`]).
    #[serde(rename = "type")]
    #[schemars(schema_with = "problem_types")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and where.
    pub detail: String,
    /// Extra members some problems carry (`accepts`, `current_version`, `problems`...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The schema of a problem's `type`: the URI of one of [`ProblemType::ALL`].
fn problem_types(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let uris: Vec<String> = ProblemType::ALL.iter().map(|p| p.uri()).collect();
    schemars::json_schema!({
        "type": "string",
        "description": "A stable identifier of the problem type.",
        "enum": uris,
    })
}

/// A trigger: when an instance of `machine` enters `on_state` (or a descendant of it) or
/// reaches `on_status`, and `when` holds, start an instance or send an event.
/// Expressions are CEL over `context`, `event`, `instance` and `now` of the source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Unique per namespace.
    pub name: String,
    /// The source machine.
    pub machine: String,
    /// Fires when the source enters this state (dotted path) or one of its descendants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_state: Option<String>,
    /// Fires when the source reaches this status: `running` (started or resumed),
    /// `paused`, `completed`, `failed` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_status: Option<String>,
    /// CEL condition; fires always when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Start an instance (exactly one of `start` and `send`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<TriggerStart>,
    /// Send an event (exactly one of `start` and `send`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<TriggerSend>,
    /// Set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// Start an instance of `machine`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerStart {
    /// The machine to start.
    pub machine: String,
    /// CEL: the start input (an object); `{}` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// CEL: the new instance's id; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Send `event` to the instance whose id `to` yields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerSend {
    /// CEL: the receiving instance's id.
    pub to: String,
    /// The event to send.
    pub event: String,
    /// CEL: the payload; `{}` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// A cron schedule that starts instances of `machine`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Unique per namespace.
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds
    /// first; `@hourly`, `@daily` and the like.
    pub cron: String,
    /// An IANA time zone (`Europe/Paris`); `UTC` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The machine it starts.
    pub machine: String,
    /// The start input of every instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `once` (default): ticks missed while the server was down run once when it is back;
    /// `skip`: they do not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<String>,
    /// Set by the server: the next tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    /// Set by the server: the last tick that started an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<DateTime<Utc>>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// An API token (never its secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Token {
    /// Its id, shown in lists and used to revoke it.
    pub id: String,
    /// The name it was created with (`""` when none).
    pub name: String,
    /// Who it stands for: the recorded actor of every change made with it.
    pub subject: String,
    /// `viewer`, `worker`, `operator` or `admin`.
    pub role: String,
    /// The namespaces it may use; `["*"]` for all.
    pub namespaces: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just created: the token and its secret, shown only this once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedToken {
    /// The token.
    #[serde(flatten)]
    pub token: Token,
    /// The bearer secret; only its hash is stored.
    #[serde(rename = "token")]
    pub secret: String,
}

/// `POST /v1/tokens`: a new token, no stronger and no wider than the caller's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Its subject: the actor recorded for whatever is done with it (`token:<id>` when
    /// empty). `cairn`, `timer`, `anonymous` and the prefixes `cairn:`, `trigger:`,
    /// `instance:`, `schedule:`, `token:` and `child:` are reserved.
    #[serde(default)]
    pub name: String,
    /// `viewer`, `worker`, `operator` or `admin`.
    pub role: String,
    /// The namespaces it may use; `*` for all.
    pub namespaces: Vec<String>,
}

/// `POST /v1/instances`: start an instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// The machine to start (its latest version).
    pub machine: String,
    /// A version of the machine; the latest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The instance's id; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Merged over the machine's `context` defaults.
    #[serde(default)]
    pub input: Value,
    /// Labels to filter instances by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Who starts it (with auth on, the token's subject is recorded instead, and this
    /// goes to `on_behalf_of`).
    #[serde(default)]
    pub actor: String,
    /// Whom the caller acts for, recorded beside the actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// `POST /v1/instances/{id}/events`: send an event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// The event's name.
    pub event: String,
    /// Its payload (an object).
    #[serde(default)]
    pub payload: Value,
    /// An idempotency key (1-200 characters): a repeat returns the first result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Refused unless the instance is at this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// As [`Start::actor`].
    #[serde(default)]
    pub actor: String,
    /// Why, as the actor said.
    #[serde(default)]
    pub reason: String,
    /// As [`Start::on_behalf_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// Who does a lifecycle change (pause, resume, cancel, fork) and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Who {
    /// As [`Start::actor`].
    #[serde(default)]
    pub actor: String,
    /// Why, as the actor said.
    #[serde(default)]
    pub reason: String,
    /// As [`Start::on_behalf_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// `POST /v1/approvals/{aid}/approve|reject`: a decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// As [`Start::actor`]; an approval's `approvers` are matched against the recorded
    /// actor (with auth on, the token's subject).
    #[serde(default)]
    pub actor: String,
    /// Why; required for a rejection.
    #[serde(default)]
    pub reason: String,
    /// Merged into the delivered event's payload (an object).
    #[serde(default)]
    pub payload: Value,
    /// As [`Start::on_behalf_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// `POST /v1/instances/{id}/fork`: a new instance from a version or a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fork {
    /// A version number, or a checkpoint's name.
    pub from: Value,
    /// The new instance's id; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A JSON merge patch applied to the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// As [`Start::actor`].
    #[serde(default)]
    pub actor: String,
    /// As [`Start::on_behalf_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// What `cairn vacuum` did: the space the store took before and after.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Vacuum {
    /// Bytes the data took (SQLite: the database's pages; PostgreSQL: Cairn's tables
    /// with their indexes).
    pub bytes_before: u64,
    /// Bytes the data takes after.
    pub bytes_after: u64,
    /// Of those, bytes free for reuse (SQLite; `null` on PostgreSQL, which does not say).
    pub free_bytes_before: Option<u64>,
    /// Of those, bytes free for reuse after (SQLite).
    pub free_bytes_after: Option<u64>,
    /// Bounded steps taken (SQLite: units of 1,024 pages; PostgreSQL: tables).
    pub steps: u64,
    /// The longest step, in milliseconds: the most it held writers up (SQLite; on
    /// PostgreSQL writers carry on during each table's VACUUM).
    pub longest_step_ms: f64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// What `cairn repair` found: stored machine versions that cannot be read back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Repair {
    /// Deleted (no instance ran on them).
    pub deleted: Vec<Unreadable>,
    /// Would be deleted (a dry run).
    pub deletable: Vec<Unreadable>,
    /// Kept: instances run on them (delete or migrate those, then repair again).
    pub in_use: Vec<Unreadable>,
}

/// A machine version whose stored definition cannot be read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Unreadable {
    /// The namespace it belongs to.
    pub namespace: String,
    /// The machine.
    pub machine: String,
    /// The version that cannot be read.
    pub version: u32,
    /// How many instances run on it.
    pub instances: u64,
}

/// `POST /v1/instances/{id}/checkpoints`: a name for the instance's current version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRequest {
    /// The checkpoint's name, unique per instance.
    pub name: String,
}

/// `POST /v1/verify`: one instance, or every instance of the namespace when `id` is absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The instance; every instance of the namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// What verification found: each instance's result, and how many failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerifyReport {
    /// No instance failed.
    pub ok: bool,
    /// How many instances were verified.
    pub checked: usize,
    /// How many failed.
    pub failed: usize,
    /// Each instance's result.
    pub instances: Vec<Verified>,
}

impl VerifyReport {
    /// The report of these results (the server's and the CLI's, one way).
    pub fn new(instances: Vec<Verified>) -> VerifyReport {
        let failed = instances.iter().filter(|r| !r.ok).count();
        VerifyReport {
            ok: failed == 0,
            checked: instances.len(),
            failed,
            instances,
        }
    }
}

/// `POST /v1/tick`: fire what is due now, and apply retention with these settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TickRequest {
    /// Remove instances finished longer ago than this many milliseconds (0 to about
    /// 100 years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_finished_ms: Option<i64>,
    /// Fold all but this many of each instance's newest history records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_history: Option<usize>,
}

/// What a tick did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Ticked {
    /// Timer events applied.
    pub timers_fired: usize,
    /// Finished instances removed by retention.
    pub instances_removed: u64,
    /// History records folded by compaction.
    pub history_folded: u64,
}

/// `POST /v1/repair`: whether only to report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepairRequest {
    /// Only report what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
}

/// The body of a state change that takes no parameters (`/v1/backup`, `/v1/vacuum`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `POST /v1/tasks/claim`: up to `batch` tasks of `queues` for `worker`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The queues to claim from.
    pub queues: Vec<String>,
    /// Recorded on the attempt.
    pub worker: String,
    /// 1 to 100.
    #[serde(default = "one")]
    pub batch: usize,
    /// How long to wait for a task when none is ready (bounded by the server's
    /// `http.max_claim_wait`).
    #[serde(default)]
    pub wait_ms: u64,
    /// The lease; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

fn one() -> usize {
    1
}

/// `POST /v1/tasks/{id}/heartbeat`: renew the lease of an attempt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The attempt, 1, 2, 3... per task.
    pub attempt: u32,
    /// The new lease; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

/// A renewed lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Heartbeat {
    /// The task.
    pub task: String,
    /// The attempt, 1, 2, 3... per task.
    pub attempt: u32,
    /// When the renewed lease ends.
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// `POST /v1/tasks/{id}/complete`: an attempt's output, and what it used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The attempt, 1, 2, 3... per task.
    pub attempt: u32,
    /// The attempt's output, delivered to the state as `task.done`'s payload.
    #[serde(default)]
    pub output: Value,
    /// Tokens it used, as the worker reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<i64>,
    /// What it cost, as the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

/// `POST /v1/tasks/{id}/fail`: why an attempt failed, and whether another may succeed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// The attempt, 1, 2, 3... per task.
    pub attempt: u32,
    /// What went wrong.
    pub error: String,
    /// Another attempt may succeed (the task's retry policy then applies); default true.
    #[serde(default = "yes")]
    pub retryable: bool,
    /// Tokens it used, as the worker reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<i64>,
    /// What it cost, as the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/tasks/report`: outcomes of attempts and, optionally, a claim of the next
/// tasks, in one request and one unit of work. Each outcome is checked and applied on its
/// own; the claim runs after them and can take the tasks they enqueued.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// The outcomes, at most 1000.
    #[serde(default)]
    pub outcomes: Vec<OutcomeRequest>,
    /// Tasks to claim once the outcomes are applied (a long poll up to `wait_ms` when none
    /// is ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimRequest>,
}

/// What became of an attempt: `completed` (with `output`) or `failed` (with `error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// The attempt succeeded: `task.done` reaches the instance.
    Completed,
    /// The attempt failed: retried by the task's policy when `retryable`, else
    /// `task.failed` reaches the instance.
    Failed,
}

/// One attempt's outcome in a [`ReportRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRequest {
    /// The task.
    pub task: String,
    /// The attempt, 1, 2, 3... per task.
    pub attempt: u32,
    /// `completed` or `failed`.
    pub outcome: OutcomeKind,
    /// A completed attempt's output, delivered to the state as `task.done`'s payload.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub output: Value,
    /// A failed attempt's error (required when failed, refused when completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A failed attempt: whether another may succeed; default true.
    #[serde(default = "yes")]
    pub retryable: bool,
    /// Tokens it used, as the worker reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<i64>,
    /// What it cost, as the worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

/// What became of one outcome of a [`ReportRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OutcomeReport {
    /// The task.
    pub task: String,
    /// The attempt.
    pub attempt: u32,
    /// Whether the outcome is applied: now, or before (`repeated`).
    pub applied: bool,
    /// An identical repeat of an outcome that had applied already (a retry after a lost
    /// answer): answered as applied, and nothing changed.
    pub repeated: bool,
    /// A failure that will be tried again.
    pub retrying: bool,
    /// The task's status after it, when applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why it was refused (a stale attempt is a `conflict`, an unknown task `not-found`),
    /// when not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// The answer to a [`ReportRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reported {
    /// One per outcome, in the order given.
    pub outcomes: Vec<OutcomeReport>,
    /// The tasks claimed (empty without a claim).
    pub claimed: Vec<Claimed>,
}

/// A failed attempt's task, and whether it will be tried again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Failed {
    /// The task after the failure.
    pub task: Task,
    /// Whether another attempt will follow.
    pub retrying: bool,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Health {
    /// Always `ok`: an unhealthy server answers a problem instead.
    pub status: String,
}

/// `GET /v1/machines/{name}` and `.../versions/{version}`: a machine version with its
/// definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MachineDetail {
    /// The version.
    #[serde(flatten)]
    pub machine: Machine,
    /// The canonical definition (JSON), as stored.
    pub definition: Value,
}

/// One entry of the event stream (`GET /v1/events`, server-sent events): its `data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogEvent {
    /// Its position in the log (also the event's `id`, for `Last-Event-ID`).
    pub position: i64,
    /// The namespace it is about (`""` for a `reset`).
    pub namespace: String,
    /// The instance it is about (`""` for a `reset`).
    pub instance: String,
    /// What happened (also the event's name): `transition`, `instance_deleted`, `reset`...
    pub kind: String,
    /// The instance's version it is about.
    pub version: u64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// What changed.
    pub data: Value,
}
