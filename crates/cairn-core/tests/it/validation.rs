//! Golden tests for every validation error kind: each names the file, line, column, state
//! path and a stable kind, and every problem in a file is reported, not just the first.

use cairn_core::{Format, Machine};
use expect_test::{Expect, expect};

fn check(text: &str, format: Format, expect: Expect) {
    let file = match format {
        Format::Yaml => "m.yaml",
        Format::Toml => "m.toml",
        Format::Json => "m.json",
    };
    let got = match Machine::load(text, Some(format), Some(file)) {
        // A machine that loads shows its warnings after `ok`.
        Ok(m) => std::iter::once("ok".to_string())
            .chain(m.warnings.iter().map(|w| w.to_string()))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => e.to_string(),
    };
    expect.assert_eq(&got);
}

fn yaml(text: &str, expect: Expect) {
    check(text, Format::Yaml, expect)
}

#[test]
fn syntax_errors() {
    yaml(
        "machine: x\nstates: [a\n",
        expect![
            "m.yaml:3:1: error[syntax]: invalid YAML: while parsing a flow sequence, expected ',' or ']'"
        ],
    );
    check(
        "{\"machine\": \"x\",\n \"states\": }",
        Format::Json,
        expect!["m.json:2:12: error[syntax]: invalid JSON: expected value"],
    );
    check(
        "machine = \"x\"\nstates = = 1\n",
        Format::Toml,
        expect!["m.toml:2:10: error[syntax]: invalid TOML: extra `=`, expected nothing"],
    );
}

