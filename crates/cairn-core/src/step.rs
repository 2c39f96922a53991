//! The step function: `(machine, snapshot, event, env) -> Result<Outcome, Rejection>`.
//!
//! Pure and deterministic: time and instance data come in through [`Env`]; nothing here
//! reads a clock or a random source. The algorithm is SCXML's (W3C, Appendix D):
//! select transitions per active atomic state in document order, bubbling to ancestors;
//! drop conflicting ones; exit, run transition actions, enter; then run eventless
//! transitions and internal (done) events until the configuration is stable. See the
//! crate docs for worked traces.
//!
//! State-bound resources (timers, tasks, approvals, spawned children) are reconciled
//! once, at the end of the macrostep, like SCXML's `invoke`: a state entered and left
//! within one macrostep sets nothing, and a state left and re-entered cancels and sets
//! afresh.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::definition::FinalStatus;
use crate::expr::Scope;
use crate::machine::{
    Action, Assign, Executor, Kind, MAX_MICROSTEPS, Machine, MapSpec, RetryPolicy, Spawn, StateId,
    TransitionId, ValueSrc,
};

/// The lifecycle status of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Taking events.
    Running,
    /// Paused: events wait in its inbox.
    Paused,
    /// Ended in a `completed` final state.
    Completed,
    /// Ended in a `failed` final state, or failed by the engine.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl Status {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Completed, failed or cancelled: no event will ever be applied again.
    pub fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// The status a name stands for.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "running" => Status::Running,
            "paused" => Status::Paused,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
}

impl From<FinalStatus> for Status {
    fn from(s: FinalStatus) -> Status {
        match s {
            FinalStatus::Completed => Status::Completed,
            FinalStatus::Failed => Status::Failed,
            FinalStatus::Cancelled => Status::Cancelled,
        }
    }
}

/// What is stored of an instance's state: enough to take the next step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The active leaf states, by dotted path, sorted.
    pub configuration: Vec<String>,
    /// The context.
    pub context: Value,
    /// The status.
    pub status: Status,
}

/// An event as the step function sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its name.
    pub name: String,
    /// Its payload.
    #[serde(default = "empty_object")]
    pub payload: Value,
    /// Who sent it.
    #[serde(default)]
    pub actor: String,
    /// Why, as the sender said.
    #[serde(default)]
    pub reason: String,
    /// The state that owns the work this event reports on (a task's, an approval's, a
    /// spawned child's or a map's state), by dotted path: only transitions whose source is
    /// that state, one of its ancestors or one of its descendants take it, so a parallel
    /// sibling region never takes another region's outcome. `None`: any active state may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl Event {
    /// An event named `name` with an empty payload.
    pub fn new(name: impl Into<String>) -> Event {
        Event {
            name: name.into(),
            payload: empty_object(),
            actor: String::new(),
            reason: String::new(),
            to: None,
        }
    }

    /// The same event with `payload`.
    pub fn with_payload(mut self, payload: Value) -> Event {
        self.payload = payload;
        self
    }

    /// The same event addressed to the state at `path` (see [`Event::to`]).
    pub fn to_state(mut self, path: impl Into<String>) -> Event {
        self.to = Some(path.into());
        self
    }

    fn to_json(&self) -> Value {
        json!({"name": self.name, "payload": self.payload, "actor": self.actor, "reason": self.reason})
    }
}

/// Everything from outside the machine a step may read.
#[derive(Clone, Debug, PartialEq)]
pub struct Env {
    /// The time of the step: every `now` in it is this one.
    pub now: DateTime<Utc>,
    /// The `instance` variable: id, machine, version, namespace, labels, ...
    pub instance: Value,
    /// The `records` variable: counts of findings, artifacts and notes.
    pub records: Value,
    /// What evaluations may spend (`eval_steps`, `eval_bytes`, shared by the whole step)
    /// and how large the context may grow (`context_bytes`, `json_depth`).
    pub limits: crate::Limits,
}

impl Env {
    /// An environment at `now`.
    pub fn at(now: DateTime<Utc>) -> Env {
        Env {
            now,
            instance: empty_object(),
            records: empty_object(),
            limits: crate::Limits::default(),
        }
    }
}

/// Names reserved for events the engine delivers: clients may not send them.
pub fn is_reserved_event(name: &str) -> bool {
    delivered_by(name).is_some()
}

/// Who delivers a reserved event, and what a person or an agent does to make it happen
/// (the CLI command, the HTTP route); `None` for an event clients send themselves.
pub fn delivered_by(name: &str) -> Option<&'static str> {
    Some(match name {
        "approve" => {
            "an approver decides it: `cairn approve ID` (POST /v1/approvals/{aid}/approve)"
        }
        "reject" => {
            "an approver decides it: `cairn reject ID --reason WHY` (POST /v1/approvals/{aid}/reject)"
        }
        _ if name.starts_with("task.") => {
            "a worker reports its task: `cairn worker`, or POST /v1/tasks/{id}/complete|fail"
        }
        _ if name.starts_with("child.") => "a child instance delivers it when it ends",
        _ if name.starts_with("done.") => "the machine raises it when a state's work is done",
        _ if name.starts_with("timer.") => "the engine delivers it when the timer is due",
        _ => return None,
    })
}

