//! The definition model: what a machine file says, one model for YAML, TOML and JSON.
//!
//! The reader (`Reader::machine`) turns a [`Node`] tree (see `source`) into this model, collecting
//! every structural problem as a [`Diagnostic`](crate::Diagnostic) rather than stopping
//! at the first. Positions are kept beside the values for the validation done by
//! `machine`, which compiles a `MachineDef` into an executable [`Machine`](crate::Machine).
//! The model serialises (serde) to canonical JSON; reading it back goes through the same
//! reader, so JSON written by Cairn and JSON written by hand obey one set of rules.

use indexmap::IndexMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::{DiagnosticKind as K, Diagnostics};
use crate::source::{Node, NodeValue, Pos};

/// Queues whose names start with this belong to the built-in executors.
pub const RESERVED_QUEUE_PREFIX: &str = "cairn.";
/// The queue of `task.exec` tasks.
pub const EXEC_QUEUE: &str = "cairn.exec";
/// The queue of `task.http` tasks.
pub const HTTP_QUEUE: &str = "cairn.http";

/// A value with the position it was written at; serialises as the bare value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub pos: Pos,
}

impl<T: Serialize> Serialize for Sp<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

/// A CEL expression as written.
pub type Expr = Sp<String>;

/// A value that is computed: a string is a CEL expression, anything else a literal.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ValueExpr {
    /// A CEL expression, evaluated when the value is needed.
    Expr(Expr),
    /// A literal value.
    Literal(Value),
}

/// The status a top-level final state ends the instance with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalStatus {
    /// The instance completed.
    Completed,
    /// The instance failed.
    Failed,
    /// The instance was cancelled.
    Cancelled,
}

/// The declared type of a state; when absent it is compound if it has states, else atomic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateType {
    /// A state without child states.
    Atomic,
    /// A state with child states, one of them active.
    Compound,
    /// A state whose child states (regions) are all active at once.
    Parallel,
    /// A state that ends its parent (or, at the top, the instance).
    Final,
}

/// A whole machine definition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineDef {
    /// The machine's name.
    pub machine: String,
    /// What it is for, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The context an instance starts with, before its input is merged in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// A JSON Schema the start input must satisfy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// The top-level state entered at start; the first state when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<Sp<String>>,
    /// The top-level states, in document order.
    pub states: IndexMap<String, StateDef>,
    /// Transitions of the machine as a whole, by event: they apply in every state.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub on: IndexMap<String, Vec<TransitionDef>>,
    /// Where the definition starts.
    #[serde(skip)]
    pub pos: Pos,
}

/// One state.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StateDef {
    /// Where the state's name was written.
    #[serde(skip)]
    pub pos: Pos,
    /// An id to target the state by (`#id`), unique in the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Sp<String>>,
    /// Its declared type (`type:`); inferred when absent.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<StateType>,
    /// What it is for, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The child entered when the state is entered; the first child when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<Sp<String>>,
    /// Its child states, in document order.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub states: IndexMap<String, StateDef>,
    /// Its transitions, by event name.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub on: IndexMap<String, Vec<TransitionDef>>,
    /// Eventless transitions, taken as soon as their guard holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub always: Vec<TransitionDef>,
    /// Timers: a duration (as written) to the transitions taken when it elapses.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub after: IndexMap<String, Vec<TransitionDef>>,
    /// Transitions taken when the state is done (a compound state's final child reached, every region of a parallel state final, a map's children finished).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_done: Vec<TransitionDef>,
    /// Actions run when the state is entered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entry: Vec<ActionDef>,
    /// Actions run when the state is left.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exit: Vec<ActionDef>,
    /// How a top-level final state ends the instance (`completed` by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<FinalStatus>,
    /// Work for a worker, enqueued on entry and cancelled on exit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskDef>,
    /// A human approval, requested on entry and cancelled on exit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalDef>,
    /// A child instance, started on entry and cancelled on exit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn: Option<SpawnDef>,
    /// A child instance per item of a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<MapDef>,
    /// Positions of the keys that make a final state illegal, for diagnostics.
    #[serde(skip)]
    pub(crate) key_pos: IndexMap<&'static str, Pos>,
}

