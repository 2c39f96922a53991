//! CEL expressions: compiled once per machine, checked for the variables they name, and
//! evaluated against a [`Scope`] built for one step.
//!
//! The JSON ↔ CEL conversion is written here rather than taken from the `cel` crate so
//! that JSON integers are CEL `int`s (`context.n + 1` and `context.n % 2` work), map keys
//! come back sorted (evaluation is deterministic), and JSON strings are borrowed, not
//! copied, into the interpreter.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt,
};
use cel::common::value::Val;
use cel::objects::Key;
use cel::{Context, Env, IdedExpr, Program, Value as CelValue};
use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};

/// The variables an expression may name.
pub const VARIABLES: &[&str] = &["context", "event", "instance", "now", "records"];

/// The variables a newly applied expression may read: `records` is bound (for machines
/// stored earlier) but not yet offered.
pub const AVAILABLE: &[&str] = &["context", "event", "instance", "now"];

/// Type names CEL lets an expression name as identifiers (`type(x) == int`).
const TYPE_IDENTS: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "timestamp",
    "duration",
];

/// Why an expression did not compile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The text is not CEL.
    #[error("{0}")]
    Parse(String),
    /// The expression names a variable that does not exist.
    #[error("unknown variable `{name}`; expressions may use {}", AVAILABLE.join(", "))]
    UnknownVariable {
        /// The name.
        name: String,
    },
    /// The expression reads `records`, which holds nothing yet: refused when a machine
    /// is applied, so no guard silently reads zero.
    #[error(
        "`{name}` is not available yet: this Cairn stores no findings, artifacts or notes, so an expression cannot read their counts; expressions may use {}",
        AVAILABLE.join(", ")
    )]
    NotAvailable {
        /// The name.
        name: String,
    },
    /// The expression is longer than `limits.expression_length` bytes.
    #[error(
        "the expression is {len} bytes long; the limit is {max} (setting `limits.expression_length`)"
    )]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The expression nests deeper than `limits.expression_depth`.
    #[error(
        "the expression nests {depth} levels deep (operators, selectors, calls and brackets within each other); the limit is {max} (setting `limits.expression_depth`)"
    )]
    TooDeep {
        /// Its nesting depth.
        depth: usize,
        /// The limit.
        max: usize,
    },
}

impl CompileError {
    /// Whether a limit refused the expression (rather than its syntax or variables).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            CompileError::TooLong { .. } | CompileError::TooDeep { .. }
        )
    }
}