/// One item of a map state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapItem {
    /// Its key: unique in the map.
    pub key: String,
    /// The child's input.
    pub input: Value,
    /// Keys of the items it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// A decision for the engine to carry out after the step is committed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// Set a timer.
    SetTimer {
        /// The state that set it.
        state: String,
        /// The event it delivers.
        event: String,
        /// After how long.
        delay_ms: u64,
    },
    /// Delete a timer.
    CancelTimer {
        /// The state that set it.
        state: String,
        /// Its event.
        event: String,
    },
    /// Enqueue a task.
    EnqueueTask {
        /// The state that owns it.
        state: String,
        /// Its queue.
        queue: String,
        /// What to do.
        action: String,
        /// Its input.
        input: Value,
        /// How long an attempt may take.
        timeout_ms: Option<u64>,
        /// How often the lease must be renewed.
        heartbeat_ms: Option<u64>,
        /// How failed attempts are retried.
        retry: RetryPolicy,
    },
    /// Cancel a state's open task.
    CancelTask {
        /// The state that owned it.
        state: String,
    },
    /// Request an approval.
    RequestApproval {
        /// The state that asks.
        state: String,
        /// What the approver is asked.
        prompt: Option<String>,
        /// Who may decide.
        approvers: Vec<String>,
        /// How many approvals it takes.
        quorum: u32,
    },
    /// Cancel a state's pending approval.
    CancelApproval {
        /// The state that asked.
        state: String,
    },
    /// Start a child instance; `state` is set when a state declares it (and its exit
    /// cancels the child), `None` when an action spawned it.
    Spawn {
        /// The state that declares it; `None` when an action spawned it.
        state: Option<String>,
        /// The machine the child runs.
        machine: String,
        /// Its id; generated when `None`.
        id: Option<String>,
        /// Its start input.
        input: Value,
    },
    /// Cancel the children a state started.
    CancelSpawn {
        /// The state that declared the child.
        state: String,
    },
    /// Start a map state's children (the engine starts them as their dependencies and the
    /// concurrency allow). Leaving the state is a `CancelSpawn`.
    StartMap {
        /// The map state.
        state: String,
        /// The machine each child runs.
        machine: String,
        /// The items, in order.
        items: Vec<MapItem>,
        /// At most this many children at once.
        concurrency: Option<u32>,
        /// Cancel the rest when a child fails.
        fail_fast: bool,
    },
    /// Send an event to another instance.
    Send {
        /// The receiving instance's id.
        to: String,
        /// The event.
        event: String,
        /// Its payload.
        payload: Value,
    },
    /// Raise an event inside the instance.
    Emit {
        /// The event.
        event: String,
        /// Its payload.
        payload: Value,
    },
}

/// Why a microstep was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MicrostepKind {
    /// Entering the initial configuration at start.
    Initial,
    /// Transitions selected by the external event.
    External,
    /// Eventless (`always`) transitions.
    Eventless,
    /// Transitions selected by an internal (done) event.
    Internal,
}

/// One microstep: the transitions taken together, and the states they exited and entered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Microstep {
    /// Why it was taken.
    pub kind: MicrostepKind,
    /// The event that selected the transitions (`None` when eventless or initial).
    pub event: Option<String>,
    /// Transition ids in the machine, in the order they were taken.
    pub transitions: Vec<TransitionId>,
    /// States exited, innermost first.
    pub exited: Vec<String>,
    /// States entered, outermost first.
    pub entered: Vec<String>,
}

/// The result of a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The instance after the step.
    pub snapshot: Snapshot,
    /// What the engine carries out after commit.
    pub effects: Vec<Effect>,
    /// The microsteps taken, for replay and audit.
    pub microsteps: Vec<Microstep>,
}

/// Why an event was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// The instance is finished.
    #[error("the instance is {status}; it takes no more events", status = .status.as_str())]
    Finished {
        /// How it finished.
        status: Status,
    },
    /// No transition takes the event in this configuration.
    #[error("event `{event}`{} is not accepted in {configuration:?}; accepted now: {}{}", .to.as_ref().map(|t| format!(" (addressed to `{t}`)")).unwrap_or_default(), if .accepts.is_empty() { "none".to_string() } else { .accepts.join(", ") }, crate::error::did_you_mean(.event, .accepts.iter().map(String::as_str)))]
    NotAccepted {
        /// The event.
        event: String,
        /// The state it was addressed to (`Event::to`), when it was.
        to: Option<String>,
        /// The active states.
        configuration: Vec<String>,
        /// The events accepted now.
        accepts: Vec<String>,
    },
    /// A guard could not be evaluated.
    #[error("guard `{expr}` of state `{state}` could not be evaluated: {message}")]
    Guard {
        /// The state whose transition it guards.
        state: String,
        /// The guard as written.
        expr: String,
        /// What went wrong.
        message: String,
    },
    /// An action failed.
    #[error("{what} in state `{state}` failed: {message}")]
    Action {
        /// The state whose action failed.
        state: String,
        /// Which action.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// Eventless transitions kept firing past the limit of microsteps.
    #[error(
        "more than {limit} microsteps in one macrostep: the machine loops without waiting for an event"
    )]
    Runaway {
        /// The limit of microsteps.
        limit: usize,
    },
    /// The start input is not valid.
    #[error("invalid start input: {0}")]
    Input(String),
    /// The snapshot is not one of this machine.
    #[error("the snapshot does not fit this machine: {0}")]
    Snapshot(String),
    /// The step would leave the context over a limit (`limits.context_bytes`,
    /// `limits.json_depth`).
    #[error("{0}")]
    Limit(String),
    /// The step failed inside Cairn (it panicked); nothing of it was kept.
    #[error("the step failed inside Cairn: {0}")]
    Internal(String),
    /// The event is addressed to a state the machine does not have.
    #[error("the event is addressed to state `{0}`, which this machine does not have")]
    Address(String),
}

/// Runs `f` (a step, a start, a replay), turning a panic into [`Rejection::Internal`]: one
/// instance's failure never takes down the process, or the thread that writes for others.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, Rejection>) -> Result<T, Rejection> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(Rejection::Internal(what))
    })
}

