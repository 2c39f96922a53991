//! Bounds on what a definition and its expressions may be, so that no input can exhaust
//! the stack or the memory of the process that reads, evaluates or drops it.
//!
//! Every limit is a setting with a default ([`Limits::default`]) and a ceiling
//! ([`Limits::CEILING`]) no setting may pass: the ceilings are what the recursive code
//! (the CEL parser, evaluator and `Drop`, our readers, `serde_json`'s 128 levels) is
//! known to handle on a 2 MiB thread stack with a wide margin (a chain of 1,024 CEL
//! operators still evaluates there; the ceiling allows 256).
//!
//! Limits apply where input arrives: applying a definition, adding a trigger, sending a
//! payload. A definition stored before a limit was lowered is still read back: its
//! over-limit expressions load, and fail when evaluated (see `expr::Compiled`), unless
//! they are beyond the ceiling too, in which case they are never parsed at all.

/// Bounds on definitions and expressions; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest CEL expression, in bytes.
    pub expression_length: usize,
    /// The deepest CEL expression: an upper bound of its syntax tree's depth, counted from
    /// its text before it is parsed (each operator, selector, index, call and bracket
    /// level counts one).
    pub expression_depth: usize,
    /// The deepest definition document (maps and lists within each other).
    pub definition_depth: usize,
    /// The deepest JSON value kept (payloads, inputs, contexts).
    pub json_depth: usize,
    /// The largest context, in bytes of JSON, a step may leave (setting `max_context`).
    pub context_bytes: usize,
    /// How many steps one evaluation may take (each node of the expression evaluated,
    /// each item a comprehension visits).
    pub eval_steps: u64,
    /// How many bytes of strings, lists and maps one evaluation may build.
    pub eval_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            expression_length: 4096,
            expression_depth: 64,
            definition_depth: 64,
            json_depth: 64,
            context_bytes: 1024 * 1024,
            eval_steps: 100_000,
            eval_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The most any setting may allow.
    pub const CEILING: Limits = Limits {
        expression_length: 64 * 1024,
        expression_depth: 256,
        definition_depth: 100,
        json_depth: 100,
        context_bytes: 64 * 1024 * 1024,
        eval_steps: 100_000_000,
        eval_bytes: 1024 * 1024 * 1024,
    };

    /// The first setting over its ceiling (or zero), as `(name, value, ceiling)`.
    pub fn check(&self) -> Result<(), (&'static str, u64, u64)> {
        let c = Limits::CEILING;
        for (name, v, max) in [
            (
                "expression_length",
                self.expression_length as u64,
                c.expression_length as u64,
            ),
            (
                "expression_depth",
                self.expression_depth as u64,
                c.expression_depth as u64,
            ),
            (
                "definition_depth",
                self.definition_depth as u64,
                c.definition_depth as u64,
            ),
            ("json_depth", self.json_depth as u64, c.json_depth as u64),
            (
                "context_bytes",
                self.context_bytes as u64,
                c.context_bytes as u64,
            ),
            ("eval_steps", self.eval_steps, c.eval_steps),
            ("eval_bytes", self.eval_bytes, c.eval_bytes),
        ] {
            if v == 0 || v > max {
                return Err((name, v, max));
            }
        }
        Ok(())
    }
}

/// The nesting depth of a JSON value (a scalar is 0, `[]` and `{}` are 1), counted
/// without recursion, and stopping once past `max`.
pub fn json_depth(v: &serde_json::Value, max: usize) -> usize {
    use serde_json::Value;
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(d + 1);
                if d < max {
                    stack.extend(items.iter().map(|i| (i, d + 1)));
                }
            }
            Value::Object(map) => {
                deepest = deepest.max(d + 1);
                if d < max {
                    stack.extend(map.values().map(|i| (i, d + 1)));
                }
            }
            _ => {}
        }
    }
    deepest
}

/// The length of `v` as compact JSON, counted without building it, and stopping once
/// past `max`.
pub fn json_size(v: &serde_json::Value, max: usize) -> usize {
    struct Count {
        n: usize,
        max: usize,
    }
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n += buf.len();
            if self.n > self.max {
                // Stop serialising: the answer is known.
                return Err(std::io::Error::other("over"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count { n: 0, max };
    let _ = serde_json::to_writer(&mut c, v);
    c.n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_depth_counts_levels() {
        assert_eq!(json_depth(&json!(1), 10), 0);
        assert_eq!(json_depth(&json!([]), 10), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}]}), 10), 4);
        let mut deep = json!(0);
        for _ in 0..1000 {
            deep = json!([deep]);
        }
        assert_eq!(json_depth(&deep, 50), 51, "stops soon after the bound");
    }

    #[test]
    fn json_size_counts_bytes_and_stops_past_the_bound() {
        let v = json!({"a": [1, "xy"]});
        assert_eq!(json_size(&v, 1000), v.to_string().len());
        let big = json!(vec!["abc"; 10_000]);
        assert!(json_size(&big, 100) > 100);
        assert!(
            json_size(&big, 100) < 1000,
            "it stops writing past the bound"
        );
    }

    #[test]
    fn settings_stay_within_the_ceiling() {
        assert!(Limits::default().check().is_ok());
        assert!(Limits::CEILING.check().is_ok());
        let too = Limits {
            expression_depth: 257,
            ..Limits::default()
        };
        assert_eq!(too.check(), Err(("expression_depth", 257, 256)));
        let zero = Limits {
            eval_steps: 0,
            ..Limits::default()
        };
        assert!(zero.check().is_err());
    }
}
