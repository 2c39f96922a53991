//! The compiled machine: the definition turned into an arena of states in document
//! order (pre-order, so an index sorts entry order and its reverse exit order), with
//! targets resolved, CEL compiled and every validation rule applied.
//!
//! [`Machine::load`] and [`Machine::from_def`] are the only ways in; a `Machine` that
//! exists is valid. Execution lives in `step`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use crate::Limits;
use crate::definition::{
    ActionDef, Backoff, FinalStatus, MachineDef, Reader, StateDef, StateType, TransitionDef,
    ValueExpr, join_path,
};
use crate::error::{Diagnostic, DiagnosticKind as K, Diagnostics, LoadError, Severity};
use crate::expr::{self, CompileError, Compiled};
use crate::source::{self, Format, Node, Pos};

/// Index of a state in [`Machine::states`]; 0 is the root.
pub type StateId = usize;
/// Index of a transition in [`Machine::transitions`].
pub type TransitionId = usize;
/// Index of an expression in the machine's compiled expressions.
pub type ExprId = usize;

/// The most microsteps one macrostep may take before it is refused as a runaway.
pub const MAX_MICROSTEPS: usize = 1000;

/// The kind of a compiled state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No child states.
    Atomic,
    /// Child states, one active.
    Compound,
    /// Regions, all active.
    Parallel,
    /// A final state.
    Final,
}

/// A value computed when an action runs.
#[derive(Clone, Debug)]
pub enum ValueSrc {
    /// A compiled CEL expression.
    Expr(ExprId),
    /// A literal value.
    Literal(Value),
}

/// A context field set by a transition or action.
#[derive(Clone, Debug)]
pub struct Assign {
    /// The field's path in the context.
    pub path: Vec<String>,
    /// Its value.
    pub value: ValueSrc,
}

/// A compiled action.
#[derive(Clone, Debug)]
pub enum Action {
    /// Set context fields.
    Assign(Vec<Assign>),
    /// Send an event to another instance after commit.
    Send {
        /// The event.
        event: String,
        /// CEL: the receiving instance's id.
        to: ExprId,
        /// Its payload.
        payload: Option<ValueSrc>,
    },
    /// Raise an event inside the instance.
    Emit {
        /// The event.
        event: String,
        /// Its payload.
        payload: Option<ValueSrc>,
    },
    /// Start a child instance.
    Spawn(Spawn),
}

/// A compiled `spawn`.
#[derive(Clone, Debug)]
pub struct Spawn {
    /// The machine the child runs.
    pub machine: String,
    /// Its start input.
    pub input: Option<ValueSrc>,
    /// Its id (CEL); generated when absent.
    pub id: Option<ExprId>,
}

/// A compiled `after` entry.
#[derive(Clone, Debug)]
pub struct Timer {
    /// The duration as written, e.g. `30s`.
    pub key: String,
    /// The event the timer delivers: `timer.<state path>.<key>`.
    pub event: String,
    /// How long after entry it fires.
    pub delay: Duration,
}

pub use crate::definition::{EXEC_QUEUE, HTTP_QUEUE, RESERVED_QUEUE_PREFIX};

/// A compiled `task`.
#[derive(Clone, Debug)]
pub struct Task {
    /// Its queue (a reserved one for the built-in executors).
    pub queue: String,
    /// What to do.
    pub action: String,
    /// Its input.
    pub input: Option<ValueSrc>,
    /// How long an attempt may take.
    pub timeout: Option<Duration>,
    /// How often the lease must be renewed.
    pub heartbeat: Option<Duration>,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Set when a built-in executor runs the task: its input is the executor's request.
    pub executor: Option<Executor>,
    /// The secrets its executor's values name.
    pub secrets: Vec<String>,
}

/// What a built-in executor does, with the values computed when the task is enqueued.
#[derive(Clone, Debug)]
pub enum Executor {
    /// Run a command.
    Exec {
        /// The command (on the server's allowlist).
        command: String,
        /// Its arguments.
        args: Option<ValueSrc>,
        /// Its environment variables.
        env: Vec<(String, ValueSrc)>,
        /// Its working directory.
        cwd: Option<ValueSrc>,
        /// Bytes kept of stdout and of stderr each.
        max_output: Option<u32>,
    },
    /// Make an HTTP request.
    Http {
        /// The HTTP method.
        method: String,
        /// The URL.
        url: ValueSrc,
        /// The headers.
        headers: Vec<(String, ValueSrc)>,
        /// The body.
        body: Option<ValueSrc>,
    },
}

/// Where a machine uses a built-in executor, for the server's checks at apply time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorUse {
    /// The state's path.
    pub state: String,
    /// `exec` or `http`.
    pub kind: &'static str,
    /// The command, for `exec`.
    pub command: Option<String>,
    /// Secrets named by `{{secret.NAME}}` anywhere in the executor's values.
    pub secrets: Vec<String>,
}

