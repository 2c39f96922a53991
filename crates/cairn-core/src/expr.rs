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
    #[error("unknown variable `{name}`; expressions may use {}", VARIABLES.join(", "))]
    UnknownVariable { name: String },
}

/// Why an expression could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// A compiled CEL program with its source.
#[derive(Debug)]
pub struct Compiled {
    pub source: String,
    program: Program,
}

/// Compiles `source` and checks every free identifier is one of [`VARIABLES`].
pub fn compile(env: &Env, source: &str) -> Result<Compiled, CompileError> {
    compile_with(env, source, &[])
}

/// [`compile`], with `extra` variables allowed too (a map state's `item` and `index`).
pub fn compile_with(
    env: &Env,
    source: &str,
    extra: &[&'static str],
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
    check_idents(program.expression(), &mut bound)?;
    Ok(Compiled {
        source: source.to_string(),
        program,
    })
}

fn check_idents<'e>(e: &'e IdedExpr, bound: &mut Vec<&'e str>) -> Result<(), CompileError> {
    match &e.expr {
        Expr::Unspecified | Expr::Literal(_) => Ok(()),
        Expr::Ident(name) => {
            if name.starts_with('@')
                || bound.contains(&name.as_str())
                || VARIABLES.contains(&name.as_str())
                || TYPE_IDENTS.contains(&name.as_str())
            {
                Ok(())
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

/// The variables of one evaluation. Values borrow from the JSON they came from.
pub struct Scope<'v> {
    ctx: Context<'v, 'v>,
}

impl<'v> Scope<'v> {
    pub fn new(env: &Arc<Env>) -> Scope<'v> {
        Scope {
            ctx: Context::with_env(Arc::clone(env)),
        }
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
        c.program
            .execute(&self.ctx)
            .map_err(|e| EvalError(e.to_string()))
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

    fn eval(src: &str, context: Value) -> Result<Value, String> {
        let env = standard_env();
        let c = compile(&env, src).map_err(|e| e.to_string())?;
        let event = json!({"name": "go", "payload": {"n": 3}, "actor": "ann", "reason": ""});
        let mut s = Scope::new(&env);
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
        assert!(compile(&env, "context.items.all(i, i > 0)").is_ok());
        assert!(compile(&env, "context.items.map(i, i * 2).exists(j, j == 4)").is_ok());
        assert!(compile(&env, "has(context.x) && type(context.x) == int").is_ok());
        assert_eq!(
            compile(&env, "ctx.n > 1").unwrap_err(),
            CompileError::UnknownVariable { name: "ctx".into() }
        );
        assert_eq!(
            compile(&env, "context.items.all(i, j > 0)").unwrap_err(),
            CompileError::UnknownVariable { name: "j".into() }
        );
        assert!(matches!(compile(&env, "1 +"), Err(CompileError::Parse(_))));
    }

    #[test]
    fn evaluation_errors_are_errors() {
        assert!(eval("context.missing + 1", json!({})).is_err());
        assert!(eval("1 / 0", json!({})).is_err());
        assert!(eval("1 + 1.5", json!({})).is_err());
    }
}
