//! Seeded property tests of the step semantics: random machines and event sequences
//! never panic, always yield a legal configuration, are deterministic, and replaying the
//! recorded microsteps reproduces every snapshot.

use crate::support;

use std::fmt::Write;

use cairn_core::machine::Kind;
use cairn_core::{Event, Machine, Snapshot, Status, replay, start, step};
use serde_json::json;

/// xorshift64*: small, seeded, good enough to shape test charts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const EVENTS: &[&str] = &["a", "b", "c", "d"];
const GUARDS: &[&str] = &[
    "context.n % 2 == 0",
    "context.n < 3",
    "event.payload.x > 1",
    "true",
    "false",
];

struct Gen {
    rng: Rng,
    paths: Vec<String>,
}

impl Gen {
    /// Writes a state block at `indent`, returning nothing; records every path.
    fn states(
        &mut self,
        out: &mut String,
        parent: &str,
        depth: usize,
        indent: usize,
        parallel: bool,
    ) {
        let n = if parallel {
            2 + self.rng.below(2)
        } else {
            1 + self.rng.below(3)
        };
        let pad = " ".repeat(indent);
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("s{i}");
            let path = if parent.is_empty() {
                name.clone()
            } else {
                format!("{parent}.{name}")
            };
            names.push((name, path));
        }
        for (i, (name, path)) in names.clone().into_iter().enumerate() {
            self.paths.push(path.clone());
            let _ = writeln!(out, "{pad}{name}:");
            let inner = " ".repeat(indent + 2);
            let kind = if depth >= 3 || parallel && depth >= 2 {
                if self.rng.chance(25) && !parallel {
                    "final"
                } else {
                    "atomic"
                }
            } else {
                match self.rng.below(10) {
                    0..=2 => "compound",
                    3 => "parallel",
                    4 if !parallel => "final",
                    _ => "atomic",
                }
            };
            // The first child of a compound is never final, so starting always settles.
            let kind = if i == 0 && kind == "final" {
                "atomic"
            } else {
                kind
            };
            let _ = writeln!(
                out,
                "{inner}entry: {{ assign: {{ log: \"context.log + ['in {path}']\" }} }}"
            );
            if kind == "final" {
                let _ = writeln!(out, "{inner}type: final");
                continue;
            }
            let _ = writeln!(
                out,
                "{inner}exit: {{ assign: {{ log: \"context.log + ['out {path}']\" }} }}"
            );
            match kind {
                "compound" => {
                    let _ = writeln!(out, "{inner}initial: s0\n{inner}states:");
                    self.states(out, &path, depth + 1, indent + 4, false);
                    if self.rng.chance(60) {
                        let _ = writeln!(out, "{inner}on_done: {}", self.target());
                    }
                }
                "parallel" => {
                    let _ = writeln!(out, "{inner}type: parallel\n{inner}states:");
                    self.states(out, &path, depth + 1, indent + 4, true);
                    if self.rng.chance(60) {
                        let _ = writeln!(out, "{inner}on_done: {}", self.target());
                    }
                }
                _ => {}
            }
            let k = self.rng.below(4);
            if k > 0 {
                let _ = writeln!(out, "{inner}on:");
                let first = self.rng.below(EVENTS.len());
                for e in 0..k {
                    // Distinct event names: duplicate keys are refused.
                    let ev = EVENTS[(first + e) % EVENTS.len()];
                    let target = if self.rng.chance(15) {
                        None
                    } else {
                        Some(self.target())
                    };
                    let guard = if self.rng.chance(40) {
                        Some(GUARDS[self.rng.below(GUARDS.len())])
                    } else {
                        None
                    };
                    let mut t = String::from("{ ");
                    if let Some(tg) = target {
                        let _ = write!(t, "target: \"{tg}\", ");
                    }
                    if let Some(g) = guard {
                        let _ = write!(t, "guard: \"{g}\", ");
                    }
                    let _ = write!(t, "assign: {{ n: \"context.n + 1\" }} }}");
                    if self.rng.chance(50) {
                        // A list: the first whose guard holds wins.
                        let _ = writeln!(
                            out,
                            "{inner}  {ev}: [ {t}, {{ target: \"{}\" }} ]",
                            self.target()
                        );
                    } else {
                        let _ = writeln!(out, "{inner}  {ev}: {t}");
                    }
                }
            }
            if self.rng.chance(15) {
                let _ = writeln!(
                    out,
                    "{inner}always: {{ target: \"{}\", guard: \"context.n < 4\", assign: {{ n: \"context.n + 1\" }} }}",
                    self.target()
                );
            }
        }
    }

    /// A target: a later-known path, by dotted path from the root.
    fn target(&mut self) -> String {
        self.paths[self.rng.below(self.paths.len())].clone()
    }

    fn machine(seed: u64) -> (String, usize) {
        let mut g = Gen {
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            paths: Vec::new(),
        };
        let mut body = String::new();
        g.states(&mut body, "", 0, 2, false);
        let mut out = String::from("machine: random\ncontext: { n: 0, log: [] }\ninitial: s0\n");
        // Root-level jumps make every state reachable and exercise root transitions.
        let _ = writeln!(out, "on:");
        for (i, p) in g.paths.iter().enumerate() {
            let _ = writeln!(out, "  to{i}: \"{p}\"");
        }
        out.push_str("states:\n");
        out.push_str(&body);
        (out, g.paths.len())
    }
}