/// The names in `{{secret.NAME}}` placeholders of `text`, in order.
pub fn secret_refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{secret.") {
        rest = &rest[i + "{{secret.".len()..];
        if let Some(end) = rest.find("}}") {
            let name = &rest[..end];
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn value_secrets(v: &ValueExpr, out: &mut Vec<String>) {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.extend(secret_refs(s)),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(m) => m.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    match v {
        ValueExpr::Expr(e) => out.extend(secret_refs(&e.value)),
        ValueExpr::Literal(l) => walk(l, out),
    }
}

/// How a failed task attempt is retried.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// How the delay grows.
    pub backoff: Backoff,
    /// The first delay, in milliseconds.
    pub initial_ms: u64,
    /// The longest delay, in milliseconds.
    pub max_ms: Option<u64>,
    /// A random part of each delay, 0 to 1.
    pub jitter: f64,
}

/// A compiled `map`: `input`, `key` and `depends_on` see `item` and `index` too.
#[derive(Clone, Debug)]
pub struct MapSpec {
    /// The machine each child runs.
    pub machine: String,
    /// CEL: the list of items.
    pub items: ExprId,
    /// Each child's input.
    pub input: Option<ValueSrc>,
    /// CEL: an item's key.
    pub key: Option<ExprId>,
    /// CEL: the keys an item waits for.
    pub depends_on: Option<ExprId>,
    /// At most this many children at once.
    pub concurrency: Option<u32>,
    /// Cancel the rest when a child fails.
    pub fail_fast: bool,
}

/// A compiled `approval`.
#[derive(Clone, Debug)]
pub struct Approval {
    /// What the approver is asked.
    pub prompt: Option<String>,
    /// Who may decide; anyone allowed to when empty.
    pub approvers: Vec<String>,
    /// How many approvals it takes.
    pub quorum: u32,
}

/// One state of the compiled machine.
#[derive(Clone, Debug)]
pub struct StateNode {
    /// Dotted path from the root; `""` for the root.
    pub path: String,
    /// Its name (the last segment of its path).
    pub name: String,
    /// Its `#id`, if it has one.
    pub id: Option<String>,
    /// Its parent; `None` for the root.
    pub parent: Option<StateId>,
    /// Its child states, in document order.
    pub children: Vec<StateId>,
    /// Its kind.
    pub kind: Kind,
    /// The child entered with it (compound states).
    pub initial: Option<StateId>,
    /// The last descendant in pre-order: descendants are `(self, last_desc]`.
    pub last_desc: StateId,
    /// How a top-level final state ends the instance.
    pub status: FinalStatus,
    /// Actions run on entry.
    pub entry: Vec<Action>,
    /// Actions run on exit.
    pub exit: Vec<Action>,
    /// Event name to transitions, in document order.
    pub on: HashMap<String, Vec<TransitionId>>,
    /// Event names in document order, for listing.
    pub on_order: Vec<String>,
    /// Its eventless transitions, in document order.
    pub always: Vec<TransitionId>,
    /// Its timers.
    pub timers: Vec<Timer>,
    /// Its task.
    pub task: Option<Task>,
    /// Its approval.
    pub approval: Option<Approval>,
    /// Its child instance.
    pub spawn: Option<Spawn>,
    /// Its map.
    pub map: Option<MapSpec>,
    /// Where it is written.
    pub pos: Pos,
}

impl StateNode {
    /// Atomic in the SCXML sense: no child states (final states included).
    pub fn is_atomic(&self) -> bool {
        self.children.is_empty()
    }
}

/// One transition of the compiled machine.
#[derive(Clone, Debug)]
pub struct Transition {
    /// The state it leaves from.
    pub source: StateId,
    /// `None` for eventless (`always`) transitions.
    pub event: Option<String>,
    /// The state it goes to; `None` for a targetless transition.
    pub target: Option<StateId>,
    /// Taken only when this holds.
    pub guard: Option<ExprId>,
    /// Context fields it sets.
    pub assign: Vec<Assign>,
    /// Actions it runs.
    pub actions: Vec<Action>,
}

/// A validated, compiled machine definition. Immutable; cheap to share behind an `Arc`.
pub struct Machine {
    /// The definition as loaded.
    pub def: MachineDef,
    /// Every state, in pre-order (document order).
    pub states: Vec<StateNode>,
    /// Every transition.
    pub transitions: Vec<Transition>,
    pub(crate) exprs: Vec<Compiled>,
    pub(crate) env: Arc<cel::Env>,
    pub(crate) by_path: HashMap<String, StateId>,
    pub(crate) input_schema: Option<jsonschema::Validator>,
    /// The machine's context defaults (an object).
    pub context: Value,
    /// Whether any state declares timers, tasks or approvals: when not, an ending
    /// instance has none to cancel.
    pub declares: Declares,
    /// What validation found that does not refuse the definition (an outcome no state
    /// takes), in document order; empty for a stored definition, which is not checked
    /// again.
    pub warnings: Vec<Diagnostic>,
}

/// Which resources a machine declares anywhere (`spawns`: children, from a state, a map or
/// an action).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Declares {
    /// Some state has timers.
    pub timers: bool,
    /// Some state has a task.
    pub tasks: bool,
    /// Some state has an approval.
    pub approvals: bool,
    /// Some state, map or action spawns children.
    pub spawns: bool,
}

impl Machine {
    /// Reads, validates and compiles a definition text. `file` names it in errors and
    /// picks the format by extension when `format` is `None` (else the text is sniffed).
    pub fn load(
        text: &str,
        format: Option<Format>,
        file: Option<&str>,
    ) -> Result<Machine, LoadError> {
        Machine::load_with(text, format, file, &Limits::default())
    }

    /// [`Machine::load`] within `limits` (the definition's depth, its expressions'
    /// length and depth): what applying a definition checks.
    pub fn load_with(
        text: &str,
        format: Option<Format>,
        file: Option<&str>,
        limits: &Limits,
    ) -> Result<Machine, LoadError> {
        Machine::read(text, format, file, limits, false)
    }