/// One transition. In a list, the first whose guard holds is taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TransitionDef {
    /// Where the transition is written.
    #[serde(skip)]
    pub pos: Pos,
    /// The target state; none for a transition that stays (runs its actions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Sp<String>>,
    /// CEL: the transition is taken only when this holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<Expr>,
    /// Context fields to set, each to a value (CEL when a string).
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub assign: IndexMap<String, ValueExpr>,
    /// Actions run when the transition is taken.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionDef>,
}

/// An action run on entry, on exit or by a transition.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionDef {
    /// Set context paths; all values are computed from the context before the action.
    Assign(IndexMap<String, ValueExpr>),
    /// Send an event to another instance (after commit, through the outbox).
    Send(SendDef),
    /// Publish an event on the instance's event stream.
    Emit(EmitDef),
    /// Start a child instance.
    Spawn(SpawnDef),
}

/// An event sent to another instance after the unit commits (`send:`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SendDef {
    /// The event's name.
    pub event: String,
    /// CEL: the id of the receiving instance.
    pub to: Expr,
    /// Its payload (CEL when a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<ValueExpr>,
}

/// An event raised inside the instance, handled after the current microstep (`emit:`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmitDef {
    /// The event's name.
    pub event: String,
    /// Its payload (CEL when a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<ValueExpr>,
}

/// A child instance started by an action or a state (`spawn:`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpawnDef {
    /// The machine the child runs.
    pub machine: String,
    /// The child's start input (CEL when a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<ValueExpr>,
    /// CEL: the child's id; generated when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Expr>,
}

/// Work for a worker, enqueued when the state is entered, cancelled when it is left.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskDef {
    /// Empty for a task a built-in executor runs.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub queue: String,
    /// What to do; passed to the worker.
    pub action: String,
    /// The task's input (CEL when a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<ValueExpr>,
    /// How long an attempt may take, e.g. `10m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Sp<String>>,
    /// How often a worker must renew its lease, e.g. `30s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Sp<String>>,
    /// How failed attempts are retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDef>,
    /// Run by the built-in `exec` executor instead of a worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecDef>,
    /// Run by the built-in `http` executor instead of a worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDef>,
}

/// A command run by the server (`task.exec`). The command is a literal, checked against
/// the server's allowlist when the machine is applied and again when it runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecDef {
    /// The command (a literal, on the server's allowlist).
    pub command: Sp<String>,
    /// A list of strings (CEL when written as a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<ValueExpr>,
    /// Variable name to value (each CEL when a string); `{{secret.NAME}}` is replaced by
    /// the server's secret when the command runs.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, ValueExpr>,
    /// The working directory (CEL when a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<ValueExpr>,
    /// Bytes kept of stdout and of stderr each; the server's limit caps it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output: Option<u32>,
}

/// A request made by the server (`task.http`); `{{secret.NAME}}` in the URL, a header or
/// the body is replaced by the server's secret when the request is made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpDef {
    /// The HTTP method.
    pub method: String,
    /// The URL (CEL when a string).
    pub url: ValueExpr,
    /// Header name to value (each CEL when a string).
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, ValueExpr>,
    /// The request body (CEL when a string; JSON unless a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<ValueExpr>,
}

/// How the delay between attempts grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Doubles each attempt, from `initial` up to `max`.
    Exponential,
    /// Stays at `initial`.
    Fixed,
}

/// How a failed task attempt is retried.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryDef {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// How the delay grows.
    pub backoff: Backoff,
    /// The first delay, e.g. `10s`.
    pub initial: Sp<String>,
    /// The longest delay, e.g. `10m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<Sp<String>>,
    /// A random part of each delay, 0 to 1.
    pub jitter: f64,
}

/// One child instance per item of a list, started when the state is entered (at most
/// `concurrency` at once, each after the items it `depends_on`); the state completes
/// (`on_done`) when every child has finished.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MapDef {
    /// The machine each child runs.
    pub machine: String,
    /// CEL: the list of items.
    pub items: Expr,
    /// The child's input (CEL with `item` and `index`); `{"item": item}` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<ValueExpr>,
    /// CEL: the item's key (a string); its index when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Expr>,
    /// CEL: the keys of the items this one waits for (a DAG).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Expr>,
    /// At most this many children at once; no limit when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// What happens when a child fails.
    pub on_failure: MapFailure,
}

/// What a map state does when a child fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapFailure {
    /// Cancel the rest; `child.failed` reaches the instance.
    FailFast,
    /// Go on; items depending on the failed one are skipped; `on_done` reports failures.
    Continue,
}