fn check_legal(m: &Machine, s: &Snapshot) -> Result<(), String> {
    let mut active = vec![false; m.states.len()];
    for leaf in &s.configuration {
        let mut cur = m
            .state_by_path(leaf)
            .ok_or(format!("unknown leaf {leaf}"))?;
        if !m.states[cur].is_atomic() {
            return Err(format!("{leaf} is not atomic"));
        }
        loop {
            active[cur] = true;
            match m.states[cur].parent {
                Some(p) => cur = p,
                None => break,
            }
        }
    }
    if s.configuration.is_empty() {
        return Err("empty configuration".into());
    }
    let mut sorted = s.configuration.clone();
    sorted.sort();
    if sorted != s.configuration {
        return Err("configuration not sorted".into());
    }
    for (i, st) in m.states.iter().enumerate() {
        if !active[i] {
            continue;
        }
        let n = st.children.iter().filter(|c| active[**c]).count();
        match st.kind {
            Kind::Compound if n != 1 => {
                return Err(format!("compound `{}` has {n} active children", st.path));
            }
            Kind::Parallel if n != st.children.len() => {
                return Err(format!(
                    "parallel `{}` has {n} of {} regions active",
                    st.path,
                    st.children.len()
                ));
            }
            _ => {}
        }
        if st.kind == Kind::Final && st.parent == Some(0) && s.status == Status::Running {
            return Err(format!(
                "top-level final `{}` active but still running",
                st.path
            ));
        }
    }
    Ok(())
}

#[test]
fn random_machines_stay_legal_deterministic_and_replayable() {
    let env = support::env();
    let mut outcomes = [0usize; 3];
    for seed in 0..300u64 {
        let (yaml, n_states) = Gen::machine(seed);
        let m = Machine::load(&yaml, None, Some("random.yaml"))
            .unwrap_or_else(|e| panic!("seed {seed}: generated machine invalid:\n{e}\n{yaml}"));
        let first = match start(&m, &json!({}), &env) {
            Ok(o) => o,
            Err(e) => {
                outcomes[2] += 1;
                let _ = e.to_string();
                continue;
            }
        };
        check_legal(&m, &first.snapshot)
            .unwrap_or_else(|e| panic!("seed {seed} start: {e}\n{yaml}"));
        let mut snap = first.snapshot;
        let mut rng = Rng(seed + 7);
        for i in 0..30 {
            let name = if rng.chance(20) {
                format!("to{}", rng.below(n_states))
            } else {
                EVENTS[rng.below(EVENTS.len())].to_string()
            };
            let ev = Event::new(name).with_payload(json!({"x": rng.below(4)}));
            let r1 = step(&m, &snap, &ev, &env);
            let r2 = step(&m, &snap, &ev, &env);
            assert_eq!(r1, r2, "seed {seed} step {i}: not deterministic");
            match r1 {
                Ok(o) => {
                    outcomes[0] += 1;
                    check_legal(&m, &o.snapshot).unwrap_or_else(|e| {
                        panic!("seed {seed} step {i} ({}): {e}\n{yaml}", ev.name)
                    });
                    let again = replay(&m, Some(&snap), &ev, &env, &o.microsteps)
                        .unwrap_or_else(|e| panic!("seed {seed} step {i}: replay refused: {e}"));
                    assert_eq!(
                        again, o.snapshot,
                        "seed {seed} step {i}: replay differs\n{yaml}"
                    );
                    snap = o.snapshot;
                    if snap.status.is_finished() {
                        break;
                    }
                }
                Err(e) => {
                    outcomes[1] += 1;
                    let _ = e.to_string();
                }
            }
        }
    }
    // The generator must exercise both paths, or the test proves little.
    assert!(
        outcomes[0] > 1500 && outcomes[1] > 300,
        "outcomes (ok, refused, start refused): {outcomes:?}"
    );
}