/// Starts an instance: context defaults merged with `input`, then the initial
/// configuration entered and the first macrostep run.
pub fn start(machine: &Machine, input: &Value, env: &Env) -> Result<Outcome, Rejection> {
    let input = match input {
        Value::Null => empty_object(),
        Value::Object(_) => input.clone(),
        other => {
            return Err(Rejection::Input(format!(
                "the start input must be a JSON object, got {}",
                json_kind(other)
            )));
        }
    };
    machine.check_input(&input).map_err(Rejection::Input)?;
    let mut context = machine.context.clone();
    if let (Value::Object(c), Value::Object(i)) = (&mut context, &input) {
        for (k, v) in i {
            c.insert(k.clone(), v.clone());
        }
    }
    let start_event = Event::new("").with_payload(input);
    let mut run = Run::new(
        machine,
        env,
        &start_event,
        context,
        vec![false; machine.states.len()],
    );
    run.enter_initial()?;
    run.macrostep()?;
    run.finish()
}

/// Applies one external event to a snapshot.
pub fn step(
    machine: &Machine,
    snapshot: &Snapshot,
    event: &Event,
    env: &Env,
) -> Result<Outcome, Rejection> {
    if snapshot.status.is_finished() {
        return Err(Rejection::Finished {
            status: snapshot.status,
        });
    }
    let owner = match &event.to {
        Some(path) => Some(
            machine
                .state_by_path(path)
                .ok_or_else(|| Rejection::Address(path.clone()))?,
        ),
        None => None,
    };
    let active = configuration_of(machine, &snapshot.configuration)?;
    let mut run = Run::new(machine, env, event, snapshot.context.clone(), active);
    let enabled = run.select_addressed(Some(&event.name), None, owner)?;
    if enabled.is_empty() {
        return Err(Rejection::NotAccepted {
            event: event.name.clone(),
            to: event.to.clone(),
            configuration: snapshot.configuration.clone(),
            accepts: accepts(machine, snapshot),
        });
    }
    run.microstep(MicrostepKind::External, Some(&event.name), &enabled, None)?;
    run.macrostep()?;
    run.finish()
}

/// Re-applies recorded microsteps to a snapshot (or, with `None`, to the start of a new
/// instance with `event.payload` as input) without selecting transitions: replaying a
/// history must give the snapshot it recorded.
pub fn replay(
    machine: &Machine,
    snapshot: Option<&Snapshot>,
    event: &Event,
    env: &Env,
    microsteps: &[Microstep],
) -> Result<Snapshot, Rejection> {
    let (context, active) = match snapshot {
        Some(s) => (
            s.context.clone(),
            configuration_of(machine, &s.configuration)?,
        ),
        None => {
            let mut context = machine.context.clone();
            if let (Value::Object(c), Value::Object(i)) = (&mut context, &event.payload) {
                for (k, v) in i {
                    c.insert(k.clone(), v.clone());
                }
            }
            (context, vec![false; machine.states.len()])
        }
    };
    let mut run = Run::new(machine, env, event, context, active);
    for m in microsteps {
        match m.kind {
            MicrostepKind::Initial => run.enter_initial()?,
            kind => {
                if m.transitions
                    .iter()
                    .any(|t| *t >= machine.transitions.len())
                {
                    return Err(Rejection::Snapshot(
                        "a recorded transition does not exist".into(),
                    ));
                }
                let trigger = (kind == MicrostepKind::Internal)
                    .then(|| done_event(m.event.as_deref().unwrap_or_default()));
                run.microstep(kind, m.event.as_deref(), &m.transitions, trigger.as_ref())?;
            }
        }
    }
    Ok(run.finish()?.snapshot)
}

/// The effects that set up the state-bound resources (timers, tasks, approvals, spawned
/// children) of every active state of a snapshot, as if each had just been entered, but
/// without running any entry action: what a fork or a restore needs afresh.
pub fn resources(
    machine: &Machine,
    snapshot: &Snapshot,
    env: &Env,
) -> Result<Vec<Effect>, Rejection> {
    if snapshot.status.is_finished() {
        return Ok(Vec::new());
    }
    let active = configuration_of(machine, &snapshot.configuration)?;
    let event = Event::new("");
    let mut run = Run::new(
        machine,
        env,
        &event,
        snapshot.context.clone(),
        active.clone(),
    );
    run.was_active = vec![false; machine.states.len()];
    run.entered = active;
    Ok(run.finish()?.effects)
}