/// An upper bound of the depth of the syntax tree `source` parses to, counted from its
/// tokens without recursion (so a hostile expression cannot exhaust the stack here):
/// within each bracket level, every operator and selector of one comma-separated element
/// counts one, on top of its deepest operand (a leaf, or a nested bracket level, which
/// counts its own depth plus one for the call, list, index or map it makes). The
/// comprehension macros (`map`, `filter`, `all`, `exists`, `exists_one`) count two more,
/// for the nodes they expand to. Comments and string literals count nothing.
pub fn depth_bound(source: &str) -> usize {
    struct Frame {
        ops: usize,
        child: usize,
        best: usize,
    }
    impl Frame {
        fn new() -> Frame {
            Frame {
                ops: 0,
                child: 0,
                best: 0,
            }
        }
        fn end_element(&mut self) {
            // A leaf is one level; a bracket level below already counts its own node.
            self.best = self.best.max(self.ops + self.child.max(1));
            self.ops = 0;
            self.child = 0;
        }
    }
    let b = source.as_bytes();
    let mut frames = vec![Frame::new()];
    // Whether the last token ended an operand: then `[` indexes it (one more level).
    let mut after_operand = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let operand = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i = skip_string(b, i, false);
                true
            }
            b'r' | b'R' | b'b' | b'B'
                if matches!(b.get(i + 1), Some(b'"' | b'\''))
                    || (matches!(b.get(i + 1), Some(b'r' | b'R' | b'b' | b'B'))
                        && matches!(b.get(i + 2), Some(b'"' | b'\''))) =>
            {
                let two = !matches!(b[i + 1], b'"' | b'\'');
                let raw =
                    c.eq_ignore_ascii_case(&b'r') || (two && b[i + 1].eq_ignore_ascii_case(&b'r'));
                i = skip_string(b, i + if two { 2 } else { 1 }, raw);
                true
            }
            b'0'..=b'9' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_')
                {
                    // An exponent's sign belongs to the number (`1e-5`).
                    if matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
                        i += 1;
                    }
                    i += 1;
                }
                true
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &source[start..i];
                let top = frames.last_mut().expect("the root frame stays");
                if word == "in" {
                    top.ops += 1;
                    false
                } else {
                    if matches!(word, "map" | "filter" | "all" | "exists" | "exists_one") {
                        top.ops += 2;
                    }
                    true
                }
            }
            b'(' | b'[' | b'{' => {
                if c == b'[' && after_operand {
                    frames.last_mut().expect("the root frame stays").ops += 1;
                }
                frames.push(Frame::new());
                i += 1;
                false
            }
            b')' | b']' | b'}' => {
                if frames.len() > 1 {
                    let mut f = frames.pop().expect("more than the root");
                    f.end_element();
                    let top = frames.last_mut().expect("the root frame stays");
                    top.child = top.child.max(f.best + 1);
                }
                i += 1;
                true
            }
            b',' => {
                frames
                    .last_mut()
                    .expect("the root frame stays")
                    .end_element();
                i += 1;
                false
            }
            _ => {
                // Operators: `&&` and the like are two bytes and one node.
                let two = b.get(i + 1).copied();
                let width = match (c, two) {
                    (b'&', Some(b'&'))
                    | (b'|', Some(b'|'))
                    | (b'=', Some(b'='))
                    | (b'!', Some(b'='))
                    | (b'<', Some(b'='))
                    | (b'>', Some(b'=')) => 2,
                    _ => 1,
                };
                frames.last_mut().expect("the root frame stays").ops += 1;
                i += width;
                false
            }
        };
        after_operand = operand;
    }
    while frames.len() > 1 {
        let mut f = frames.pop().expect("more than the root");
        f.end_element();
        let top = frames.last_mut().expect("the root frame stays");
        top.child = top.child.max(f.best + 1);
    }
    let mut root = frames.pop().expect("the root frame");
    root.end_element();
    root.best
}

/// The index just past the string literal whose opening quote is at `i`.
fn skip_string(b: &[u8], mut i: usize, raw: bool) -> usize {
    let q = b[i];
    let triple = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
    i += if triple { 3 } else { 1 };
    while i < b.len() {
        if !raw && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q && (!triple || (b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q))) {
            return i + if triple { 3 } else { 1 };
        }
        i += 1;
    }
    b.len()
}

/// Refuses an expression over the length or depth limits, before anything parses it.
pub fn check_shape(source: &str, limits: &crate::Limits) -> Result<(), CompileError> {
    if source.len() > limits.expression_length {
        return Err(CompileError::TooLong {
            len: source.len(),
            max: limits.expression_length,
        });
    }
    let depth = depth_bound(source);
    if depth > limits.expression_depth {
        return Err(CompileError::TooDeep {
            depth,
            max: limits.expression_depth,
        });
    }
    Ok(())
}

/// Why an expression could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// A compiled CEL program with its source: or, for an expression of a stored definition
/// that is beyond the ceiling of the limits, the reason it will not be evaluated (it was
/// never parsed: see `crate::limits`).
#[derive(Debug)]
pub struct Compiled {
    /// The expression as written.
    pub source: String,
    program: Result<Program, String>,
}