    fn read(
        text: &str,
        format: Option<Format>,
        file: Option<&str>,
        limits: &Limits,
        stored: bool,
    ) -> Result<Machine, LoadError> {
        let format = format
            .or_else(|| file.and_then(Format::from_path))
            .unwrap_or_else(|| Format::sniff(text));
        let mut diags = Diagnostics {
            file: file.map(str::to_string),
            list: Vec::new(),
        };
        let node = match source::parse(text, format) {
            Ok(n) => n,
            Err(e) => {
                diags.push(K::Syntax, e.pos, None, e.message);
                return Err(diags.into_result().unwrap_err());
            }
        };
        let max_depth = if stored {
            Limits::CEILING.definition_depth
        } else {
            limits.definition_depth
        };
        if let Some(pos) = too_deep(&node, max_depth) {
            diags.push(
                K::LimitExceeded,
                pos,
                None,
                format!(
                    "the definition nests deeper than {max_depth} levels here (setting `limits.definition_depth`)"
                ),
            );
            return Err(diags.into_result().unwrap_err());
        }
        let def = Reader { diags: &mut diags }.machine(&node);
        match def {
            // Compile even after reader errors, so every problem is reported at once.
            Some(def) => Machine::compile(def, diags, limits, stored),
            None => Err(diags.into_result().unwrap_err()),
        }
    }

    /// Validates and compiles a definition already read into the model.
    pub fn from_def(def: MachineDef) -> Result<Machine, LoadError> {
        Machine::compile(def, Diagnostics::default(), &Limits::default(), false)
    }

    /// Reads a machine from its canonical JSON (as produced by serialising its `def`):
    /// a stored definition, which no limit refuses (see `crate::limits`).
    pub fn from_json(value: &Value) -> Result<Machine, LoadError> {
        Machine::read(
            &value.to_string(),
            Some(Format::Json),
            None,
            &Limits::CEILING,
            true,
        )
    }

    fn compile(
        def: MachineDef,
        diags: Diagnostics,
        limits: &Limits,
        stored: bool,
    ) -> Result<Machine, LoadError> {
        let mut b = Builder {
            diags,
            states: Vec::new(),
            transitions: Vec::new(),
            pending: Vec::new(),
            exprs: Vec::new(),
            env: expr::standard_env(),
            limits: *limits,
            stored,
        };
        b.build(&def);
        let input_schema =
            def.input_schema
                .as_ref()
                .and_then(|schema| match jsonschema::validator_for(schema) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        b.diags.push(
                            K::InvalidSchema,
                            def.pos,
                            None,
                            format!("`input_schema` is not a valid JSON Schema: {e}"),
                        );
                        None
                    }
                });
        let by_path = b
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| (s.path.clone(), i))
            .collect();
        let declares = Declares {
            timers: b.states.iter().any(|s| !s.timers.is_empty()),
            tasks: b.states.iter().any(|s| s.task.is_some()),
            approvals: b.states.iter().any(|s| s.approval.is_some()),
            spawns: b.states.iter().any(|s| {
                s.spawn.is_some()
                    || s.map.is_some()
                    || s.entry
                        .iter()
                        .chain(&s.exit)
                        .any(|a| matches!(a, Action::Spawn(_)))
            }) || b
                .transitions
                .iter()
                .any(|t| t.actions.iter().any(|a| matches!(a, Action::Spawn(_)))),
        };
        let mut m = Machine {
            declares,
            context: def
                .context
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
            def,
            states: b.states,
            transitions: b.transitions,
            exprs: b.exprs,
            env: b.env,
            by_path,
            input_schema,
            warnings: Vec::new(),
        };
        let mut diags = b.diags;
        resolve_targets(&mut m, &b.pending, &mut diags);
        if diags.list.is_empty() {
            check_reachable(&m, &mut diags);
        }
        let file = diags.file.clone();
        diags.into_result()?;
        if !stored {
            let (errors, warnings): (Vec<_>, Vec<_>) = check_outcomes(&m, file.as_deref())
                .into_iter()
                .partition(|d| d.severity == Severity::Error);
            if !errors.is_empty() {
                return Err(LoadError {
                    diagnostics: errors,
                });
            }
            m.warnings = warnings;
        }
        Ok(m)
    }

    /// The machine's name.
    pub fn name(&self) -> &str {
        &self.def.machine
    }

    /// The state at a dotted path (`""` is the root).
    pub fn state_by_path(&self, path: &str) -> Option<StateId> {
        self.by_path.get(path).copied()
    }

    /// Whether `a` is a proper descendant of `b`.
    pub fn is_descendant(&self, a: StateId, b: StateId) -> bool {
        a > b && a <= self.states[b].last_desc
    }

    /// The canonical JSON of the definition.
    /// Every state whose task a built-in executor runs, with its command and secrets.
    pub fn executor_uses(&self) -> Vec<ExecutorUse> {
        self.states
            .iter()
            .filter_map(|st| {
                let t = st.task.as_ref()?;
                let (kind, command) = match t.executor.as_ref()? {
                    Executor::Exec { command, .. } => ("exec", Some(command.clone())),
                    Executor::Http { .. } => ("http", None),
                };
                Some(ExecutorUse {
                    state: st.path.clone(),
                    kind,
                    command,
                    secrets: t.secrets.clone(),
                })
            })
            .collect()
    }

    /// The definition as canonical JSON (what is stored and digested).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.def).expect("definitions serialise")
    }

    /// Checks a start input against the machine's `input_schema`, if it has one.
    pub fn check_input(&self, input: &Value) -> Result<(), String> {
        if let Some(v) = &self.input_schema {
            let errors: Vec<String> = v
                .iter_errors(input)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() {
                        e.to_string()
                    } else {
                        format!("{at}: {e}")
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(errors.join("; "));
            }
        }
        Ok(())
    }

    pub(crate) fn expr(&self, id: ExprId) -> &Compiled {
        &self.exprs[id]
    }
}

/// A target waiting for every state to exist before it is resolved.
struct PendingTarget {
    transition: TransitionId,
    target: String,
    pos: Pos,
}

struct Builder {
    diags: Diagnostics,
    states: Vec<StateNode>,
    transitions: Vec<Transition>,
    pending: Vec<PendingTarget>,
    exprs: Vec<Compiled>,
    env: Arc<cel::Env>,
    limits: Limits,
    /// Compiling a stored definition: limits do not refuse it (`expr::compile_stored`).
    stored: bool,
}