/// The event names the instance accepts now (any transition from an active state,
/// guards aside), sorted; internal `done.` and `timer.` events left out.
pub fn accepts(machine: &Machine, snapshot: &Snapshot) -> Vec<String> {
    if snapshot.status.is_finished() {
        return Vec::new();
    }
    let Ok(active) = configuration_of(machine, &snapshot.configuration) else {
        return Vec::new();
    };
    let mut names: Vec<String> = active
        .iter()
        .enumerate()
        .filter(|(_, a)| **a)
        .flat_map(|(i, _)| machine.states[i].on_order.iter())
        .filter(|n| !n.starts_with("done.") && !n.starts_with("timer."))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn done_event(name: &str) -> Value {
    json!({"name": name, "payload": {}, "actor": "", "reason": ""})
}

/// The full active set from the stored leaves, checked to be a legal configuration.
fn configuration_of(machine: &Machine, leaves: &[String]) -> Result<Vec<bool>, Rejection> {
    let mut active = vec![false; machine.states.len()];
    for leaf in leaves {
        let Some(mut s) = machine.state_by_path(leaf).filter(|s| *s != 0) else {
            return Err(Rejection::Snapshot(format!("unknown state `{leaf}`")));
        };
        if !machine.states[s].is_atomic() {
            return Err(Rejection::Snapshot(format!("`{leaf}` is not a leaf state")));
        }
        loop {
            active[s] = true;
            match machine.states[s].parent {
                Some(p) => s = p,
                None => break,
            }
        }
    }
    for (i, st) in machine.states.iter().enumerate() {
        if !active[i] {
            continue;
        }
        let n = st.children.iter().filter(|c| active[**c]).count();
        let ok = match st.kind {
            Kind::Compound => n == 1,
            Kind::Parallel => n == st.children.len(),
            _ => true,
        };
        if !ok {
            return Err(Rejection::Snapshot(format!(
                "state `{}` has {n} active children",
                st.path
            )));
        }
    }
    Ok(active)
}

struct Run<'a> {
    m: &'a Machine,
    env: &'a Env,
    /// What every evaluation of this step spends.
    budget: crate::expr::Budget,
    /// The event that started the macrostep, as CEL sees it.
    external: Value,
    context: Value,
    active: Vec<bool>,
    was_active: Vec<bool>,
    entered: Vec<bool>,
    exited: Vec<bool>,
    queue: VecDeque<String>,
    running: bool,
    status: Status,
    effects: Vec<Effect>,
    microsteps: Vec<Microstep>,
}