/// Compiles `source` within `limits` and checks every free identifier is one of
/// [`VARIABLES`].
pub fn compile(env: &Env, source: &str, limits: &crate::Limits) -> Result<Compiled, CompileError> {
    compile_with(env, source, &[], limits)
}

/// [`compile`], with `extra` variables allowed too (a map state's `item` and `index`).
pub fn compile_with(
    env: &Env,
    source: &str,
    extra: &[&'static str],
    limits: &crate::Limits,
) -> Result<Compiled, CompileError> {
    check_shape(source, limits)?;
    parse(env, source, extra, AVAILABLE)
}

/// Compiles an expression that was stored (accepted by an earlier apply): no limit
/// refuses it, but one beyond the ceiling of every limit is not parsed, and fails
/// whenever it is evaluated.
pub fn compile_stored(
    env: &Env,
    source: &str,
    extra: &[&'static str],
) -> Result<Compiled, CompileError> {
    match check_shape(source, &crate::Limits::CEILING) {
        Ok(()) => parse(env, source, extra, VARIABLES),
        Err(e) => Ok(Compiled {
            source: source.to_string(),
            program: Err(format!(
                "this expression was stored before limits existed and is beyond what Cairn evaluates: {e}"
            )),
        }),
    }
}

fn parse(
    env: &Env,
    source: &str,
    extra: &[&'static str],
    variables: &[&str],
) -> Result<Compiled, CompileError> {
    let program = env.compile(source).map_err(|e| {
        CompileError::Parse(
            e.errors
                .iter()
                .map(|e| e.msg.clone())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let mut bound: Vec<&str> = extra.to_vec();
    bound.extend_from_slice(variables);
    check_idents(program.expression(), &mut bound)?;
    Ok(Compiled {
        source: source.to_string(),
        program: Ok(program),
    })
}

fn check_idents<'e>(e: &'e IdedExpr, bound: &mut Vec<&'e str>) -> Result<(), CompileError> {
    match &e.expr {
        Expr::Unspecified | Expr::Literal(_) => Ok(()),
        Expr::Ident(name) => {
            if name.starts_with('@')
                || bound.contains(&name.as_str())
                || TYPE_IDENTS.contains(&name.as_str())
            {
                Ok(())
            } else if VARIABLES.contains(&name.as_str()) {
                Err(CompileError::NotAvailable { name: name.clone() })
            } else {
                Err(CompileError::UnknownVariable { name: name.clone() })
            }
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                check_idents(t, bound)?;
            }
            call.args.iter().try_for_each(|a| check_idents(a, bound))
        }
        Expr::Comprehension(c) => {
            check_idents(&c.iter_range, bound)?;
            check_idents(&c.accu_init, bound)?;
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v2) = &c.iter_var2 {
                bound.push(v2);
            }
            bound.push(&c.accu_var);
            let r = check_idents(&c.loop_cond, bound)
                .and_then(|_| check_idents(&c.loop_step, bound))
                .and_then(|_| check_idents(&c.result, bound));
            bound.truncate(depth);
            r
        }
        Expr::List(l) => l.elements.iter().try_for_each(|x| check_idents(x, bound)),
        Expr::Map(m) => m
            .entries
            .iter()
            .try_for_each(|entry| check_entry(&entry.expr, bound)),
        Expr::Struct(s) => s
            .entries
            .iter()
            .try_for_each(|entry| check_entry(&entry.expr, bound)),
        Expr::Select(s) => check_idents(&s.operand, bound),
    }
}

fn check_entry<'e>(entry: &'e EntryExpr, bound: &mut Vec<&'e str>) -> Result<(), CompileError> {
    match entry {
        EntryExpr::StructField(f) => check_idents(&f.value, bound),
        EntryExpr::MapEntry(m) => {
            check_idents(&m.key, bound)?;
            check_idents(&m.value, bound)
        }
    }
}

/// The standard CEL environment every machine compiles and evaluates with.
pub fn standard_env() -> Arc<Env> {
    Arc::new(Env::stdlib())
}

/// What evaluations may spend: steps (each node evaluated, each item a comprehension
/// visits) and bytes of values built. One budget meters every evaluation of a step, or of
/// one trigger; once spent, evaluation fails with an error naming the limit.
pub type Budget = cel::context::Budget;

/// A fresh budget of `limits.eval_steps` steps and `limits.eval_bytes` bytes.
pub fn budget(limits: &crate::Limits) -> Budget {
    Budget::new(limits.eval_steps, limits.eval_bytes)
}

/// The variables of one evaluation. Values borrow from the JSON they came from.
pub struct Scope<'v> {
    ctx: Context<'v, 'v>,
}

impl<'v> Scope<'v> {
    /// A scope whose evaluations spend `budget`.
    pub fn new(env: &Arc<Env>, budget: &'v Budget) -> Scope<'v> {
        let mut ctx = Context::with_env(Arc::clone(env));
        ctx.set_budget(budget);
        #[cfg(feature = "fault-injection")]
        let _ = ctx.add_function("cairn_fault_panic", || -> bool {
            panic!("a fault injected by cairn_fault_panic()")
        });
        Scope { ctx }
    }

    /// Binds `name` to a JSON value (borrowed, converted on binding).
    pub fn set_json(&mut self, name: &str, value: &'v Value) {
        self.ctx.add_variable_as_val(name, json_to_val(value));
    }

    /// Binds `name` to a timestamp.
    pub fn set_time(&mut self, name: &str, t: DateTime<Utc>) {
        self.ctx
            .add_variable_as_val(name, Box::new(CelTimestamp::from(t.fixed_offset())));
    }

    /// Evaluates a program to JSON.
    pub fn eval(&self, c: &Compiled) -> Result<Value, EvalError> {
        let v = self.eval_raw(c)?;
        cel_to_json(&v)
    }

    /// Evaluates a guard, which must yield a boolean.
    pub fn eval_bool(&self, c: &Compiled) -> Result<bool, EvalError> {
        match self.eval_raw(c)? {
            CelValue::Bool(b) => Ok(b),
            other => Err(EvalError(format!(
                "must yield a bool, yielded {}",
                other.type_of()
            ))),
        }
    }

    fn eval_raw(&self, c: &Compiled) -> Result<CelValue, EvalError> {
        match &c.program {
            Ok(p) => p.execute(&self.ctx).map_err(|e| match e {
                cel::ExecutionError::BudgetExceeded(m) => EvalError(format!(
                    "{m} (settings `limits.eval_steps`, `limits.eval_bytes`)"
                )),
                e => EvalError(e.to_string()),
            }),
            Err(why) => Err(EvalError(why.clone())),
        }
    }
}

/// JSON to a CEL value: integers that fit are `int`, larger ones `uint`, the rest `double`.
pub fn json_to_val(v: &Value) -> Box<dyn Val + '_> {
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => Box::new(CelList::from(
            items.iter().map(json_to_val).collect::<Vec<_>>(),
        )),
        Value::Object(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), json_to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// A CEL value back to JSON. Maps come back with their keys sorted; timestamps as
/// RFC 3339 strings; durations as seconds (`"90s"`); NaN and infinities are refused.
pub fn cel_to_json(v: &CelValue) -> Result<Value, EvalError> {
    Ok(match v {
        CelValue::Null => Value::Null,
        CelValue::Bool(b) => Value::Bool(*b),
        CelValue::Int(i) => Value::from(*i),
        CelValue::UInt(u) => Value::from(*u),
        CelValue::Float(f) => Value::Number(
            Number::from_f64(*f)
                .ok_or_else(|| EvalError(format!("the number {f} cannot be stored in JSON")))?,
        ),
        CelValue::String(s) => Value::String(s.as_str().to_string()),
        CelValue::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        CelValue::List(items) => Value::Array(
            items
                .iter()
                .map(cel_to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        CelValue::Map(m) => {
            let mut entries: Vec<(String, Value)> = m
                .map
                .iter()
                .map(|(k, v)| Ok((key_string(k), cel_to_json(v)?)))
                .collect::<Result<_, EvalError>>()?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect::<Map<_, _>>())
        }
        CelValue::Timestamp(t) => Value::String(
            t.with_timezone(&Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        CelValue::Duration(d) => {
            let secs = d.num_milliseconds() as f64 / 1000.0;
            Value::String(format!("{secs}s"))
        }
        other => {
            return Err(EvalError(format!(
                "a {} value cannot be stored in JSON",
                other.type_of()
            )));
        }
    })
}

fn key_string(k: &Key) -> String {
    match k {
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
        Key::String(s) => s.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const L: crate::Limits = crate::Limits::CEILING;

    fn eval(src: &str, context: Value) -> Result<Value, String> {
        let env = standard_env();
        let c = compile(&env, src, &L).map_err(|e| e.to_string())?;
        let event = json!({"name": "go", "payload": {"n": 3}, "actor": "ann", "reason": ""});
        let budget = budget(&crate::Limits::default());
        let mut s = Scope::new(&env, &budget);
        s.set_json("context", &context);
        s.set_json("event", &event);
        s.set_time("now", DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        s.eval(&c).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_stay_ints() {
        assert_eq!(eval("context.n + 1", json!({"n": 41})), Ok(json!(42)));
        assert_eq!(eval("context.n % 2", json!({"n": 41})), Ok(json!(1)));
        assert_eq!(
            eval("context.n * event.payload.n", json!({"n": 2})),
            Ok(json!(6))
        );
        assert_eq!(eval("context.x / 2.0", json!({"x": 3.0})), Ok(json!(1.5)));
        assert_eq!(eval("context.n > 40", json!({"n": 41})), Ok(json!(true)));
    }

    #[test]
    fn structures_round_trip_sorted() {
        assert_eq!(
            eval(
                "{'b': context.l, 'a': [1, 'x', null]}",
                json!({"l": [true]})
            ),
            Ok(json!({"a": [1, "x", null], "b": [true]}))
        );
        assert_eq!(
            eval("string(now)", json!({})),
            Ok(json!("2023-11-14T22:13:20Z"))
        );
        assert_eq!(eval("now", json!({})), Ok(json!("2023-11-14T22:13:20Z")));
    }

    #[test]
    fn unknown_variables_are_refused_but_comprehension_vars_are_fine() {
        let env = standard_env();
        assert!(compile(&env, "context.items.all(i, i > 0)", &L).is_ok());
        assert!(compile(&env, "context.items.map(i, i * 2).exists(j, j == 4)", &L).is_ok());
        assert!(compile(&env, "has(context.x) && type(context.x) == int", &L).is_ok());
        assert_eq!(
            compile(&env, "ctx.n > 1", &L).unwrap_err(),
            CompileError::UnknownVariable { name: "ctx".into() }
        );
        assert_eq!(
            compile(&env, "context.items.all(i, j > 0)", &L).unwrap_err(),
            CompileError::UnknownVariable { name: "j".into() }
        );
        assert!(matches!(
            compile(&env, "1 +", &L),
            Err(CompileError::Parse(_))
        ));
    }

    #[test]
    fn evaluation_errors_are_errors() {
        assert!(eval("context.missing + 1", json!({})).is_err());
        assert!(eval("1 / 0", json!({})).is_err());
        assert!(eval("1 + 1.5", json!({})).is_err());
    }

    #[test]
    fn evaluation_spends_a_budget_of_steps_and_bytes() {
        let env = standard_env();
        let run = |src: &str, ctx: Value, steps: u64, bytes: u64| {
            let c = compile(&env, src, &L).unwrap();
            let b = Budget::new(steps, bytes);
            let mut s = Scope::new(&env, &b);
            s.set_json("context", &ctx);
            s.eval(&c).map_err(|e| e.0)
        };
        // Ten nested maps would build 10^10 elements: the steps run out first.
        let bomb = format!(
            "{}1{}",
            "[0,1,2,3,4,5,6,7,8,9].map(a, ".repeat(10),
            ")".repeat(10)
        );
        let e = run(&bomb, json!({}), 100_000, 1 << 30).unwrap_err();
        assert!(e.contains("more steps than its budget"), "{e}");
        // Doubling a string: the bytes run out.
        let s = "x".repeat(1 << 20);
        let doubling =
            "(context.s + context.s) + (context.s + context.s) + (context.s + context.s)";
        let e = run(doubling, json!({"s": s}), 1_000_000, 4 << 20).unwrap_err();
        assert!(e.contains("more data than its budget"), "{e}");
        assert!(e.contains("limits.eval_bytes"), "{e}");
        // Within the budget, the same expression is fine.
        assert!(run(doubling, json!({"s": "ab"}), 1000, 1 << 20).is_ok());
    }

    #[test]
    fn depth_bounds_count_nesting_not_breadth() {
        for (src, bound) in [
            ("1", 1),
            ("context.n + 1", 3),
            ("a && b && c && d", 4),
            ("{'a': context.x, 'b': context.y, 'c': context.z}", 4),
            ("f(a.b, c.d, e.f)", 3),
            ("[[[1]]]", 4),
            ("'a + b + c' + \"(((\"", 2),
            ("r'\\' + b\"\\\"\" // a comment ((((", 2),
            ("1.5e-3 + 0x1F", 2),
            ("context.items.map(i, i * 2)", 6),
            ("x in [1, 2]", 3),
            ("a ? b : c", 3),
        ] {
            assert!(
                depth_bound(src) >= bound && depth_bound(src) <= bound + 1,
                "{src}: {} (expected about {bound})",
                depth_bound(src)
            );
        }
        // Chains are as deep as they are long.
        let chain = vec!["1"; 300].join(" + ");
        assert_eq!(depth_bound(&chain), 300);
        let select = format!("context{}", ".a".repeat(300));
        assert_eq!(depth_bound(&select), 301);
        assert_eq!(depth_bound(&"[0]".repeat(300)), 301);
        // Unbalanced brackets are the parser's business, not a crash here.
        for src in [")))", "(((", "'unterminated", "r\"", "a.b]", "}{"] {
            let _ = depth_bound(src);
        }
    }

    #[test]
    fn limits_refuse_before_parsing_and_stored_expressions_still_load() {
        let env = standard_env();
        let small = crate::Limits {
            expression_length: 40,
            expression_depth: 5,
            ..crate::Limits::default()
        };
        assert_eq!(
            compile(&env, "1 + ".repeat(20).trim_end_matches(" + "), &small).unwrap_err(),
            CompileError::TooLong { len: 77, max: 40 }
        );
        assert!(matches!(
            compile(&env, "1 + 1 + 1 + 1 + 1 + 1", &small),
            Err(CompileError::TooDeep { depth: 6, max: 5 })
        ));
        // A poison pill from before the limits: stored, it loads, and fails to evaluate.
        let pill = vec!["1"; 5000].join(" + ");
        assert!(compile(&env, &pill, &crate::Limits::default()).is_err());
        let stored = compile_stored(&env, &pill, &[]).unwrap();
        let b = budget(&crate::Limits::default());
        let scope = Scope::new(&env, &b);
        let err = scope.eval(&stored).unwrap_err();
        assert!(err.0.contains("beyond what Cairn evaluates"), "{err}");
        // Within the ceiling, a stored expression is compiled as ever.
        let ok = compile_stored(&env, "1 + 2", &[]).unwrap();
        assert_eq!(scope.eval(&ok).unwrap(), json!(3));
    }
}