// Hostile inputs: random CEL (valid, truncated, deep, long, with huge literals) and
// random definitions (examples cut short, nested deep, given long expressions). None may
// panic, hang or crash the process; every refusal names a line and column.

/// Pieces random expressions are built from.
const ATOMS: &[&str] = &[
    "context.n",
    "context.items",
    "event.payload.x",
    "1",
    "2.5",
    "'s'",
    "true",
    "null",
    "[1, 2, 3]",
    "{'k': 1}",
    "now",
    "instance.id",
];
const BINARY: &[&str] = &[
    " + ", " - ", " * ", " / ", " % ", " == ", " < ", " && ", " || ", " in ",
];

fn random_expr(rng: &mut Rng, budget: &mut usize) -> String {
    if *budget == 0 {
        return ATOMS[rng.below(ATOMS.len())].to_string();
    }
    *budget -= 1;
    match rng.below(9) {
        0 | 1 => ATOMS[rng.below(ATOMS.len())].to_string(),
        2 | 3 => format!(
            "{}{}{}",
            random_expr(rng, budget),
            BINARY[rng.below(BINARY.len())],
            random_expr(rng, budget)
        ),
        4 => format!("({})", random_expr(rng, budget)),
        5 => format!("!{}", random_expr(rng, budget)),
        6 => format!(
            "[{}, {}]",
            random_expr(rng, budget),
            random_expr(rng, budget)
        ),
        7 => format!(
            "{}.map(x, {})",
            ["context.items", "[1, 2, 3]", "[context.n]"][rng.below(3)],
            random_expr(rng, budget)
        ),
        _ => format!(
            "{} ? {} : {}",
            random_expr(rng, budget),
            random_expr(rng, budget),
            random_expr(rng, budget)
        ),
    }
}

/// A random expression, then mangled one way or another.
fn hostile_expr(rng: &mut Rng) -> String {
    let mut budget = 1 + rng.below(40);
    let e = random_expr(rng, &mut budget);
    match rng.below(8) {
        0 => e[..rng.below(e.len() + 1)].to_string(), // truncated (ASCII only)
        1 => vec!["1"; 50 + rng.below(3000)].join(" + "), // a long chain
        2 => format!(
            "{}1{}",
            "(".repeat(rng.below(400)),
            ")".repeat(rng.below(400))
        ),
        3 => format!("context{}", ".a".repeat(rng.below(2000))),
        4 => format!("'{}'", "x".repeat(rng.below(20_000))), // a huge literal
        5 => format!("{}{}", "[0]".repeat(rng.below(1000)), "[0]"),
        6 => e.replace(' ', "\t"),
        _ => e,
    }
}

#[test]
fn hostile_expressions_never_panic_and_every_refusal_is_positioned() {
    let limits = cairn_core::Limits::default();
    let env = cairn_core::expr::standard_env();
    let mut rng = Rng(0x5eed_cafe);
    let (mut compiled, mut refused) = (0, 0);
    for _ in 0..1500 {
        let src = hostile_expr(&mut rng);
        match cairn_core::expr::compile(&env, &src, &limits) {
            Ok(c) => {
                compiled += 1;
                let ctx = json!({"n": 3, "items": [1, 2, 3]});
                let event = json!({"name": "e", "payload": {"x": 2}});
                let instance = json!({"id": "i"});
                let records = json!({});
                let budget = cairn_core::expr::budget(&limits);
                let mut scope = cairn_core::expr::Scope::new(&env, &budget);
                scope.set_json("context", &ctx);
                scope.set_json("event", &event);
                scope.set_json("instance", &instance);
                scope.set_json("records", &records);
                scope.set_time("now", chrono::DateTime::from_timestamp(0, 0).unwrap());
                let _ = scope.eval(&c); // an error is fine; a panic is not
            }
            Err(_) => refused += 1,
        }
        // Inside a definition, the refusal names where the expression is.
        let text = format!(
            "machine: m\ninitial: a\nstates:\n  a:\n    on:\n      go: {{ target: a, guard: {} }}\n",
            serde_json::to_string(&src).unwrap()
        );
        if let Err(e) = Machine::load(&text, None, Some("m.yaml")) {
            for d in &e.diagnostics {
                assert!(d.pos.line >= 1 && d.pos.col >= 1, "{src:?}: {d}");
            }
        }
    }
    assert!(
        compiled > 300 && refused > 300,
        "{compiled} compiled, {refused} refused"
    );
}