#[test]
fn unknown_and_missing_fields() {
    yaml(
        "machine: x\ninitial: a\nstates:\n  a:\n    tagret: b\n    on: { go: { target: a, gaurd: 'true' } }\n",
        expect![[r#"
            m.yaml:5:5: error[unknown-field]: in state `a`: unknown field `tagret` in a state; expected one of: id, type, description, initial, states, on, always, after, on_done, entry, exit, status, task, approval, spawn, map
            m.yaml:6:28: error[unknown-field]: in state `a`: unknown field `gaurd` in a transition; expected one of: target, guard, assign, actions, description; did you mean `guard`?"#]],
    );
    yaml(
        "initial: a\nstates:\n  a: {}\n",
        expect!["m.yaml:1:1: error[missing-field]: missing field `machine` (the machine's name)"],
    );
    yaml(
        "machine: x\ninitial: a\n",
        expect![[r#"
        m.yaml:1:1: error[missing-field]: the machine has no `states`
        m.yaml:2:10: error[invalid-initial]: `initial: a` is not a child state; children are: "#]],
    );
}

#[test]
fn unknown_and_ambiguous_targets() {
    yaml(
        r##"machine: x
initial: a
states:
  a:
    initial: run
    states:
      run: { on: { go: nowhere, jump: "#run", hop: "#ghost" } }
  b:
    initial: run
    states:
      run: {}
"##,
        expect![[r#"
            m.yaml:7:24: error[unknown-target]: in state `a.run`: target `nowhere` is neither a sibling state nor a dotted path from the root
            m.yaml:7:39: error[ambiguous-target]: in state `a.run`: target `#run` is ambiguous: 2 states are named `run` (a.run, b.run); give one an `id` or use a dotted path
            m.yaml:7:52: error[unknown-target]: in state `a.run`: target `#ghost`: no state has id or name `ghost`"#]],
    );
}

#[test]
fn initial_problems() {
    yaml(
        r##"machine: x
states:
  a:
    states:
      a1: {}
  b:
    initial: a1
    states:
      b1: {}
  p:
    type: parallel
    initial: r
    states:
      r: {}
"##,
        expect![[r#"
            m.yaml:1:1: error[missing-initial]: missing `initial`: name the child state entered first (e.g. `initial: a`)
            m.yaml:3:3: error[missing-initial]: in state `a`: missing `initial`: name the child state entered first (e.g. `initial: a1`)
            m.yaml:7:14: error[invalid-initial]: in state `b`: `initial: a1` is not a child state; children are: b1
            m.yaml:12:14: error[invalid-initial]: in state `p`: a parallel state has no `initial`: all its regions are entered"#]],
    );
}

#[test]
fn unreachable_states() {
    yaml(
        r##"machine: x
initial: a
states:
  a: { on: { go: b } }
  b: {}
  island:
    initial: i1
    states:
      i1: {}
  c: {}
"##,
        expect![[r#"
            m.yaml:6:3: error[unreachable-state]: in state `island`: no transition or initial state ever enters this state
            m.yaml:10:3: error[unreachable-state]: in state `c`: no transition or initial state ever enters this state"#]],
    );
}

#[test]
fn duplicate_ids() {
    yaml(
        r##"machine: x
initial: a
states:
  a: { id: one, on: { go: b } }
  b: { id: one, on: { go: "#one" } }
"##,
        expect![
            "m.yaml:5:12: error[duplicate-id]: in state `b`: id `one` is already the id of state `a`"
        ],
    );
}

#[test]
fn bad_cel() {
    yaml(
        r##"machine: x
initial: a
states:
  a:
    on:
      go:
        target: a
        guard: "context.n >"
        assign: { n: "ctx.n + 1", m: "context.items.all(i, i > k)" }
    entry: { emit: { event: hello, payload: "{'a': nope}" } }
"##,
        expect![[r#"
            m.yaml:8:16: error[invalid-expression]: in state `a`: guard `context.n >`: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}
            m.yaml:9:22: error[unknown-variable]: in state `a`: expression `ctx.n + 1`: unknown variable `ctx`; expressions may use context, event, instance, now
            m.yaml:9:38: error[unknown-variable]: in state `a`: expression `context.items.all(i, i > k)`: unknown variable `k`; expressions may use context, event, instance, now
            m.yaml:10:45: error[unknown-variable]: in state `a`: expression `{'a': nope}`: unknown variable `nope`; expressions may use context, event, instance, now"#]],
    );
}

#[test]
fn bad_durations() {
    yaml(
        r##"machine: x
initial: a
states:
  a:
    after: { 30 seconds please: b, 2h: b, 200years: b }
    task: { queue: q, timeout: soon, retry: { max_attempts: 0, initial: fast } }
  b: {}
"##,
        expect![[r#"
            m.yaml:5:14: error[invalid-duration]: in state `a`: `after` key `30 seconds please` is not a duration of at most 100 years (e.g. 500ms, 30s, 10m, 2h, 1d)
            m.yaml:5:43: error[invalid-duration]: in state `a`: `after` key `200years` is not a duration of at most 100 years (e.g. 500ms, 30s, 10m, 2h, 1d)
            m.yaml:6:32: error[invalid-duration]: in state `a`: `task.timeout` `soon` is not a duration of at most 100 years (e.g. 500ms, 30s, 10m, 2h, 1d)
            m.yaml:6:61: error[invalid-value]: in state `a`: `retry.max_attempts` must be a whole number of at least 1
            m.yaml:6:73: error[invalid-duration]: in state `a`: `retry.initial` `fast` is not a duration of at most 100 years (e.g. 500ms, 30s, 10m, 2h, 1d)"#]],
    );
}

#[test]
fn final_and_parallel_shape_errors() {
    yaml(
        r##"machine: x
initial: a
states:
  a:
    on: { go: f, par: p }
  f:
    type: final
    on: { again: a }
    states:
      inner: {}
  p:
    type: parallel
"##,
        expect![[r#"
            m.yaml:6:3: error[final-with-children]: in state `f`: a final state cannot have child states
            m.yaml:8:5: error[final-with-transitions]: in state `f`: a final state cannot have `on`: it is terminal
            m.yaml:11:3: error[parallel-without-regions]: in state `p`: a parallel state needs at least one region under `states`"#]],
    );
}

#[test]
fn names_and_values() {
    yaml(
        r##"machine: "bad name!"
initial: a
states:
  a.b: {}
  a:
    type: weird
    status: failed
    on: { go: 42 }
"##,
        expect![[r#"
            m.yaml:1:10: error[invalid-name]: machine name `bad name!` must be 1-128 characters of letters, digits, `-`, `_` and `.`
            m.yaml:4:3: error[invalid-name]: in state `a.b`: state name `a.b` must be non-empty and hold no `.`, `#` or surrounding spaces
            m.yaml:6:11: error[invalid-value]: in state `a`: unknown state type `weird`; expected atomic, compound, parallel or final
            m.yaml:7:5: error[invalid-value]: in state `a`: `status` belongs to final states only
            m.yaml:8:15: error[invalid-value]: in state `a`: a transition must be a target name, a map or a list, found an integer"#]],
    );
}

#[test]
fn toml_and_json_errors_have_positions_too() {
    check(
        "machine = \"x\"\ninitial = \"a\"\n\n[states.a.on]\ngo = \"nowhere\"\n",
        Format::Toml,
        expect![
            "m.toml:5:6: error[unknown-target]: in state `a`: target `nowhere` is neither a sibling state nor a dotted path from the root"
        ],
    );
    check(
        "{\n  \"machine\": \"x\",\n  \"initial\": \"a\",\n  \"states\": {\n    \"a\": { \"on\": { \"go\": { \"target\": \"a\", \"guard\": \"nope\" } } }\n  }\n}\n",
        Format::Json,
        expect![
            "m.json:5:52: error[unknown-variable]: in state `a`: guard `nope`: unknown variable `nope`; expressions may use context, event, instance, now"
        ],
    );
}

/// `records` holds nothing yet: an expression that reads it is refused when applied (so
/// no guard silently reads zero), while a machine stored earlier still loads and runs.
#[test]
fn reading_records_is_refused_until_records_exist() {
    check(
        "machine: x\ninitial: a\nstates:\n  a:\n    on:\n      go: { target: b, guard: \"records.findings > 0\" }\n  b: { type: final }\n",
        Format::Yaml,
        expect![
            "m.yaml:6:31: error[unavailable-variable]: in state `a`: guard `records.findings > 0`: `records` is not available yet: this Cairn stores no findings, artifacts or notes, so an expression cannot read their counts; expressions may use context, event, instance, now"
        ],
    );
    // A comprehension may still name its own variable `records`.
    let ok = "machine: x\ninitial: a\nstates:\n  a:\n    on:\n      go: { target: b, guard: \"context.xs.all(records, records > 0)\" }\n  b: { type: final }\n";
    assert!(Machine::load(ok, None, None).is_ok());
    // Stored before this check: loads.
    let stored = Machine::load(
        ok.replace("context.xs.all(records, records > 0)", "size(records) == 0")
            .as_str(),
        None,
        None,
    );
    assert!(stored.is_err());
    let json = serde_json::json!({"machine": "x", "initial": "a", "states": {"a": {"on": {"go": {"target": "b", "guard": "size(records) == 0"}}}, "b": {"type": "final"}}});
    assert!(Machine::from_json(&json).is_ok());
}

#[test]
fn the_design_example_is_valid() {
    let text = include_str!("../../../../examples/coding-agent.yaml");
    assert_eq!(
        Machine::load(text, None, Some("coding-agent.yaml")).map(|m| m.name().to_string()),
        Ok("coding-agent".to_string())
    );
}

#[test]
fn limits_exceeded() {
    // A definition nested beyond `limits.definition_depth` (64 by default), refused at the
    // node where it goes too deep, before anything else reads it.
    let mut deep = String::from(
        "machine: x\ninitial: a\nstates:\n  a:\n    initial: b\n    states:\n      b: {}\ncontext:\n  c: ",
    );
    deep.push_str(&"[".repeat(70));
    deep.push_str(&"]".repeat(70));
    deep.push('\n');
    yaml(
        &deep,
        expect![
            "m.yaml:9:68: error[limit-exceeded]: the definition nests deeper than 64 levels here (setting `limits.definition_depth`)"
        ],
    );
    // Expressions over their length or depth, named with their state and position; the
    // chain is never parsed.
    let chain = vec!["1"; 100].join(" + ");
    let long = format!("'{}'", "x".repeat(5000));
    yaml(
        &format!(
            "machine: x\ninitial: a\nstates:\n  a:\n    on:\n      go: {{ target: a, guard: \"{chain} > 0\" }}\n      stay: {{ target: a, assign: {{ s: \"{long}\" }} }}\n"
        ),
        expect![[r#"
            m.yaml:6:31: error[limit-exceeded]: in state `a`: guard `1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + …`: the expression nests 101 levels deep (operators, selectors, calls and brackets within each other); the limit is 64 (setting `limits.expression_depth`)
            m.yaml:7:39: error[limit-exceeded]: in state `a`: expression `'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…`: the expression is 5002 bytes long; the limit is 4096 (setting `limits.expression_length`)"#]],
    );
}

#[test]
fn outcomes_no_state_takes() {
    // Warnings: the machine loads. A task's failure fails the instance; an approval's
    // decision is refused to the approver; a child's outcome is dropped.
    yaml(
        r##"
machine: w
initial: p
states:
  p:
    type: parallel
    states:
      web:
        initial: s
        states:
          s:
            task: { queue: q }
            on: { task.done: f }
          f: { type: final }
      ask:
        initial: s
        on: { reject: "#p" }
        states:
          s:
            approval: "ok?"
            spawn: { machine: x }
"##,
        expect![[r#"
            ok
            m.yaml:11:11: warning[unhandled-outcome]: in state `p.web.s`: its task ends with `task.failed`, and neither this state, an ancestor nor a descendant has a transition on `task.failed`: the instance fails when the task fails
            m.yaml:19:11: warning[unhandled-outcome]: in state `p.ask.s`: its approval ends with `approve`, and neither this state, an ancestor nor a descendant has a transition on `approve`: an approval is refused to the approver
            m.yaml:19:11: warning[unhandled-outcome]: in state `p.ask.s`: its spawn ends with `child.done`, and neither this state, an ancestor nor a descendant has a transition on `child.done`: the child's completion is logged and dropped
            m.yaml:19:11: warning[unhandled-outcome]: in state `p.ask.s`: its spawn ends with `child.failed`, and neither this state, an ancestor nor a descendant has a transition on `child.failed`: the child's failure is logged and dropped"#]],
    );
    // Handled on an ancestor (the machine itself) or a descendant: nothing to say.
    yaml(
        r##"
machine: fine
initial: job
on: { task.failed: broken }
states:
  job:
    task: { queue: q }
    initial: waiting
    states:
      waiting: { on: { task.done: "#done" } }
  done: { type: final }
  broken: { type: final, status: failed }
"##,
        expect!["ok"],
    );
    // A task or map whose success nothing takes, in a state nothing else can leave: the
    // success will come and fail the instance, so the definition is refused.
    yaml(
        r##"
machine: lost
initial: work
states:
  work:
    task: { queue: q }
    on: { task.failed: fan }
  fan:
    map: { machine: x, items: "[1]" }
    on: { child.failed: done }
  done: { type: final }
"##,
        expect![[r#"
            m.yaml:5:3: error[unhandled-outcome]: in state `work`: its task ends with `task.done`, and neither this state, an ancestor nor a descendant has a transition on `task.done`: the instance fails when the task completes
            m.yaml:8:3: error[unhandled-outcome]: in state `fan`: its map ends with `done.state.fan`, and neither this state, an ancestor nor a descendant has `on_done`: the finished map fails the instance"#]],
    );
    // The same work in a state that a timer or another event can leave may be there only
    // to be cancelled: a warning, and the definition loads.
    yaml(
        r##"
machine: busy
initial: w
states:
  w:
    task: { queue: q }
    after: { 1h: done }
  done: { type: final }
"##,
        expect![[r#"
            ok
            m.yaml:5:3: warning[unhandled-outcome]: in state `w`: its task ends with `task.done`, and neither this state, an ancestor nor a descendant has a transition on `task.done`: the instance fails when the task completes
            m.yaml:5:3: warning[unhandled-outcome]: in state `w`: its task ends with `task.failed`, and neither this state, an ancestor nor a descendant has a transition on `task.failed`: the instance fails when the task fails"#]],
    );
}

/// Misspellings get the nearest name ("did you mean"), and a bare word where text was
/// meant gets how text is written inside an expression.
#[test]
fn messages_suggest_what_was_meant() {
    yaml(
        r##"
machine: dym
context: { status: "" }
initial: draft
states:
  draft:
    on:
      go: { target: reviw, assign: { status: ready, n: "contxt.n" } }
      back: "#drafts"
      far: { target: nothing, guard: ok }
    entri: { assign: { a: "1" } }
  review: {}
"##,
        expect![[r#"
            m.yaml:8:21: error[unknown-target]: in state `draft`: target `reviw` is neither a sibling state nor a dotted path from the root; did you mean `review`?
            m.yaml:8:46: error[unknown-variable]: in state `draft`: expression `ready`: unknown variable `ready`; expressions may use context, event, instance, now; text is quoted inside the expression: "'ready'"
            m.yaml:8:56: error[unknown-variable]: in state `draft`: expression `contxt.n`: unknown variable `contxt`; expressions may use context, event, instance, now; did you mean `context`?
            m.yaml:9:13: error[unknown-target]: in state `draft`: target `#drafts`: no state has id or name `drafts`; did you mean `draft`?
            m.yaml:10:22: error[unknown-target]: in state `draft`: target `nothing` is neither a sibling state nor a dotted path from the root
            m.yaml:10:38: error[unknown-variable]: in state `draft`: guard `ok`: unknown variable `ok`; expressions may use context, event, instance, now
            m.yaml:11:5: error[unknown-field]: in state `draft`: unknown field `entri` in a state; expected one of: id, type, description, initial, states, on, always, after, on_done, entry, exit, status, task, approval, spawn, map; did you mean `entry`?"#]],
    );
}