/// An expression as errors quote it: whole when short, else its first 60 characters.
fn excerpt(source: &str) -> String {
    match source.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &source[..i]),
        None => source.to_string(),
    }
}

/// The position of the first node nested deeper than `max` (a scalar at the top is depth
/// 0), found without recursion.
fn too_deep(root: &Node, max: usize) -> Option<Pos> {
    use crate::source::NodeValue;
    let mut stack = vec![(root, 0usize)];
    while let Some((n, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Node>> = match &n.value {
            NodeValue::Seq(items) => Box::new(items.iter()),
            NodeValue::Map(entries) => Box::new(entries.iter().map(|(_, _, v)| v)),
            _ => continue,
        };
        if d + 1 > max {
            return Some(n.pos);
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    None
}

/// The longest duration a definition may name (about 100 years): time arithmetic on it
/// can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok().map(Duration::from_millis)
    } else {
        humantime::parse_duration(s).ok()
    };
    d.filter(|d| *d <= MAX_DURATION)
}

impl Builder {
    fn build(&mut self, def: &MachineDef) {
        let root = StateNode {
            path: String::new(),
            name: String::new(),
            id: None,
            parent: None,
            children: Vec::new(),
            kind: Kind::Compound,
            initial: None,
            last_desc: 0,
            status: FinalStatus::Completed,
            entry: Vec::new(),
            exit: Vec::new(),
            on: HashMap::new(),
            on_order: Vec::new(),
            always: Vec::new(),
            timers: Vec::new(),
            task: None,
            approval: None,
            spawn: None,
            map: None,
            pos: def.pos,
        };
        self.states.push(root);
        let mut ids: HashMap<String, (String, Pos)> = HashMap::new();
        let children: Vec<StateId> = def
            .states
            .iter()
            .map(|(name, s)| self.state(name, s, 0, &mut ids))
            .collect();
        self.states[0].children = children;
        self.states[0].last_desc = self.states.len() - 1;
        self.initial(0, def.initial.as_ref(), def.pos);
        self.on(0, &def.on);
    }

    fn state(
        &mut self,
        name: &str,
        def: &StateDef,
        parent: StateId,
        ids: &mut HashMap<String, (String, Pos)>,
    ) -> StateId {
        let path = join_path(&self.states[parent].path, name);
        let st = Some(path.as_str());
        let kind = match (def.kind, def.states.is_empty()) {
            (Some(StateType::Parallel), true) => {
                self.diags.push(
                    K::ParallelWithoutRegions,
                    def.pos,
                    st,
                    "a parallel state needs at least one region under `states`",
                );
                Kind::Parallel
            }
            (Some(StateType::Parallel), false) => Kind::Parallel,
            (Some(StateType::Final), empty) => {
                if !empty {
                    self.diags.push(
                        K::FinalWithChildren,
                        def.pos,
                        st,
                        "a final state cannot have child states",
                    );
                }
                Kind::Final
            }
            (Some(StateType::Atomic), false) => {
                self.diags.push(
                    K::InvalidValue,
                    def.pos,
                    st,
                    "a state of type `atomic` cannot have child states",
                );
                Kind::Compound
            }
            (Some(StateType::Compound), true) => {
                self.diags.push(
                    K::InvalidValue,
                    def.pos,
                    st,
                    "a state of type `compound` needs child states",
                );
                Kind::Atomic
            }
            (_, true) => Kind::Atomic,
            (_, false) => Kind::Compound,
        };
        if let Some(id) = &def.id {
            if let Some((other, _)) = ids.get(&id.value) {
                self.diags.push(
                    K::DuplicateId,
                    id.pos,
                    st,
                    format!("id `{}` is already the id of state `{other}`", id.value),
                );
            } else {
                ids.insert(id.value.clone(), (path.clone(), id.pos));
            }
        }
        if kind == Kind::Final {
            for key in [
                "on", "always", "after", "on_done", "task", "approval", "spawn", "map", "initial",
            ] {
                if let Some(pos) = def.key_pos.get(key) {
                    self.diags.push(
                        K::FinalWithTransitions,
                        *pos,
                        st,
                        format!("a final state cannot have `{key}`: it is terminal"),
                    );
                }
            }
        } else if let Some(pos) = def.key_pos.get("status") {
            self.diags.push(
                K::InvalidValue,
                *pos,
                st,
                "`status` belongs to final states only",
            );
        }
        if let (Some(_), Some(pos)) = (&def.map, def.key_pos.get("map"))
            && (kind != Kind::Atomic || def.spawn.is_some() || def.task.is_some())
        {
            self.diags.push(
                K::InvalidValue,
                *pos,
                st,
                "`map` belongs to an atomic state without `spawn` or `task`: its children are the map's",
            );
        }
        // A map state completes when its children have finished.
        if kind == Kind::Atomic
            && def.map.is_none()
            && let Some(pos) = def.key_pos.get("on_done")
        {
            self.diags.push(
                K::InvalidValue,
                *pos,
                st,
                "`on_done` needs a compound or parallel state; an atomic state never completes",
            );
        }
        let id = self.states.len();
        let entry = self.actions(&def.entry, st);
        let exit = self.actions(&def.exit, st);
        let timers = def
            .after
            .iter()
            .filter_map(|(key, ts)| {
                let pos = ts.first().map_or(def.pos, |t| t.pos);
                match parse_duration(key) {
                    Some(delay) => Some(Timer {
                        key: key.clone(),
                        event: format!("timer.{path}.{key}"),
                        delay,
                    }),
                    None => {
                        self.diags.push(
                            K::InvalidDuration,
                            pos,
                            st,
                            format!("`after` key `{key}` is not a duration of at most 100 years (e.g. 500ms, 30s, 10m, 2h, 1d)"),
                        );
                        None
                    }
                }
            })
            .collect();
        let task = def.task.as_ref().map(|t| Task {
            queue: match (&t.exec, &t.http) {
                (Some(_), _) => EXEC_QUEUE.to_string(),
                (None, Some(_)) => HTTP_QUEUE.to_string(),
                (None, None) => t.queue.clone(),
            },
            executor: self.executor(t, st),
            secrets: {
                let mut secrets = Vec::new();
                if let Some(e) = &t.exec {
                    e.env.values().for_each(|v| value_secrets(v, &mut secrets));
                }
                if let Some(h) = &t.http {
                    value_secrets(&h.url, &mut secrets);
                    h.headers
                        .values()
                        .for_each(|v| value_secrets(v, &mut secrets));
                    if let Some(b) = &h.body {
                        value_secrets(b, &mut secrets);
                    }
                }
                secrets.sort();
                secrets.dedup();
                secrets
            },
            action: t.action.clone(),
            input: t.input.as_ref().map(|v| self.value(v, st)),
            timeout: t
                .timeout
                .as_ref()
                .and_then(|d| self.duration(d, "task.timeout", st)),
            heartbeat: t
                .heartbeat
                .as_ref()
                .and_then(|d| self.duration(d, "task.heartbeat", st)),
            retry: match &t.retry {
                Some(r) => RetryPolicy {
                    max_attempts: r.max_attempts,
                    backoff: r.backoff,
                    initial_ms: self
                        .duration(&r.initial, "retry.initial", st)
                        .map_or(1000, |d| d.as_millis() as u64),
                    max_ms: r
                        .max
                        .as_ref()
                        .and_then(|d| self.duration(d, "retry.max", st))
                        .map(|d| d.as_millis() as u64),
                    jitter: r.jitter,
                },
                None => RetryPolicy {
                    max_attempts: 1,
                    backoff: Backoff::Exponential,
                    initial_ms: 1000,
                    max_ms: None,
                    jitter: 0.1,
                },
            },
        });
        let spawn = def.spawn.as_ref().map(|s| self.spawn(s, st));
        let map = def.map.as_ref().and_then(|m| self.map_spec(m, st));
        self.states.push(StateNode {
            path: path.clone(),
            name: name.to_string(),
            id: def.id.as_ref().map(|i| i.value.clone()),
            parent: Some(parent),
            children: Vec::new(),
            kind,
            initial: None,
            last_desc: id,
            status: def.status.unwrap_or(FinalStatus::Completed),
            entry,
            exit,
            on: HashMap::new(),
            on_order: Vec::new(),
            always: Vec::new(),
            timers,
            task,
            approval: def.approval.as_ref().map(|a| Approval {
                prompt: a.prompt.clone(),
                approvers: a.approvers.clone(),
                quorum: a.quorum,
            }),
            spawn,
            map,
            pos: def.pos,
        });
        let children: Vec<StateId> = def
            .states
            .iter()
            .map(|(name, s)| self.state(name, s, id, ids))
            .collect();
        self.states[id].children = children;
        self.states[id].last_desc = self.states.len() - 1;
        match kind {
            Kind::Compound => self.initial(id, def.initial.as_ref(), def.pos),
            Kind::Parallel | Kind::Atomic => {
                if let Some(init) = &def.initial {
                    self.diags.push(
                        K::InvalidInitial,
                        init.pos,
                        st,
                        if kind == Kind::Parallel {
                            "a parallel state has no `initial`: all its regions are entered"
                        } else {
                            "an atomic state has no `initial`: it has no child states"
                        },
                    );
                }
            }
            Kind::Final => {}
        }
        // Transitions after children, so ids stay in document order per state.
        self.on(id, &def.on);
        for (key, ts) in &def.after {
            let event = format!("timer.{path}.{key}");
            self.add_transitions(id, Some(&event), ts);
        }
        if !def.on_done.is_empty() {
            let event = format!("done.state.{path}");
            self.add_transitions(id, Some(&event), &def.on_done);
        }
        let always: Vec<TransitionId> = def
            .always
            .iter()
            .map(|t| self.transition(id, None, t))
            .collect();
        self.states[id].always = always;
        id
    }

    fn initial(&mut self, id: StateId, initial: Option<&crate::definition::Sp<String>>, pos: Pos) {
        let path = self.states[id].path.clone();
        let st = (!path.is_empty()).then_some(path.as_str());
        let Some(init) = initial else {
            let first = self.states[id]
                .children
                .first()
                .map(|c| self.states[*c].name.clone());
            self.diags.push(
                K::MissingInitial,
                pos,
                st,
                match first {
                    Some(f) => format!("missing `initial`: name the child state entered first (e.g. `initial: {f}`)"),
                    None => "missing `initial`".to_string(),
                },
            );
            return;
        };
        let found = self.states[id]
            .children
            .iter()
            .copied()
            .find(|c| self.states[*c].name == init.value);
        match found {
            Some(c) => self.states[id].initial = Some(c),
            None => {
                let names: Vec<&str> = self.states[id]
                    .children
                    .iter()
                    .map(|c| self.states[*c].name.as_str())
                    .collect();
                self.diags.push(
                    K::InvalidInitial,
                    init.pos,
                    st,
                    format!(
                        "`initial: {}` is not a child state; children are: {}",
                        init.value,
                        names.join(", ")
                    ),
                );
            }
        }
    }

    fn on(&mut self, id: StateId, on: &IndexMap<String, Vec<TransitionDef>>) {
        for (event, ts) in on {
            self.add_transitions(id, Some(event), ts);
        }
    }

    fn add_transitions(&mut self, id: StateId, event: Option<&str>, ts: &[TransitionDef]) {
        let tids: Vec<TransitionId> = ts.iter().map(|t| self.transition(id, event, t)).collect();
        if let Some(event) = event {
            let state = &mut self.states[id];
            if !state.on.contains_key(event) {
                state.on_order.push(event.to_string());
            }
            state.on.entry(event.to_string()).or_default().extend(tids);
        }
    }

    fn transition(
        &mut self,
        source: StateId,
        event: Option<&str>,
        t: &TransitionDef,
    ) -> TransitionId {
        let path = self.states[source].path.clone();
        let st = (!path.is_empty()).then_some(path.as_str());
        let id = self.transitions.len();
        let guard = t.guard.as_ref().and_then(|g| self.expr(g, st, "guard"));
        let assign = self.assigns(&t.assign, st);
        let actions = self.actions(&t.actions, st);
        if let Some(target) = &t.target {
            self.pending.push(PendingTarget {
                transition: id,
                target: target.value.clone(),
                pos: target.pos,
            });
        }
        self.transitions.push(Transition {
            source,
            event: event.map(str::to_string),
            target: None,
            guard,
            assign,
            actions,
        });
        id
    }

    fn expr(
        &mut self,
        e: &crate::definition::Expr,
        st: Option<&str>,
        what: &str,
    ) -> Option<ExprId> {
        self.expr_with(e, st, what, &[])
    }

    /// [`Builder::expr`], with `extra` variables allowed.
    fn expr_with(
        &mut self,
        e: &crate::definition::Expr,
        st: Option<&str>,
        what: &str,
        extra: &[&'static str],
    ) -> Option<ExprId> {
        let compiled = if self.stored {
            expr::compile_stored(&self.env, &e.value, extra)
        } else {
            expr::compile_with(&self.env, &e.value, extra, &self.limits)
        };
        match compiled {
            Ok(c) => {
                self.exprs.push(c);
                Some(self.exprs.len() - 1)
            }
            Err(err) => {
                let kind = match err {
                    CompileError::Parse(_) => K::InvalidExpression,
                    CompileError::UnknownVariable { .. } => K::UnknownVariable,
                    CompileError::NotAvailable { .. } => K::UnavailableVariable,
                    CompileError::TooLong { .. } | CompileError::TooDeep { .. } => K::LimitExceeded,
                };
                // A bare word where text was meant: say how text is written.
                let hint = match &err {
                    CompileError::UnknownVariable { name }
                        if e.value.trim() == name && what != "guard" =>
                    {
                        format!("; text is quoted inside the expression: \"'{name}'\"")
                    }
                    CompileError::UnknownVariable { name } => crate::error::did_you_mean(
                        name,
                        expr::AVAILABLE.iter().copied().chain(extra.iter().copied()),
                    ),
                    _ => String::new(),
                };
                self.diags.push(
                    kind,
                    e.pos,
                    st,
                    format!("{what} `{}`: {err}{hint}", excerpt(&e.value)),
                );
                None
            }
        }
    }

    fn value(&mut self, v: &ValueExpr, st: Option<&str>) -> ValueSrc {
        self.value_as(v, st, "expression")
    }

    /// [`Builder::value`], naming the field in errors.
    fn value_as(&mut self, v: &ValueExpr, st: Option<&str>, what: &str) -> ValueSrc {
        match v {
            ValueExpr::Literal(l) => ValueSrc::Literal(l.clone()),
            ValueExpr::Expr(e) => match self.expr(e, st, what) {
                Some(id) => ValueSrc::Expr(id),
                None => ValueSrc::Literal(Value::Null),
            },
        }
    }

    fn duration(
        &mut self,
        d: &crate::definition::Sp<String>,
        what: &str,
        st: Option<&str>,
    ) -> Option<Duration> {
        let parsed = parse_duration(&d.value);
        if parsed.is_none() {
            self.diags.push(
                K::InvalidDuration,
                d.pos,
                st,
                format!(
                    "`{what}` `{}` is not a duration of at most 100 years (e.g. 500ms, 30s, 10m, 2h, 1d)",
                    d.value
                ),
            );
        }
        parsed
    }

    fn assigns(&mut self, a: &IndexMap<String, ValueExpr>, st: Option<&str>) -> Vec<Assign> {
        a.iter()
            .map(|(path, v)| Assign {
                path: path.split('.').map(str::to_string).collect(),
                value: self.value(v, st),
            })
            .collect()
    }

    fn executor(&mut self, t: &crate::definition::TaskDef, st: Option<&str>) -> Option<Executor> {
        if let Some(e) = &t.exec {
            if let Some(args) = &e.args {
                let mut named = Vec::new();
                value_secrets(args, &mut named);
                if let Some(name) = named.first() {
                    let pos = match args {
                        ValueExpr::Expr(x) => x.pos,
                        ValueExpr::Literal(_) => e.command.pos,
                    };
                    self.diags.push(
                        K::InvalidValue,
                        pos,
                        st,
                        format!("`task.exec.args` names secret `{name}`: any local user can read a command's arguments; pass it in `env` instead"),
                    );
                }
            }
            return Some(Executor::Exec {
                command: e.command.value.clone(),
                args: e
                    .args
                    .as_ref()
                    .map(|v| self.value_as(v, st, "`task.exec.args`")),
                env: e
                    .env
                    .iter()
                    .map(|(k, v)| {
                        let src = self.value_as(v, st, &format!("`task.exec.env.{k}`"));
                        (k.clone(), src)
                    })
                    .collect(),
                cwd: e
                    .cwd
                    .as_ref()
                    .map(|v| self.value_as(v, st, "`task.exec.cwd`")),
                max_output: e.max_output,
            });
        }
        let h = t.http.as_ref()?;
        Some(Executor::Http {
            method: h.method.clone(),
            url: self.value_as(&h.url, st, "`task.http.url`"),
            headers: h
                .headers
                .iter()
                .map(|(k, v)| {
                    let src = self.value_as(v, st, &format!("`task.http.headers.{k}`"));
                    (k.clone(), src)
                })
                .collect(),
            body: h
                .body
                .as_ref()
                .map(|v| self.value_as(v, st, "`task.http.body`")),
        })
    }

    fn map_spec(&mut self, m: &crate::definition::MapDef, st: Option<&str>) -> Option<MapSpec> {
        const ITEM: &[&str] = &["item", "index"];
        let input = match &m.input {
            None => None,
            Some(ValueExpr::Literal(l)) => Some(ValueSrc::Literal(l.clone())),
            Some(ValueExpr::Expr(e)) => Some(ValueSrc::Expr(self.expr_with(
                e,
                st,
                "`map.input`",
                ITEM,
            )?)),
        };
        Some(MapSpec {
            machine: m.machine.clone(),
            items: self.expr(&m.items, st, "`map.items`")?,
            input,
            key: match &m.key {
                Some(k) => Some(self.expr_with(k, st, "`map.key`", ITEM)?),
                None => None,
            },
            depends_on: match &m.depends_on {
                Some(d) => Some(self.expr_with(d, st, "`map.depends_on`", ITEM)?),
                None => None,
            },
            concurrency: m.concurrency,
            fail_fast: m.on_failure == crate::definition::MapFailure::FailFast,
        })
    }

    fn spawn(&mut self, s: &crate::definition::SpawnDef, st: Option<&str>) -> Spawn {
        Spawn {
            machine: s.machine.clone(),
            input: s.input.as_ref().map(|v| self.value(v, st)),
            id: s.id.as_ref().and_then(|e| self.expr(e, st, "spawn id")),
        }
    }

    fn actions(&mut self, actions: &[ActionDef], st: Option<&str>) -> Vec<Action> {
        actions
            .iter()
            .filter_map(|a| {
                Some(match a {
                    ActionDef::Assign(map) => Action::Assign(self.assigns(map, st)),
                    ActionDef::Send(s) => Action::Send {
                        event: s.event.clone(),
                        to: self.expr(&s.to, st, "send target")?,
                        payload: s.payload.as_ref().map(|p| self.value(p, st)),
                    },
                    ActionDef::Emit(e) => Action::Emit {
                        event: e.event.clone(),
                        payload: e.payload.as_ref().map(|p| self.value(p, st)),
                    },
                    ActionDef::Spawn(s) => Action::Spawn(self.spawn(s, st)),
                })
            })
            .collect()
    }
}

/// Resolves every transition target: `#id` (an explicit id, else a unique state name),
/// a sibling's name, or a dotted path from the root.
fn resolve_targets(m: &mut Machine, pending: &[PendingTarget], diags: &mut Diagnostics) {
    let mut ids: HashMap<&str, StateId> = HashMap::new();
    let mut names: HashMap<&str, Vec<StateId>> = HashMap::new();
    for (i, s) in m.states.iter().enumerate().skip(1) {
        if let Some(id) = &s.id {
            ids.insert(id.as_str(), i);
        }
        names.entry(s.name.as_str()).or_default().push(i);
    }
    let mut resolved = Vec::with_capacity(pending.len());
    for p in pending {
        let source = m.transitions[p.transition].source;
        let src_path = m.states[source].path.as_str();
        let st = (!src_path.is_empty()).then_some(src_path);
        let target = p.target.as_str();
        let found = if let Some(name) = target.strip_prefix('#') {
            if let Some(&i) = ids.get(name) {
                Ok(i)
            } else {
                match names.get(name).map(Vec::as_slice) {
                    Some([i]) => Ok(*i),
                    Some(many) if !many.is_empty() => Err((
                        K::AmbiguousTarget,
                        format!(
                            "target `{target}` is ambiguous: {} states are named `{name}` ({}); give one an `id` or use a dotted path",
                            many.len(),
                            many.iter()
                                .map(|i| m.states[*i].path.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                    _ => Err((
                        K::UnknownTarget,
                        format!(
                            "target `{target}`: no state has id or name `{name}`{}",
                            crate::error::did_you_mean(
                                name,
                                ids.keys().copied().chain(names.keys().copied())
                            )
                        ),
                    )),
                }
            }
        } else {
            let parent = m.states[source].parent.unwrap_or(0);
            let sibling = m.states[parent]
                .children
                .iter()
                .copied()
                .find(|c| m.states[*c].name == target);
            match sibling.or_else(|| m.by_path.get(target).copied().filter(|i| *i != 0)) {
                Some(i) => Ok(i),
                None => Err((
                    K::UnknownTarget,
                    format!(
                        "target `{target}` is neither a sibling state nor a dotted path from the root{}",
                        crate::error::did_you_mean(
                            target,
                            m.states[parent]
                                .children
                                .iter()
                                .map(|c| m.states[*c].name.as_str())
                                .chain(m.states.iter().skip(1).map(|s| s.path.as_str()))
                        )
                    ),
                )),
            }
        };
        match found {
            Ok(i) => resolved.push((p.transition, i)),
            Err((kind, msg)) => diags.push(kind, p.pos, st, msg),
        }
    }
    for (t, i) in resolved {
        m.transitions[t].target = Some(i);
    }
}

/// Marks every state some path from the start can enter; reports the others.
fn check_reachable(m: &Machine, diags: &mut Diagnostics) {
    let n = m.states.len();
    let mut reached = vec![false; n];
    let mut work = vec![0usize];
    let enter = |s: StateId, reached: &mut Vec<bool>, work: &mut Vec<StateId>| {
        // A state and its ancestors are entered together.
        let mut cur = Some(s);
        while let Some(c) = cur {
            if !reached[c] {
                reached[c] = true;
                work.push(c);
            }
            cur = m.states[c].parent;
        }
    };
    reached[0] = true;
    while let Some(s) = work.pop() {
        let node = &m.states[s];
        match node.kind {
            Kind::Compound => {
                if let Some(i) = node.initial {
                    enter(i, &mut reached, &mut work);
                }
            }
            Kind::Parallel => {
                for c in &node.children {
                    enter(*c, &mut reached, &mut work);
                }
            }
            _ => {}
        }
        let ts = node.on.values().flatten().chain(node.always.iter());
        for t in ts {
            if let Some(target) = m.transitions[*t].target {
                enter(target, &mut reached, &mut work);
            }
        }
    }
    for (i, s) in m.states.iter().enumerate().skip(1) {
        if !reached[i] {
            // Report only the outermost unreachable state of a subtree.
            if s.parent.is_some_and(|p| p != 0 && !reached[p]) {
                continue;
            }
            diags.push(
                K::UnreachableState,
                s.pos,
                Some(&s.path),
                "no transition or initial state ever enters this state",
            );
        }
    }
}

/// Every state that asks for work and the outcomes of that work no state can take: an
/// outcome is addressed to the state that asked (`Event::to`), so only a transition on
/// that state, an ancestor (the machine's own `on` included) or a descendant takes it.
/// Unhandled, a task's or a map's outcome fails the instance, an approval's decision is
/// refused to the approver, and a child's is logged and dropped. A task's or a map's
/// success that nothing takes, in a state nothing else can move the instance out of, will
/// fail the instance: an error. The rest are warnings, whose message says what would
/// happen (a state that can be left otherwise may hold its work only to have it
/// cancelled); `validate --strict` refuses them too.
fn check_outcomes(m: &Machine, file: Option<&str>) -> Vec<Diagnostic> {
    let handled = |s: StateId, event: &str| {
        let mut cur = Some(s);
        while let Some(c) = cur {
            if m.states[c].on.contains_key(event) {
                return true;
            }
            cur = m.states[c].parent;
        }
        (s + 1..=m.states[s].last_desc).any(|d| m.states[d].on.contains_key(event))
    };
    // Whether anything but `outcomes` can take the instance out of `s` (a transition on
    // another event or an eventless one, timers included, on `s`, an ancestor, or a
    // descendant when it leads out of `s`): if not, the work's outcome will arrive.
    let way_out = |s: StateId, outcomes: &[&str]| {
        let leaves = |t: TransitionId, from_inside: bool| {
            let target = m.transitions[t].target;
            target.is_some_and(|g| !from_inside || g == s || g < s || g > m.states[s].last_desc)
        };
        let moves = |x: StateId, from_inside: bool| {
            m.states[x]
                .on
                .iter()
                .filter(|(e, _)| !outcomes.contains(&e.as_str()))
                .flat_map(|(_, ts)| ts.iter())
                .chain(m.states[x].always.iter())
                .any(|t| leaves(*t, from_inside))
        };
        let mut cur = Some(s);
        while let Some(c) = cur {
            if moves(c, false) {
                return true;
            }
            cur = m.states[c].parent;
        }
        (s + 1..=m.states[s].last_desc).any(|d| moves(d, true))
    };
    let mut out = Vec::new();
    for (s, node) in m.states.iter().enumerate().skip(1) {
        let done_event = format!("done.state.{}", node.path);
        let mut asks: Vec<(&str, [(&str, &str); 2])> = Vec::new();
        if node.task.is_some() {
            asks.push((
                "task",
                [
                    ("task.done", "the instance fails when the task completes"),
                    ("task.failed", "the instance fails when the task fails"),
                ],
            ));
        }
        if node.approval.is_some() {
            asks.push((
                "approval",
                [
                    ("approve", "an approval is refused to the approver"),
                    ("reject", "a rejection is refused to the approver"),
                ],
            ));
        }
        if node.spawn.is_some() {
            asks.push((
                "spawn",
                [
                    ("child.done", "the child's completion is logged and dropped"),
                    ("child.failed", "the child's failure is logged and dropped"),
                ],
            ));
        }
        if node.map.is_some() {
            asks.push((
                "map",
                [
                    (done_event.as_str(), "the finished map fails the instance"),
                    ("child.failed", "a failed item fails the instance"),
                ],
            ));
        }
        for (what, outcomes) in asks {
            let own = [outcomes[0].0, outcomes[1].0];
            for (i, (event, consequence)) in outcomes.into_iter().enumerate() {
                if handled(s, event) {
                    continue;
                }
                // The success of a task or a map that nothing takes and nothing else can
                // pre-empt (no other way out of the state) will fail the instance: an
                // error. A state that can be left otherwise (a timer, another event) may
                // hold its work only to have it cancelled: a warning.
                let certain = i == 0 && matches!(what, "task" | "map") && !way_out(s, &own);
                let how = if event.starts_with("done.state.") {
                    "`on_done`".to_string()
                } else {
                    format!("a transition on `{event}`")
                };
                out.push(Diagnostic {
                    kind: K::UnhandledOutcome,
                    severity: if certain {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    file: file.map(str::to_string),
                    pos: node.pos,
                    state: Some(node.path.clone()),
                    message: format!(
                        "its {what} ends with `{event}`, and neither this state, an ancestor \
                         nor a descendant has {how}: {consequence}"
                    ),
                });
            }
        }
    }
    out
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("name", &self.def.machine)
            .field("states", &self.states.len())
            .field("transitions", &self.transitions.len())
            .finish_non_exhaustive()
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Machine>();
}