#[test]
fn the_depth_bound_is_never_below_the_parsed_depth() {
    fn depth(e: &cel::IdedExpr) -> usize {
        use cel::common::ast::{EntryExpr, Expr};
        1 + match &e.expr {
            Expr::Call(c) => c
                .target
                .iter()
                .map(|t| depth(t))
                .chain(c.args.iter().map(depth))
                .max()
                .unwrap_or(0),
            Expr::Comprehension(c) => [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ]
            .into_iter()
            .map(depth)
            .max()
            .unwrap_or(0),
            Expr::List(l) => l.elements.iter().map(depth).max().unwrap_or(0),
            Expr::Map(m) => m
                .entries
                .iter()
                .map(|en| match &en.expr {
                    EntryExpr::MapEntry(me) => depth(&me.key).max(depth(&me.value)),
                    EntryExpr::StructField(f) => depth(&f.value),
                })
                .max()
                .unwrap_or(0),
            Expr::Select(s) => depth(&s.operand),
            _ => 0,
        }
    }
    let env = cairn_core::expr::standard_env();
    let mut rng = Rng(0xdead_beef);
    for _ in 0..2000 {
        let mut budget = 1 + rng.below(25);
        let src = random_expr(&mut rng, &mut budget);
        if let Ok(p) = env.compile(&src) {
            let parsed = depth(p.expression());
            let bound = cairn_core::expr::depth_bound(&src);
            assert!(
                bound >= parsed,
                "{src}: bound {bound} < parsed depth {parsed}"
            );
        }
    }
}

/// Definitions as users get them wrong: an example cut at a random byte, a state tree
/// nested deep, an expression made long, bytes that are not text at all.
#[test]
fn hostile_definitions_never_panic_and_refusals_name_where() {
    let examples: Vec<String> = [
        "coding-agent.yaml",
        "research-workflow.yaml",
        "research-step.toml",
    ]
    .iter()
    .map(|f| {
        std::fs::read_to_string(format!("{}/../../examples/{f}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
    })
    .collect();
    let mut rng = Rng(0x0def_1e7e);
    let mut refused = 0;
    for i in 0..400 {
        let base = &examples[i % examples.len()];
        let file = if base.contains("[states") || base.starts_with('[') || base.contains("\n[") {
            "m.toml"
        } else {
            "m.yaml"
        };
        let text = match rng.below(5) {
            0 => {
                let mut cut = rng.below(base.len() + 1);
                while !base.is_char_boundary(cut) {
                    cut -= 1;
                }
                base[..cut].to_string()
            }
            1 => {
                let n = 1 + rng.below(120);
                let mut s = String::from("machine: deep\ninitial: s0\nstates:\n");
                for d in 0..n {
                    let pad = "  ".repeat(2 * d + 1);
                    s.push_str(&format!("{pad}s{d}:\n"));
                    if d + 1 < n {
                        s.push_str(&format!("{pad}  initial: s{}\n{pad}  states:\n", d + 1));
                    } else {
                        s.push_str(&format!("{pad}  type: final\n"));
                    }
                }
                s
            }
            2 => base.replacen(
                "context.",
                &format!("context.{}", "a.".repeat(rng.below(400))),
                1,
            ),
            3 => {
                base.replace('\n', &"\n".repeat(1 + rng.below(2)))
                    .replacen(':', "::", rng.below(3))
            }
            _ => base.clone(),
        };
        match Machine::load(&text, None, Some(file)) {
            Ok(m) => {
                let env = cairn_core::Env::at(chrono::DateTime::from_timestamp(0, 0).unwrap());
                let _ = start(&m, &json!({"request": "r"}), &env);
            }
            Err(e) => {
                refused += 1;
                assert!(!e.diagnostics.is_empty());
                for d in &e.diagnostics {
                    assert!(d.pos.line >= 1, "{d}");
                }
            }
        }
    }
    assert!(refused > 50, "only {refused} refused");
}