impl<'a> Run<'a> {
    fn new(
        m: &'a Machine,
        env: &'a Env,
        event: &Event,
        context: Value,
        active: Vec<bool>,
    ) -> Run<'a> {
        let n = m.states.len();
        Run {
            m,
            env,
            budget: crate::expr::budget(&env.limits),
            external: event.to_json(),
            context,
            was_active: active.clone(),
            active,
            entered: vec![false; n],
            exited: vec![false; n],
            queue: VecDeque::new(),
            running: true,
            status: Status::Running,
            effects: Vec::new(),
            microsteps: Vec::new(),
        }
    }

    fn scope<'s>(&'s self, event: &'s Value) -> Scope<'s> {
        let mut s = Scope::new(&self.m.env, &self.budget);
        s.set_json("context", &self.context);
        s.set_json("event", event);
        s.set_json("instance", &self.env.instance);
        s.set_json("records", &self.env.records);
        s.set_time("now", self.env.now);
        s
    }

    /// Selects the enabled transitions for an event (`None`: eventless), SCXML's
    /// `selectTransitions` / `selectEventlessTransitions` with conflicts removed.
    fn select(
        &self,
        event: Option<&str>,
        trigger: Option<&Value>,
    ) -> Result<Vec<TransitionId>, Rejection> {
        self.select_addressed(event, trigger, None)
    }

    /// [`Run::select`] for an event addressed to `owner` (see [`Event::to`]): a state
    /// that is neither `owner`, one of its ancestors nor one of its descendants is passed
    /// over, as if it had no transition for the event, and selection bubbles on to its
    /// parent.
    fn select_addressed(
        &self,
        event: Option<&str>,
        trigger: Option<&Value>,
        owner: Option<StateId>,
    ) -> Result<Vec<TransitionId>, Rejection> {
        let m = self.m;
        let related = |s: StateId| {
            owner.is_none_or(|o| s == o || m.is_descendant(s, o) || m.is_descendant(o, s))
        };
        let trigger = trigger.unwrap_or(&self.external);
        let mut scope: Option<Scope<'_>> = None;
        let mut enabled: Vec<TransitionId> = Vec::new();
        for atomic in (0..m.states.len()).filter(|s| self.active[*s] && m.states[*s].is_atomic()) {
            let mut cur = Some(atomic);
            'bubble: while let Some(s) = cur {
                let node = &m.states[s];
                let list = match event {
                    Some(_) if !related(s) => &[],
                    Some(e) => node.on.get(e).map(Vec::as_slice).unwrap_or(&[]),
                    None => node.always.as_slice(),
                };
                for &t in list {
                    let tr = &m.transitions[t];
                    let ok = match tr.guard {
                        None => true,
                        Some(g) => {
                            let sc = scope.get_or_insert_with(|| self.scope(trigger));
                            sc.eval_bool(m.expr(g)).map_err(|e| Rejection::Guard {
                                state: display_path(&node.path),
                                expr: m.expr(g).source.clone(),
                                message: e.0,
                            })?
                        }
                    };
                    if ok {
                        if !enabled.contains(&t) {
                            enabled.push(t);
                        }
                        break 'bubble;
                    }
                }
                cur = node.parent;
            }
        }
        Ok(self.remove_conflicting(enabled))
    }

    fn remove_conflicting(&self, enabled: Vec<TransitionId>) -> Vec<TransitionId> {
        if enabled.len() < 2 {
            return enabled;
        }
        let mut filtered: Vec<(TransitionId, Vec<StateId>)> = Vec::new();
        for t1 in enabled {
            let exit1 = self.exit_set(&[t1]);
            let mut preempted = false;
            let mut remove = Vec::new();
            for (i, (t2, exit2)) in filtered.iter().enumerate() {
                if exit1.iter().any(|s| exit2.contains(s)) {
                    let (s1, s2) = (
                        self.m.transitions[t1].source,
                        self.m.transitions[*t2].source,
                    );
                    if self.m.is_descendant(s1, s2) {
                        remove.push(i);
                    } else {
                        preempted = true;
                        break;
                    }
                }
            }
            if !preempted {
                for i in remove.into_iter().rev() {
                    filtered.remove(i);
                }
                filtered.push((t1, exit1));
            }
        }
        filtered.into_iter().map(|(t, _)| t).collect()
    }

    /// The transition's domain: the least compound ancestor holding source and target
    /// (every transition with a target is external). `None` when targetless.
    fn domain(&self, t: TransitionId) -> Option<StateId> {
        let tr = &self.m.transitions[t];
        let target = tr.target?;
        if tr.source == 0 {
            return Some(0);
        }
        let mut anc = self.m.states[tr.source].parent;
        while let Some(a) = anc {
            let node = &self.m.states[a];
            if (a == 0 || node.kind == Kind::Compound) && self.m.is_descendant(target, a) {
                return Some(a);
            }
            anc = node.parent;
        }
        Some(0)
    }

    /// Active states the transitions exit, in exit order (innermost, reverse document order).
    fn exit_set(&self, ts: &[TransitionId]) -> Vec<StateId> {
        let mut set = Vec::new();
        for &t in ts {
            if let Some(d) = self.domain(t) {
                for s in d + 1..=self.m.states[d].last_desc {
                    if self.active[s] && !set.contains(&s) {
                        set.push(s);
                    }
                }
            }
        }
        set.sort_unstable_by(|a, b| b.cmp(a));
        set
    }

    fn entry_set(&self, ts: &[TransitionId]) -> Vec<StateId> {
        let mut set: Vec<StateId> = Vec::new();
        for &t in ts {
            if let Some(target) = self.m.transitions[t].target {
                self.add_descendants(target, &mut set);
                let domain = self.domain(t).unwrap_or(0);
                self.add_ancestors(target, domain, &mut set);
            }
        }
        set.sort_unstable();
        set
    }

    fn add_descendants(&self, s: StateId, set: &mut Vec<StateId>) {
        if !set.contains(&s) {
            set.push(s);
        }
        let node = &self.m.states[s];
        match node.kind {
            Kind::Compound => {
                if let Some(init) = node.initial {
                    self.add_descendants(init, set);
                    self.add_ancestors(init, s, set);
                }
            }
            Kind::Parallel => {
                for &c in &node.children {
                    if !set.iter().any(|x| *x == c || self.m.is_descendant(*x, c)) {
                        self.add_descendants(c, set);
                    }
                }
            }
            _ => {}
        }
    }

    /// Adds the proper ancestors of `s` below `stop`, and the regions of any parallel one.
    fn add_ancestors(&self, s: StateId, stop: StateId, set: &mut Vec<StateId>) {
        let mut anc = self.m.states[s].parent;
        while let Some(a) = anc {
            if a == stop {
                break;
            }
            if !set.contains(&a) {
                set.push(a);
            }
            let node = &self.m.states[a];
            if node.kind == Kind::Parallel {
                for &c in &node.children {
                    if !set.iter().any(|x| *x == c || self.m.is_descendant(*x, c)) {
                        self.add_descendants(c, set);
                    }
                }
            }
            anc = node.parent;
        }
    }

    fn enter_initial(&mut self) -> Result<(), Rejection> {
        let mut set = Vec::new();
        if let Some(init) = self.m.states[0].initial {
            self.add_descendants(init, &mut set);
            self.add_ancestors(init, 0, &mut set);
        }
        set.sort_unstable();
        self.active[0] = true;
        let external = std::mem::take(&mut self.external);
        let entered = self.enter(&set, &external);
        self.external = external;
        self.microsteps.push(Microstep {
            kind: MicrostepKind::Initial,
            event: None,
            transitions: Vec::new(),
            exited: Vec::new(),
            entered: entered?,
        });
        Ok(())
    }

    fn microstep(
        &mut self,
        kind: MicrostepKind,
        event: Option<&str>,
        ts: &[TransitionId],
        trigger: Option<&Value>,
    ) -> Result<(), Rejection> {
        let external = std::mem::take(&mut self.external);
        let r = self.microstep_with(kind, event, ts, trigger.unwrap_or(&external), &external);
        self.external = external;
        r
    }

    /// One microstep. `trigger` is the event transitions see; `external` the event that
    /// started the macrostep, which exit and entry actions see.
    fn microstep_with(
        &mut self,
        kind: MicrostepKind,
        event: Option<&str>,
        ts: &[TransitionId],
        trigger: &Value,
        external: &Value,
    ) -> Result<(), Rejection> {
        let m = self.m;
        let exit = self.exit_set(ts);
        let mut exited = Vec::with_capacity(exit.len());
        for &s in &exit {
            self.run_actions(&m.states[s].exit, s, external, "exit action")?;
            self.active[s] = false;
            self.exited[s] = true;
            exited.push(m.states[s].path.clone());
        }
        for &t in ts {
            let tr = &m.transitions[t];
            self.assign(&tr.assign, tr.source, trigger, "transition assign")?;
            self.run_actions(&tr.actions, tr.source, trigger, "transition action")?;
        }
        let entry = self.entry_set(ts);
        let entered = self.enter(&entry, external)?;
        self.microsteps.push(Microstep {
            kind,
            event: event.map(str::to_string),
            transitions: ts.to_vec(),
            exited,
            entered,
        });
        Ok(())
    }

    fn enter(&mut self, set: &[StateId], external: &Value) -> Result<Vec<String>, Rejection> {
        let m = self.m;
        let mut entered = Vec::with_capacity(set.len());
        for &s in set {
            self.active[s] = true;
            self.entered[s] = true;
            self.run_actions(&m.states[s].entry, s, external, "entry action")?;
            entered.push(m.states[s].path.clone());
            self.after_enter(s);
        }
        Ok(entered)
    }

    fn after_enter(&mut self, s: StateId) {
        let m = self.m;
        let node = &m.states[s];
        if node.kind != Kind::Final {
            return;
        }
        let parent = node.parent.unwrap_or(0);
        if parent == 0 {
            self.running = false;
            self.status = node.status.into();
            return;
        }
        self.queue
            .push_back(format!("done.state.{}", m.states[parent].path));
        if let Some(gp) = m.states[parent].parent
            && m.states[gp].kind == Kind::Parallel
            && m.states[gp].children.iter().all(|c| self.in_final(*c))
        {
            self.queue
                .push_back(format!("done.state.{}", m.states[gp].path));
        }
    }

    fn in_final(&self, s: StateId) -> bool {
        let node = &self.m.states[s];
        match node.kind {
            Kind::Compound => node
                .children
                .iter()
                .any(|c| self.active[*c] && self.m.states[*c].kind == Kind::Final),
            Kind::Parallel => node.children.iter().all(|c| self.in_final(*c)),
            _ => false,
        }
    }

    /// Eventless transitions, then queued internal events, until stable.
    fn macrostep(&mut self) -> Result<(), Rejection> {
        let mut steps = 0;
        while self.running {
            let mut kind = MicrostepKind::Eventless;
            let mut event = None;
            let mut trigger = None;
            let mut enabled = self.select(None, None)?;
            if enabled.is_empty() {
                let Some(name) = self.queue.pop_front() else {
                    break;
                };
                let t = done_event(&name);
                enabled = self.select(Some(&name), Some(&t))?;
                kind = MicrostepKind::Internal;
                event = Some(name);
                trigger = Some(t);
            }
            if !enabled.is_empty() {
                steps += 1;
                if steps > MAX_MICROSTEPS {
                    return Err(Rejection::Runaway {
                        limit: MAX_MICROSTEPS,
                    });
                }
                self.microstep(kind, event.as_deref(), &enabled, trigger.as_ref())?;
            }
        }
        Ok(())
    }

    fn eval(&self, v: &ValueSrc, event: &Value) -> Result<Value, String> {
        match v {
            ValueSrc::Literal(l) => Ok(l.clone()),
            ValueSrc::Expr(e) => self
                .scope(event)
                .eval(self.m.expr(*e))
                .map_err(|err| format!("`{}`: {}", self.m.expr(*e).source, err.0)),
        }
    }

    fn assign(
        &mut self,
        assigns: &[Assign],
        state: StateId,
        event: &Value,
        what: &str,
    ) -> Result<(), Rejection> {
        if assigns.is_empty() {
            return Ok(());
        }
        let err = |message: String| Rejection::Action {
            state: display_path(&self.m.states[state].path),
            what: what.to_string(),
            message,
        };
        // Every value from the context as it was before the assign.
        let values: Vec<Value> = {
            let scope = self.scope(event);
            assigns
                .iter()
                .map(|a| match &a.value {
                    ValueSrc::Literal(l) => Ok(l.clone()),
                    ValueSrc::Expr(e) => scope
                        .eval(self.m.expr(*e))
                        .map_err(|x| err(format!("`{}`: {}", self.m.expr(*e).source, x.0))),
                })
                .collect::<Result<_, _>>()?
        };
        for (a, v) in assigns.iter().zip(values) {
            set_path(&mut self.context, &a.path, v).map_err(err)?;
        }
        Ok(())
    }

    fn run_actions(
        &mut self,
        actions: &[Action],
        state: StateId,
        event: &Value,
        what: &str,
    ) -> Result<(), Rejection> {
        for a in actions {
            let fail = |message: String| Rejection::Action {
                state: display_path(&self.m.states[state].path),
                what: what.to_string(),
                message,
            };
            match a {
                Action::Assign(assigns) => self.assign(assigns, state, event, what)?,
                Action::Send {
                    event: name,
                    to,
                    payload,
                } => {
                    let to = match self.eval(&ValueSrc::Expr(*to), event).map_err(fail)? {
                        Value::String(s) => s,
                        other => {
                            return Err(fail(format!(
                                "`send.to` must yield an instance id string, yielded {}",
                                json_kind(&other)
                            )));
                        }
                    };
                    let payload = self.payload(payload.as_ref(), event).map_err(fail)?;
                    self.effects.push(Effect::Send {
                        to,
                        event: name.clone(),
                        payload,
                    });
                }
                Action::Emit {
                    event: name,
                    payload,
                } => {
                    let payload = self.payload(payload.as_ref(), event).map_err(fail)?;
                    self.effects.push(Effect::Emit {
                        event: name.clone(),
                        payload,
                    });
                }
                Action::Spawn(sp) => {
                    let e = self.spawn_effect(sp, None, event).map_err(fail)?;
                    self.effects.push(e);
                }
            }
        }
        Ok(())
    }

    /// The request a built-in executor runs, computed from the context now: `exec`
    /// `{command, args, env, cwd, max_output, stdin}`, `http` `{method, url, headers,
    /// body}`. `{{secret.NAME}}` placeholders stay as written; the executor fills them.
    fn executor_input(
        &self,
        ex: &Executor,
        input: Option<&ValueSrc>,
        event: &Value,
    ) -> Result<Value, String> {
        let text = |what: &str, v: Value| -> Result<String, String> {
            match v {
                Value::String(s) => Ok(s),
                v @ (Value::Number(_) | Value::Bool(_)) => Ok(v.to_string()),
                other => Err(format!(
                    "{what} must yield a string, yielded {}",
                    json_kind(&other)
                )),
            }
        };
        let named = |what: &str, pairs: &[(String, ValueSrc)]| -> Result<Value, String> {
            let mut m = serde_json::Map::new();
            for (k, v) in pairs {
                let v = text(&format!("`{what}.{k}`"), self.eval(v, event)?)?;
                m.insert(k.clone(), Value::String(v));
            }
            Ok(Value::Object(m))
        };
        Ok(match ex {
            Executor::Exec {
                command,
                args,
                env,
                cwd,
                max_output,
            } => {
                let args = match args {
                    None => Vec::new(),
                    Some(a) => match self.eval(a, event)? {
                        Value::Array(items) => items
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| text(&format!("`exec.args[{i}]`"), v).map(Value::String))
                            .collect::<Result<_, _>>()?,
                        other => {
                            return Err(format!(
                                "`exec.args` must yield a list of strings, yielded {}",
                                json_kind(&other)
                            ));
                        }
                    },
                };
                let cwd = match cwd {
                    None => Value::Null,
                    Some(c) => Value::String(text("`exec.cwd`", self.eval(c, event)?)?),
                };
                let stdin = match input {
                    None => Value::Null,
                    Some(i) => self.eval(i, event)?,
                };
                serde_json::json!({
                    "command": command, "args": args, "env": named("exec.env", env)?,
                    "cwd": cwd, "max_output": max_output, "stdin": stdin,
                })
            }
            Executor::Http {
                method,
                url,
                headers,
                body,
            } => {
                let url = text("`http.url`", self.eval(url, event)?)?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "`http.url` must yield an http:// or https:// URL, yielded `{url}`"
                    ));
                }
                let body = match body {
                    None => Value::Null,
                    Some(b) => self.eval(b, event)?,
                };
                serde_json::json!({
                    "method": method, "url": url, "headers": named("http.headers", headers)?,
                    "body": body,
                })
            }
        })
    }

    /// The children a map state starts: one item per element of `items`, with its key,
    /// input and dependencies. Keys are unique, dependencies name keys, and there is no
    /// cycle, or the state cannot be entered.
    fn map_effect(&self, mp: &MapSpec, path: &str, event: &Value) -> Result<Effect, String> {
        let items = match self.eval(&ValueSrc::Expr(mp.items), event)? {
            Value::Array(a) => a,
            other => {
                return Err(format!(
                    "`map.items` must yield a list, yielded {}",
                    json_kind(&other)
                ));
            }
        };
        let mut out: Vec<MapItem> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let index = json!(i);
            let eval = |e: crate::machine::ExprId, what: &str| -> Result<Value, String> {
                let mut scope = self.scope(event);
                scope.set_json("item", item);
                scope.set_json("index", &index);
                scope.eval(self.m.expr(e)).map_err(|err| {
                    format!(
                        "`{what}` `{}` for item {i}: {}",
                        self.m.expr(e).source,
                        err.0
                    )
                })
            };
            let key = match mp.key {
                None => i.to_string(),
                Some(k) => match eval(k, "map.key")? {
                    Value::String(s) if !s.is_empty() => s,
                    Value::Number(n) => n.to_string(),
                    other => {
                        return Err(format!(
                            "`map.key` must yield a non-empty string for item {i}, yielded {other}"
                        ));
                    }
                },
            };
            if out.iter().any(|o| o.key == key) {
                return Err(format!("two items have the key `{key}`"));
            }
            let input = match &mp.input {
                None => json!({ "item": item }),
                Some(ValueSrc::Literal(l)) => l.clone(),
                Some(ValueSrc::Expr(e)) => eval(*e, "map.input")?,
            };
            let depends_on = match mp.depends_on {
                None => Vec::new(),
                Some(d) => match eval(d, "map.depends_on")? {
                    Value::Null => Vec::new(),
                    Value::Array(a) => a
                        .into_iter()
                        .map(|v| match v {
                            Value::String(s) => Ok(s),
                            Value::Number(n) => Ok(n.to_string()),
                            other => Err(format!(
                                "`map.depends_on` of item {i} holds {other}, not a key"
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                    other => {
                        return Err(format!(
                            "`map.depends_on` must yield a list of keys for item {i}, yielded {}",
                            json_kind(&other)
                        ));
                    }
                },
            };
            out.push(MapItem {
                key,
                input,
                depends_on,
            });
        }
        for it in &out {
            if let Some(d) = it
                .depends_on
                .iter()
                .find(|d| !out.iter().any(|o| &o.key == *d))
            {
                return Err(format!(
                    "item `{}` depends on `{d}`, which is not an item",
                    it.key
                ));
            }
        }
        // Kahn's algorithm: what cannot be ordered is on a cycle.
        let mut done: Vec<bool> = vec![false; out.len()];
        loop {
            let ready: Vec<usize> = (0..out.len())
                .filter(|&i| {
                    !done[i]
                        && out[i].depends_on.iter().all(|d| {
                            out.iter()
                                .position(|o| &o.key == d)
                                .is_some_and(|j| done[j])
                        })
                })
                .collect();
            if ready.is_empty() {
                break;
            }
            ready.into_iter().for_each(|i| done[i] = true);
        }
        if let Some(i) = done.iter().position(|d| !d) {
            return Err(format!(
                "item `{}` is on a cycle of `depends_on`",
                out[i].key
            ));
        }
        Ok(Effect::StartMap {
            state: path.to_string(),
            machine: mp.machine.clone(),
            items: out,
            concurrency: mp.concurrency,
            fail_fast: mp.fail_fast,
        })
    }

    fn payload(&self, v: Option<&ValueSrc>, event: &Value) -> Result<Value, String> {
        v.map_or(Ok(empty_object()), |v| self.eval(v, event))
    }

    fn spawn_effect(
        &self,
        sp: &Spawn,
        state: Option<String>,
        event: &Value,
    ) -> Result<Effect, String> {
        let id = match sp.id {
            None => None,
            Some(e) => match self.eval(&ValueSrc::Expr(e), event)? {
                Value::String(s) => Some(s),
                other => {
                    return Err(format!(
                        "`spawn.id` must yield a string, yielded {}",
                        json_kind(&other)
                    ));
                }
            },
        };
        Ok(Effect::Spawn {
            state,
            machine: sp.machine.clone(),
            id,
            input: self.payload(sp.input.as_ref(), event)?,
        })
    }

    /// Cancels resources of states left this macrostep and sets those of states entered.
    fn reconcile(&mut self) -> Result<Vec<Effect>, Rejection> {
        let m = self.m;
        let mut out = Vec::new();
        for s in (1..m.states.len()).rev() {
            if !(self.was_active[s] && self.exited[s]) {
                continue;
            }
            let node = &m.states[s];
            for t in &node.timers {
                out.push(Effect::CancelTimer {
                    state: node.path.clone(),
                    event: t.event.clone(),
                });
            }
            if node.task.is_some() {
                out.push(Effect::CancelTask {
                    state: node.path.clone(),
                });
            }
            if node.approval.is_some() {
                out.push(Effect::CancelApproval {
                    state: node.path.clone(),
                });
            }
            if node.spawn.is_some() || node.map.is_some() {
                out.push(Effect::CancelSpawn {
                    state: node.path.clone(),
                });
            }
        }
        let external = std::mem::take(&mut self.external);
        for s in 1..m.states.len() {
            if !(self.active[s] && self.entered[s]) {
                continue;
            }
            let node = &m.states[s];
            let fail = |what: &str, message: String| Rejection::Action {
                state: node.path.clone(),
                what: what.to_string(),
                message,
            };
            for t in &node.timers {
                out.push(Effect::SetTimer {
                    state: node.path.clone(),
                    event: t.event.clone(),
                    delay_ms: t.delay.as_millis() as u64,
                });
            }
            if let Some(task) = &node.task {
                let input = match &task.executor {
                    None => self
                        .payload(task.input.as_ref(), &external)
                        .map_err(|e| fail("task input", e))?,
                    Some(ex) => self
                        .executor_input(ex, task.input.as_ref(), &external)
                        .map_err(|e| fail("task", e))?,
                };
                out.push(Effect::EnqueueTask {
                    state: node.path.clone(),
                    queue: task.queue.clone(),
                    action: task.action.clone(),
                    input,
                    timeout_ms: task.timeout.map(|d| d.as_millis() as u64),
                    heartbeat_ms: task.heartbeat.map(|d| d.as_millis() as u64),
                    retry: task.retry.clone(),
                });
            }
            if let Some(a) = &node.approval {
                out.push(Effect::RequestApproval {
                    state: node.path.clone(),
                    prompt: a.prompt.clone(),
                    approvers: a.approvers.clone(),
                    quorum: a.quorum,
                });
            }
            if let Some(sp) = &node.spawn {
                out.push(
                    self.spawn_effect(sp, Some(node.path.clone()), &external)
                        .map_err(|e| fail("spawn", e))?,
                );
            }
            if let Some(mp) = &node.map {
                out.push(
                    self.map_effect(mp, &node.path, &external)
                        .map_err(|e| fail("map", e))?,
                );
            }
        }
        self.external = external;
        Ok(out)
    }

    fn finish(mut self) -> Result<Outcome, Rejection> {
        check_context(&self.context, &self.env.limits)?;
        let resources = self.reconcile()?;
        let mut effects = Vec::with_capacity(resources.len() + self.effects.len());
        let (cancels, sets): (Vec<Effect>, Vec<Effect>) = resources.into_iter().partition(|e| {
            matches!(
                e,
                Effect::CancelTimer { .. }
                    | Effect::CancelTask { .. }
                    | Effect::CancelApproval { .. }
                    | Effect::CancelSpawn { .. }
            )
        });
        effects.extend(cancels);
        effects.append(&mut self.effects);
        effects.extend(sets);
        let m = self.m;
        let mut configuration: Vec<String> = (1..m.states.len())
            .filter(|s| self.active[*s] && m.states[*s].is_atomic())
            .map(|s| m.states[s].path.clone())
            .collect();
        configuration.sort();
        Ok(Outcome {
            snapshot: Snapshot {
                configuration,
                context: self.context,
                status: self.status,
            },
            effects,
            microsteps: self.microsteps,
        })
    }
}

/// Refuses a context over `limits.context_bytes` (as JSON) or `limits.json_depth`:
/// nothing that large or deep is ever stored, so every stored context reads back.
fn check_context(context: &Value, limits: &crate::Limits) -> Result<(), Rejection> {
    let depth = crate::limits::json_depth(context, limits.json_depth);
    if depth > limits.json_depth {
        return Err(Rejection::Limit(format!(
            "the context would nest deeper than {} levels (setting `limits.json_depth`)",
            limits.json_depth
        )));
    }
    let size = crate::limits::json_size(context, limits.context_bytes);
    if size > limits.context_bytes {
        return Err(Rejection::Limit(format!(
            "the context would be over {} bytes, its limit (setting `max_context`)",
            limits.context_bytes
        )));
    }
    Ok(())
}

fn display_path(p: &str) -> String {
    if p.is_empty() {
        "(machine)".to_string()
    } else {
        p.to_string()
    }
}

/// Sets a dotted path in a JSON object, creating intermediate objects.
fn set_path(root: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let mut cur = root;
    for (i, key) in path.iter().enumerate() {
        let Value::Object(map) = cur else {
            return Err(format!(
                "cannot assign `{}`: `{}` is {}, not an object",
                path.join("."),
                path[..i].join("."),
                json_kind(cur)
            ));
        };
        if i + 1 == path.len() {
            map.insert(key.clone(), value);
            return Ok(());
        }
        cur = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
    }
    Ok(())
}