/// A human approval requested when the state is entered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApprovalDef {
    /// What the approver is asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Who may decide (matched against the actor); anyone allowed to decide approvals when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// How many approvals it takes (one rejection decides).
    pub quorum: u32,
}

/// The methods `task.http` may use.
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

const MACHINE_FIELDS: &[&str] = &[
    "machine",
    "description",
    "context",
    "input_schema",
    "initial",
    "states",
    "on",
];
const STATE_FIELDS: &[&str] = &[
    "id",
    "type",
    "description",
    "initial",
    "states",
    "on",
    "always",
    "after",
    "on_done",
    "entry",
    "exit",
    "status",
    "task",
    "approval",
    "spawn",
    "map",
];
const TRANSITION_FIELDS: &[&str] = &["target", "guard", "assign", "actions", "description"];

/// Reads nodes into the model, reporting problems to `diags`.
pub(crate) struct Reader<'d> {
    pub diags: &'d mut Diagnostics,
}

type Fields<'n> = Vec<(&'n str, Pos, &'n Node)>;

impl Reader<'_> {
    fn err(&mut self, kind: K, pos: Pos, state: Option<&str>, msg: impl Into<String>) {
        self.diags.push(kind, pos, state, msg);
    }

    fn map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
        state: Option<&str>,
    ) -> Option<Fields<'n>> {
        let NodeValue::Map(entries) = &node.value else {
            self.err(
                K::InvalidValue,
                node.pos,
                state,
                format!("{what} must be a map, found {}", node.kind()),
            );
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, p, v) in entries {
            if !allowed.is_empty() && !allowed.contains(&k.as_str()) {
                self.err(
                    K::UnknownField,
                    *p,
                    state,
                    format!(
                        "unknown field `{k}` in {what}; expected one of: {}{}",
                        allowed.join(", "),
                        crate::error::did_you_mean(k, allowed.iter().copied()),
                    ),
                );
                continue;
            }
            out.push((k.as_str(), *p, v));
        }
        Some(out)
    }

    fn string(&mut self, node: &Node, what: &str, state: Option<&str>) -> Option<String> {
        match &node.value {
            NodeValue::Str(s) => Some(s.clone()),
            _ => {
                self.err(
                    K::InvalidValue,
                    node.pos,
                    state,
                    format!("{what} must be a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    fn sp_string(&mut self, node: &Node, what: &str, state: Option<&str>) -> Option<Sp<String>> {
        self.string(node, what, state).map(|value| Sp {
            value,
            pos: node.pos,
        })
    }

    fn uint(&mut self, node: &Node, what: &str, state: Option<&str>, min: i64) -> Option<u32> {
        match node.value {
            NodeValue::Int(i) if i >= min && i <= u32::MAX as i64 => Some(i as u32),
            _ => {
                self.err(
                    K::InvalidValue,
                    node.pos,
                    state,
                    format!("{what} must be a whole number of at least {min}"),
                );
                None
            }
        }
    }

    fn value_expr(&mut self, node: &Node) -> ValueExpr {
        match &node.value {
            NodeValue::Str(s) => ValueExpr::Expr(Sp {
                value: s.clone(),
                pos: node.pos,
            }),
            _ => ValueExpr::Literal(node.to_json()),
        }
    }

    /// Reads a whole machine definition.
    pub fn machine(&mut self, node: &Node) -> Option<MachineDef> {
        let fields = self.map(node, "the machine definition", MACHINE_FIELDS, None)?;
        let mut def = MachineDef {
            machine: String::new(),
            description: None,
            context: None,
            input_schema: None,
            initial: None,
            states: IndexMap::new(),
            on: IndexMap::new(),
            pos: node.pos,
        };
        let mut has_name = false;
        for (key, _, value) in fields {
            match key {
                "machine" => {
                    if let Some(name) = self.string(value, "`machine`", None) {
                        if !valid_machine_name(&name) {
                            self.err(
                                K::InvalidName,
                                value.pos,
                                None,
                                format!("machine name `{name}` must be 1-128 characters of letters, digits, `-`, `_` and `.`"),
                            );
                        }
                        def.machine = name;
                        has_name = true;
                    }
                }
                "description" => def.description = self.string(value, "`description`", None),
                "context" => {
                    if matches!(value.value, NodeValue::Map(_)) {
                        def.context = Some(value.to_json());
                    } else {
                        self.err(
                            K::InvalidValue,
                            value.pos,
                            None,
                            format!("`context` must be a map, found {}", value.kind()),
                        );
                    }
                }
                "input_schema" => {
                    if matches!(value.value, NodeValue::Map(_) | NodeValue::Bool(_)) {
                        def.input_schema = Some(value.to_json());
                    } else {
                        self.err(
                            K::InvalidSchema,
                            value.pos,
                            None,
                            format!(
                                "`input_schema` must be a JSON Schema object, found {}",
                                value.kind()
                            ),
                        );
                    }
                }
                "initial" => def.initial = self.sp_string(value, "`initial`", None),
                "states" => def.states = self.states(value, ""),
                "on" => def.on = self.on(value, None),
                _ => unreachable!("field list checked"),
            }
        }
        if !has_name {
            self.err(
                K::MissingField,
                node.pos,
                None,
                "missing field `machine` (the machine's name)",
            );
        }
        if def.states.is_empty() {
            self.err(
                K::MissingField,
                node.pos,
                None,
                "the machine has no `states`",
            );
        }
        Some(def)
    }

    fn states(&mut self, node: &Node, parent: &str) -> IndexMap<String, StateDef> {
        let mut out = IndexMap::new();
        let Some(fields) = self.map(node, "`states`", &[], non_root(parent)) else {
            return out;
        };
        for (name, pos, value) in fields {
            let path = join_path(parent, name);
            if name.is_empty() || name.contains(['.', '#']) || name.trim() != name {
                self.err(
                    K::InvalidName,
                    pos,
                    Some(&path),
                    format!("state name `{name}` must be non-empty and hold no `.`, `#` or surrounding spaces"),
                );
            }
            let mut state = self.state(value, &path);
            state.pos = pos;
            out.insert(name.to_string(), state);
        }
        out
    }

    fn state(&mut self, node: &Node, path: &str) -> StateDef {
        let mut def = StateDef::default();
        let st = Some(path);
        // `{}` or null is an empty atomic state.
        if matches!(node.value, NodeValue::Null) {
            return def;
        }
        let Some(fields) = self.map(node, "a state", STATE_FIELDS, st) else {
            return def;
        };
        for (key, kpos, value) in fields {
            match key {
                "id" => {
                    def.id = self.sp_string(value, "`id`", st);
                    if let Some(id) = &def.id
                        && (id.value.is_empty() || id.value.contains(['.', '#', ' ']))
                    {
                        self.err(
                            K::InvalidName,
                            value.pos,
                            st,
                            format!(
                                "id `{}` must be non-empty and hold no `.`, `#` or spaces",
                                id.value
                            ),
                        );
                    }
                }
                "type" => {
                    def.kind = match self.string(value, "`type`", st).as_deref() {
                        Some("atomic") => Some(StateType::Atomic),
                        Some("compound") => Some(StateType::Compound),
                        Some("parallel") => Some(StateType::Parallel),
                        Some("final") => Some(StateType::Final),
                        Some(other) => {
                            self.err(
                                K::InvalidValue,
                                value.pos,
                                st,
                                format!("unknown state type `{other}`; expected atomic, compound, parallel or final"),
                            );
                            None
                        }
                        None => None,
                    }
                }
                "description" => def.description = self.string(value, "`description`", st),
                "initial" => def.initial = self.sp_string(value, "`initial`", st),
                "states" => def.states = self.states(value, path),
                "on" => def.on = self.on(value, st),
                "always" => def.always = self.transitions(value, st),
                "after" => {
                    if let Some(fields) = self.map(value, "`after`", &[], st) {
                        for (delay, dpos, t) in fields {
                            let mut ts = self.transitions(t, st);
                            if let Some(first) = ts.first_mut() {
                                first.pos = dpos;
                            }
                            def.after.insert(delay.to_string(), ts);
                        }
                    }
                }
                "on_done" => def.on_done = self.transitions(value, st),
                "entry" => def.entry = self.actions(value, st),
                "exit" => def.exit = self.actions(value, st),
                "status" => {
                    def.status = match self.string(value, "`status`", st).as_deref() {
                        Some("completed") => Some(FinalStatus::Completed),
                        Some("failed") => Some(FinalStatus::Failed),
                        Some("cancelled") => Some(FinalStatus::Cancelled),
                        Some(other) => {
                            self.err(
                                K::InvalidValue,
                                value.pos,
                                st,
                                format!("unknown final status `{other}`; expected completed, failed or cancelled"),
                            );
                            None
                        }
                        None => None,
                    }
                }
                "task" => def.task = self.task(value, st),
                "approval" => def.approval = self.approval(value, st),
                "spawn" => def.spawn = self.spawn(value, st),
                "map" => def.map = self.map_def(value, st),
                _ => unreachable!("field list checked"),
            }
            let key: &'static str = STATE_FIELDS
                .iter()
                .find(|f| **f == key)
                .copied()
                .unwrap_or("");
            def.key_pos.insert(key, kpos);
        }
        def
    }

    fn on(&mut self, node: &Node, st: Option<&str>) -> IndexMap<String, Vec<TransitionDef>> {
        let mut out = IndexMap::new();
        if let Some(fields) = self.map(node, "`on`", &[], st) {
            for (event, pos, t) in fields {
                if event.is_empty() {
                    self.err(K::InvalidName, pos, st, "an event name must not be empty");
                }
                let mut ts = self.transitions(t, st);
                for t in &mut ts {
                    if t.pos == Pos::default() {
                        t.pos = pos;
                    }
                }
                out.insert(event.to_string(), ts);
            }
        }
        out
    }

    /// A target string, a transition object, or a list of either.
    pub fn transitions(&mut self, node: &Node, st: Option<&str>) -> Vec<TransitionDef> {
        match &node.value {
            NodeValue::Seq(items) => items
                .iter()
                .filter_map(|item| {
                    if matches!(item.value, NodeValue::Seq(_)) {
                        self.err(
                            K::InvalidValue,
                            item.pos,
                            st,
                            "a transition list cannot hold another list",
                        );
                        None
                    } else {
                        self.transition(item, st)
                    }
                })
                .collect(),
            _ => self.transition(node, st).into_iter().collect(),
        }
    }

    fn transition(&mut self, node: &Node, st: Option<&str>) -> Option<TransitionDef> {
        let mut t = TransitionDef {
            pos: node.pos,
            ..Default::default()
        };
        match &node.value {
            NodeValue::Str(s) => {
                t.target = Some(Sp {
                    value: s.clone(),
                    pos: node.pos,
                });
            }
            NodeValue::Map(_) => {
                let fields = self.map(node, "a transition", TRANSITION_FIELDS, st)?;
                for (key, _, value) in fields {
                    match key {
                        "target" => t.target = self.sp_string(value, "`target`", st),
                        "guard" => t.guard = self.sp_string(value, "`guard`", st),
                        "assign" => t.assign = self.assign(value, st),
                        "actions" => t.actions = self.actions(value, st),
                        "description" => {}
                        _ => unreachable!("field list checked"),
                    }
                }
            }
            NodeValue::Null => {
                self.err(
                    K::InvalidValue,
                    node.pos,
                    st,
                    "a transition must be a target name or a map, found null",
                );
                return None;
            }
            _ => {
                self.err(
                    K::InvalidValue,
                    node.pos,
                    st,
                    format!(
                        "a transition must be a target name, a map or a list, found {}",
                        node.kind()
                    ),
                );
                return None;
            }
        }
        Some(t)
    }

    fn assign(&mut self, node: &Node, st: Option<&str>) -> IndexMap<String, ValueExpr> {
        let mut out = IndexMap::new();
        if let Some(fields) = self.map(node, "`assign`", &[], st) {
            for (path, pos, value) in fields {
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    self.err(
                        K::InvalidName,
                        pos,
                        st,
                        format!("`assign` key `{path}` must be a dotted context path like `a.b`"),
                    );
                    continue;
                }
                let v = self.value_expr(value);
                out.insert(path.to_string(), v);
            }
        }
        out
    }

    fn actions(&mut self, node: &Node, st: Option<&str>) -> Vec<ActionDef> {
        match &node.value {
            NodeValue::Seq(items) => items.iter().filter_map(|i| self.action(i, st)).collect(),
            _ => self.action(node, st).into_iter().collect(),
        }
    }

    fn action(&mut self, node: &Node, st: Option<&str>) -> Option<ActionDef> {
        let fields = self.map(node, "an action", &["assign", "send", "emit", "spawn"], st)?;
        if fields.len() != 1 {
            self.err(
                K::InvalidValue,
                node.pos,
                st,
                "an action is a map with exactly one of: assign, send, emit, spawn",
            );
            return None;
        }
        let (key, _, value) = fields[0];
        match key {
            "assign" => Some(ActionDef::Assign(self.assign(value, st))),
            "send" => {
                let f = self.map(value, "`send`", &["event", "to", "payload"], st)?;
                let (mut event, mut to, mut payload) = (None, None, None);
                for (k, _, v) in f {
                    match k {
                        "event" => event = self.string(v, "`send.event`", st),
                        "to" => to = self.sp_string(v, "`send.to`", st),
                        _ => payload = Some(self.value_expr(v)),
                    }
                }
                let (Some(event), Some(to)) = (event, to) else {
                    self.err(
                        K::MissingField,
                        value.pos,
                        st,
                        "`send` needs `event` and `to`",
                    );
                    return None;
                };
                Some(ActionDef::Send(SendDef { event, to, payload }))
            }
            "emit" => {
                let f = self.map(value, "`emit`", &["event", "payload"], st)?;
                let (mut event, mut payload) = (None, None);
                for (k, _, v) in f {
                    match k {
                        "event" => event = self.string(v, "`emit.event`", st),
                        _ => payload = Some(self.value_expr(v)),
                    }
                }
                let Some(event) = event else {
                    self.err(K::MissingField, value.pos, st, "`emit` needs `event`");
                    return None;
                };
                Some(ActionDef::Emit(EmitDef { event, payload }))
            }
            _ => self.spawn(value, st).map(ActionDef::Spawn),
        }
    }

    fn spawn(&mut self, node: &Node, st: Option<&str>) -> Option<SpawnDef> {
        let f = self.map(node, "`spawn`", &["machine", "input", "id"], st)?;
        let (mut machine, mut input, mut id) = (None, None, None);
        for (k, _, v) in f {
            match k {
                "machine" => machine = self.string(v, "`spawn.machine`", st),
                "input" => input = Some(self.value_expr(v)),
                _ => id = self.sp_string(v, "`spawn.id`", st),
            }
        }
        let Some(machine) = machine else {
            self.err(K::MissingField, node.pos, st, "`spawn` needs `machine`");
            return None;
        };
        Some(SpawnDef { machine, input, id })
    }

    fn map_def(&mut self, node: &Node, st: Option<&str>) -> Option<MapDef> {
        let f = self.map(
            node,
            "`map`",
            &[
                "machine",
                "items",
                "input",
                "key",
                "depends_on",
                "concurrency",
                "on_failure",
            ],
            st,
        )?;
        let (mut machine, mut items, mut input, mut key, mut deps, mut conc, mut on_failure) =
            (None, None, None, None, None, None, MapFailure::FailFast);
        for (k, _, v) in f {
            match k {
                "machine" => machine = self.string(v, "`map.machine`", st),
                "items" => items = self.sp_string(v, "`map.items`", st),
                "input" => input = Some(self.value_expr(v)),
                "key" => key = self.sp_string(v, "`map.key`", st),
                "depends_on" => deps = self.sp_string(v, "`map.depends_on`", st),
                "concurrency" => conc = self.uint(v, "`map.concurrency`", st, 1),
                _ => match self.string(v, "`map.on_failure`", st).as_deref() {
                    Some("fail_fast") => on_failure = MapFailure::FailFast,
                    Some("continue") => on_failure = MapFailure::Continue,
                    Some(other) => self.err(
                        K::InvalidValue,
                        v.pos,
                        st,
                        format!(
                            "unknown `map.on_failure` `{other}`; expected fail_fast or continue"
                        ),
                    ),
                    None => {}
                },
            }
        }
        let (Some(machine), Some(items)) = (machine, items) else {
            self.err(
                K::MissingField,
                node.pos,
                st,
                "`map` needs `machine` and `items`",
            );
            return None;
        };
        Some(MapDef {
            machine,
            items,
            input,
            key,
            depends_on: deps,
            concurrency: conc,
            on_failure,
        })
    }

    fn task(&mut self, node: &Node, st: Option<&str>) -> Option<TaskDef> {
        let f = self.map(
            node,
            "`task`",
            &[
                "queue",
                "action",
                "input",
                "timeout",
                "heartbeat",
                "retry",
                "exec",
                "http",
            ],
            st,
        )?;
        let mut t = TaskDef {
            queue: "default".into(),
            action: st
                .and_then(|p| p.rsplit('.').next())
                .unwrap_or("task")
                .to_string(),
            input: None,
            timeout: None,
            heartbeat: None,
            retry: None,
            exec: None,
            http: None,
        };
        let mut queue_pos = None;
        let mut input_pos = None;
        for (k, p, v) in f {
            match k {
                "queue" => {
                    if let Some(q) = self.string(v, "`task.queue`", st) {
                        if q.starts_with(RESERVED_QUEUE_PREFIX) {
                            self.err(
                                K::InvalidName,
                                v.pos,
                                st,
                                format!(
                                    "queue `{q}` is reserved: queues starting with `{}` belong to the built-in executors (declare `exec` or `http` instead)",
                                    RESERVED_QUEUE_PREFIX
                                ),
                            );
                        }
                        t.queue = q;
                        queue_pos = Some(p);
                    }
                }
                "exec" => t.exec = self.exec(v, st),
                "http" => t.http = self.http(v, st),
                "action" => {
                    if let Some(a) = self.string(v, "`task.action`", st) {
                        t.action = a;
                    }
                }
                "input" => {
                    t.input = Some(self.value_expr(v));
                    input_pos = Some(p);
                }
                "timeout" => t.timeout = self.sp_string(v, "`task.timeout`", st),
                "heartbeat" => t.heartbeat = self.sp_string(v, "`task.heartbeat`", st),
                _ => t.retry = self.retry(v, st),
            }
        }
        let executor = match (&t.exec, &t.http) {
            (Some(_), Some(_)) => {
                self.err(
                    K::InvalidValue,
                    node.pos,
                    st,
                    "a task declares `exec` or `http`, not both",
                );
                None
            }
            (Some(_), None) => Some("exec"),
            (None, Some(_)) => Some("http"),
            (None, None) => None,
        };
        if executor.is_some() {
            t.queue.clear();
        }
        if let (Some(kind), Some(p)) = (executor, queue_pos) {
            self.err(
                K::InvalidValue,
                p,
                st,
                format!(
                    "a task with `{kind}` is run by the built-in executor and takes no `queue`"
                ),
            );
        }
        if let (Some("http"), Some(p)) = (executor, input_pos) {
            self.err(
                K::InvalidValue,
                p,
                st,
                "a task with `http` takes no `input`: the request is built from `http.body`",
            );
        }
        Some(t)
    }

    fn exec(&mut self, node: &Node, st: Option<&str>) -> Option<ExecDef> {
        let f = self.map(
            node,
            "`task.exec`",
            &["command", "args", "env", "cwd", "max_output"],
            st,
        )?;
        let (mut command, mut args, mut env, mut cwd, mut max_output) =
            (None, None, IndexMap::new(), None, None);
        for (k, _, v) in f {
            match k {
                "command" => {
                    command = self.sp_string(v, "`task.exec.command`", st);
                    if command.as_ref().is_some_and(|c| c.value.trim().is_empty()) {
                        self.err(K::InvalidValue, v.pos, st, "`task.exec.command` is empty");
                    }
                }
                "args" => args = Some(self.value_expr(v)),
                "env" => env = self.named_values(v, "`task.exec.env`", st),
                "cwd" => cwd = Some(self.value_expr(v)),
                _ => max_output = self.uint(v, "`task.exec.max_output`", st, 1),
            }
        }
        let Some(command) = command else {
            self.err(K::MissingField, node.pos, st, "`task.exec` needs `command`");
            return None;
        };
        Some(ExecDef {
            command,
            args,
            env,
            cwd,
            max_output,
        })
    }

    fn http(&mut self, node: &Node, st: Option<&str>) -> Option<HttpDef> {
        let f = self.map(
            node,
            "`task.http`",
            &["method", "url", "headers", "body"],
            st,
        )?;
        let (mut method, mut url, mut headers, mut body) = (None, None, IndexMap::new(), None);
        for (k, _, v) in f {
            match k {
                "method" => {
                    if let Some(m) = self.string(v, "`task.http.method`", st) {
                        let upper = m.to_ascii_uppercase();
                        if HTTP_METHODS.contains(&upper.as_str()) {
                            method = Some(upper);
                        } else {
                            self.err(
                                K::InvalidValue,
                                v.pos,
                                st,
                                format!(
                                    "unknown HTTP method `{m}`; expected one of: {}",
                                    HTTP_METHODS.join(", ")
                                ),
                            );
                        }
                    }
                }
                "url" => url = Some(self.value_expr(v)),
                "headers" => headers = self.named_values(v, "`task.http.headers`", st),
                _ => body = Some(self.value_expr(v)),
            }
        }
        let Some(url) = url else {
            self.err(K::MissingField, node.pos, st, "`task.http` needs `url`");
            return None;
        };
        Some(HttpDef {
            method: method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into()),
            url,
            headers,
            body,
        })
    }

    /// A map of names to computed values (`env`, `headers`).
    fn named_values(
        &mut self,
        node: &Node,
        what: &str,
        st: Option<&str>,
    ) -> IndexMap<String, ValueExpr> {
        let mut out = IndexMap::new();
        if let Some(fields) = self.map(node, what, &[], st) {
            for (k, p, v) in fields {
                let valid = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    self.err(
                        K::InvalidName,
                        p,
                        st,
                        format!("{what} name `{k}` must be letters, digits, `_` or `-`"),
                    );
                    continue;
                }
                out.insert(k.to_string(), self.value_expr(v));
            }
        }
        out
    }

    fn retry(&mut self, node: &Node, st: Option<&str>) -> Option<RetryDef> {
        let f = self.map(
            node,
            "`retry`",
            &["max_attempts", "backoff", "initial", "max", "jitter"],
            st,
        )?;
        let mut r = RetryDef {
            max_attempts: 1,
            backoff: Backoff::Exponential,
            initial: Sp {
                value: "1s".into(),
                pos: node.pos,
            },
            max: None,
            jitter: 0.1,
        };
        for (k, _, v) in f {
            match k {
                "max_attempts" => {
                    if let Some(n) = self.uint(v, "`retry.max_attempts`", st, 1) {
                        r.max_attempts = n;
                    }
                }
                "backoff" => match self.string(v, "`retry.backoff`", st).as_deref() {
                    Some("exponential") => r.backoff = Backoff::Exponential,
                    Some("fixed") => r.backoff = Backoff::Fixed,
                    Some(other) => self.err(
                        K::InvalidValue,
                        v.pos,
                        st,
                        format!("unknown backoff `{other}`; expected exponential or fixed"),
                    ),
                    None => {}
                },
                "initial" => {
                    if let Some(s) = self.sp_string(v, "`retry.initial`", st) {
                        r.initial = s;
                    }
                }
                "max" => r.max = self.sp_string(v, "`retry.max`", st),
                _ => match v.value {
                    NodeValue::Float(f) if (0.0..=1.0).contains(&f) => r.jitter = f,
                    NodeValue::Int(i) if (0..=1).contains(&i) => r.jitter = i as f64,
                    _ => self.err(
                        K::InvalidValue,
                        v.pos,
                        st,
                        "`retry.jitter` must be a fraction from 0 to 1",
                    ),
                },
            }
        }
        Some(r)
    }

    fn approval(&mut self, node: &Node, st: Option<&str>) -> Option<ApprovalDef> {
        let mut a = ApprovalDef {
            prompt: None,
            approvers: Vec::new(),
            quorum: 1,
        };
        match &node.value {
            NodeValue::Str(s) => {
                a.prompt = Some(s.clone());
                return Some(a);
            }
            NodeValue::Bool(true) | NodeValue::Null => return Some(a),
            _ => {}
        }
        let f = self.map(node, "`approval`", &["prompt", "approvers", "quorum"], st)?;
        for (k, _, v) in f {
            match k {
                "prompt" => a.prompt = self.string(v, "`approval.prompt`", st),
                "approvers" => match &v.value {
                    NodeValue::Seq(items) => {
                        a.approvers = items
                            .iter()
                            .filter_map(|i| self.string(i, "an approver", st))
                            .collect()
                    }
                    _ => self.err(
                        K::InvalidValue,
                        v.pos,
                        st,
                        "`approval.approvers` must be a list of names",
                    ),
                },
                _ => {
                    if let Some(q) = self.uint(v, "`approval.quorum`", st, 1) {
                        a.quorum = q;
                    }
                }
            }
        }
        if !a.approvers.is_empty() && a.quorum as usize > a.approvers.len() {
            self.err(
                K::InvalidValue,
                node.pos,
                st,
                format!(
                    "`approval.quorum` is {} but only {} approvers are named",
                    a.quorum,
                    a.approvers.len()
                ),
            );
        }
        Some(a)
    }
}

fn non_root(path: &str) -> Option<&str> {
    (!path.is_empty()).then_some(path)
}

/// `parent.name`, or `name` at the top.
pub(crate) fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// Machine names: what URLs and file names can hold without escaping.
pub fn valid_machine_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
