//! Trace snapshots for each rule of the step semantics (SCXML). Entry and exit actions
//! append to `context.log`, so each trace shows the order actions ran in.

use crate::support;

use expect_test::expect;
use support::trace;

#[test]
fn exit_innermost_first_then_actions_then_entry_outermost_first() {
    let t = trace(
        r##"
machine: order
context: { log: [] }
initial: a
states:
  a:
    initial: a1
    entry: { assign: { log: "context.log + ['enter a']" } }
    exit: { assign: { log: "context.log + ['exit a']" } }
    states:
      a1:
        entry: { assign: { log: "context.log + ['enter a1']" } }
        exit: { assign: { log: "context.log + ['exit a1']" } }
        on:
          go: { target: b, actions: { assign: { log: "context.log + ['transition']" } } }
  b:
    initial: b1
    entry: { assign: { log: "context.log + ['enter b']" } }
    states:
      b1:
        entry: { assign: { log: "context.log + ['enter b1']" } }
"##,
        &["go"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(a a.a1)
          => ["a.a1"] running {"log":["enter a","enter a1"]}
        go
          External go [a.a1->b] exit(a.a1 a) enter(b b.b1)
          => ["b.b1"] running {"log":["enter a","enter a1","exit a1","exit a","transition","enter b","enter b1"]}
    "#]]
    .assert_eq(&t);
}

#[test]
fn selection_is_innermost_first_and_bubbles_to_ancestors() {
    let t = trace(
        r##"
machine: bubble
initial: p
states:
  p:
    initial: c
    on: { go: q, up: q }
    states:
      c:
        on: { go: d }
      d: {}
  q: {}
"##,
        &["go", "up"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(p p.c)
          => ["p.c"] running {}
        go
          External go [p.c->p.d] exit(p.c) enter(p.d)
          => ["p.d"] running {}
        up
          External up [p->q] exit(p.d p) enter(q)
          => ["q"] running {}
    "#]]
    .assert_eq(&t);
}

#[test]
fn guards_pick_the_first_enabled_transition_in_document_order() {
    let t = trace(
        r##"
machine: guards
context: { n: 0 }
initial: idle
states:
  idle:
    on:
      go:
        - { target: big, guard: "event.payload.n > 10" }
        - { target: small, guard: "event.payload.n > 0" }
        - { target: idle, assign: { n: "context.n + 1" } }
  big: { on: { back: idle } }
  small: { on: { back: idle } }
"##,
        &["go {\"n\": 0}", "go {\"n\": 5}", "back", "go {\"n\": 50}"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(idle)
          => ["idle"] running {"n":0}
        go {"n": 0}
          External go [idle->idle] exit(idle) enter(idle)
          => ["idle"] running {"n":1}
        go {"n": 5}
          External go [idle->small] exit(idle) enter(small)
          => ["small"] running {"n":1}
        back
          External back [small->idle] exit(small) enter(idle)
          => ["idle"] running {"n":1}
        go {"n": 50}
          External go [idle->big] exit(idle) enter(big)
          => ["big"] running {"n":1}
    "#]]
    .assert_eq(&t);
}

#[test]
fn self_transitions_and_moves_to_descendants_are_external() {
    let t = trace(
        r##"
machine: external
context: { log: [] }
initial: a
states:
  a:
    initial: a1
    entry: { assign: { log: "context.log + ['enter a']" } }
    exit: { assign: { log: "context.log + ['exit a']" } }
    on:
      self: a
      down: a.a2
    states:
      a1: { on: { noop: { assign: { log: "context.log + ['targetless']" } } } }
      a2: {}
"##,
        &["noop", "self", "down"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(a a.a1)
          => ["a.a1"] running {"log":["enter a"]}
        noop
          External noop [a.a1->(none)] exit() enter()
          => ["a.a1"] running {"log":["enter a","targetless"]}
        self
          External self [a->a] exit(a.a1 a) enter(a a.a1)
          => ["a.a1"] running {"log":["enter a","targetless","exit a","enter a"]}
        down
          External down [a->a.a2] exit(a.a1 a) enter(a a.a2)
          => ["a.a2"] running {"log":["enter a","targetless","exit a","enter a","exit a","enter a"]}
    "#]]
    .assert_eq(&t);
}

#[test]
fn parallel_regions_conflicts_and_cross_region_moves() {
    let t = trace(
        r##"
machine: parallel
context: { log: [] }
initial: p
states:
  p:
    type: parallel
    entry: { assign: { log: "context.log + ['enter p']" } }
    exit: { assign: { log: "context.log + ['exit p']" } }
    on: { e: done }
    states:
      r1:
        initial: a
        states:
          a: { on: { e: b, x: "#d", y: p.r1.b } }
          b: {}
      r2:
        initial: c
        states:
          c: { on: { e: d } }
          d: {}
  done: {}
"##,
        &["x", "y", "e", "e"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(p p.r1 p.r1.a p.r2 p.r2.c)
          => ["p.r1.a", "p.r2.c"] running {"log":["enter p"]}
        x
          External x [p.r1.a->p.r2.d] exit(p.r2.c p.r2 p.r1.a p.r1 p) enter(p p.r1 p.r1.a p.r2 p.r2.d)
          => ["p.r1.a", "p.r2.d"] running {"log":["enter p","exit p","enter p"]}
        y
          External y [p.r1.a->p.r1.b] exit(p.r1.a) enter(p.r1.b)
          => ["p.r1.b", "p.r2.d"] running {"log":["enter p","exit p","enter p"]}
        e
          External e [p->done] exit(p.r2.d p.r2 p.r1.b p.r1 p) enter(done)
          => ["done"] running {"log":["enter p","exit p","enter p","exit p"]}
        e
          refused: event `e` is not accepted in ["done"]; accepted now: none
    "#]].assert_eq(&t);
}

#[test]
fn descendant_transition_preempts_ancestor_in_conflict() {
    let t = trace(
        r##"
machine: preempt
initial: p
states:
  p:
    type: parallel
    on: { go: out }
    states:
      r1:
        initial: a
        states:
          a: {}
      r2:
        initial: c
        states:
          c: { on: { go: d } }
          d: {}
  out: {}
"##,
        &["go", "go"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(p p.r1 p.r1.a p.r2 p.r2.c)
          => ["p.r1.a", "p.r2.c"] running {}
        go
          External go [p.r2.c->p.r2.d] exit(p.r2.c) enter(p.r2.d)
          => ["p.r1.a", "p.r2.d"] running {}
        go
          External go [p->out] exit(p.r2.d p.r2 p.r1.a p.r1 p) enter(out)
          => ["out"] running {}
    "#]]
    .assert_eq(&t);
}

#[test]
fn assign_values_are_computed_from_the_context_before_it() {
    let t = trace(
        r##"
machine: swap
context: { a: 1, b: 2, deep: { x: 1 } }
initial: s
states:
  s:
    on:
      swap: { assign: { a: "context.b", b: "context.a", deep.y: "context.deep.x + 1", new.path: 7 } }
"##,
        &["swap"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(s)
          => ["s"] running {"a":1,"b":2,"deep":{"x":1}}
        swap
          External swap [s->(none)] exit() enter()
          => ["s"] running {"a":2,"b":1,"deep":{"x":1,"y":2},"new":{"path":7}}
    "#]]
    .assert_eq(&t);
}

#[test]
fn eventless_transitions_run_before_queued_done_events() {
    let t = trace(
        r##"
machine: order-of-internal
context: { flag: false }
initial: c
states:
  c:
    initial: a
    on_done: after
    always: { target: c2, guard: "context.flag" }
    states:
      a: { on: { go: { target: f, assign: { flag: true } } } }
      f: { type: final }
  c2: {}
  after: {}
"##,
        &["go"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(c c.a)
          => ["c.a"] running {"flag":false}
        go
          External go [c.a->c.f] exit(c.a) enter(c.f)
          Eventless - [c->c2] exit(c.f c) enter(c2)
          => ["c2"] running {"flag":true}
    "#]]
    .assert_eq(&t);
}

#[test]
fn done_events_for_compound_and_parallel_states_and_top_level_final() {
    let t = trace(
        r##"
machine: completion
initial: verifying
states:
  verifying:
    type: parallel
    states:
      tests: { initial: run, states: { run: { on: { ok: passed } }, passed: { type: final } } }
      lint:  { initial: run, states: { run: { on: { ok: passed } }, passed: { type: final } } }
    on_done: completed
  completed: { type: final }
"##,
        &["ok", "ok"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(verifying verifying.tests verifying.tests.run verifying.lint verifying.lint.run)
          => ["verifying.lint.run", "verifying.tests.run"] running {}
        ok
          External ok [verifying.tests.run->verifying.tests.passed, verifying.lint.run->verifying.lint.passed] exit(verifying.lint.run verifying.tests.run) enter(verifying.tests.passed verifying.lint.passed)
          Internal done.state.verifying [verifying->completed] exit(verifying.lint.passed verifying.lint verifying.tests.passed verifying.tests verifying) enter(completed)
          => ["completed"] completed {}
        ok
          refused: the instance is completed; it takes no more events
    "#]].assert_eq(&t);
}

#[test]
fn a_finished_instance_refuses_every_event() {
    let t = trace(
        r##"
machine: finished
initial: a
states:
  a: { on: { fail: failed } }
  failed: { type: final, status: failed }
"##,
        &["fail", "fail"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(a)
          => ["a"] running {}
        fail
          External fail [a->failed] exit(a) enter(failed)
          => ["failed"] failed {}
        fail
          refused: the instance is failed; it takes no more events
    "#]]
    .assert_eq(&t);
}

#[test]
fn entry_exit_and_always_see_the_external_event_on_done_sees_the_done_event() {
    let t = trace(
        r##"
machine: event-var
context: { seen: [] }
initial: c
states:
  c:
    initial: a
    exit: { assign: { seen: "context.seen + ['exit c: ' + event.name]" } }
    on_done: { target: d, assign: { seen: "context.seen + ['on_done: ' + event.name]" } }
    states:
      a: { on: { go: f } }
      f:
        type: final
        entry: { assign: { seen: "context.seen + ['enter f: ' + event.name]" } }
  d:
    entry: { assign: { seen: "context.seen + ['enter d: ' + event.name]" } }
    always: { target: e, assign: { seen: "context.seen + ['always: ' + event.name]" } }
  e: {}
"##,
        &["go"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(c c.a)
          => ["c.a"] running {"seen":[]}
        go
          External go [c.a->c.f] exit(c.a) enter(c.f)
          Internal done.state.c [c->d] exit(c.f c) enter(d)
          Eventless - [d->e] exit(d) enter(e)
          => ["e"] running {"seen":["enter f: go","exit c: go","on_done: done.state.c","enter d: go","always: go"]}
    "#]].assert_eq(&t);
}

#[test]
fn a_queued_done_event_is_delivered_after_its_state_is_reentered() {
    let t = trace(
        r##"
machine: redelivered
context: { n: 0 }
initial: c
states:
  c:
    initial: a
    on_done: { target: out }
    always: { target: c, guard: "context.n == 1", assign: { n: 2 } }
    states:
      a: { on: { go: { target: f, assign: { n: 1 } } } }
      f: { type: final }
  out: {}
"##,
        &["go"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(c c.a)
          => ["c.a"] running {"n":0}
        go
          External go [c.a->c.f] exit(c.a) enter(c.f)
          Eventless - [c->c] exit(c.f c) enter(c c.a)
          Internal done.state.c [c->out] exit(c.a c) enter(out)
          => ["out"] running {"n":2}
    "#]]
    .assert_eq(&t);
}

#[test]
fn unhandled_events_are_refused_with_what_is_accepted() {
    let t = trace(
        r##"
machine: refuse
initial: a
on: { abort: stopped }
states:
  a:
    on:
      go: { target: b, guard: "event.payload.ok" }
      task.done: b
  b: {}
  stopped: { type: final, status: cancelled }
"##,
        &["nope", "go {\"ok\": false}", "go {\"ok\": 3}", "abort"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(a)
          => ["a"] running {}
        nope
          refused: event `nope` is not accepted in ["a"]; accepted now: abort, go, task.done
        go {"ok": false}
          refused: event `go` is not accepted in ["a"]; accepted now: abort, go, task.done
        go {"ok": 3}
          refused: guard `event.payload.ok` of state `a` could not be evaluated: must yield a bool, yielded int
        abort
          External abort [(machine)->stopped] exit(a) enter(stopped)
          => ["stopped"] cancelled {}
    "#]].assert_eq(&t);
}

#[test]
fn runaway_machines_are_refused_and_nothing_changes() {
    let t = trace(
        r##"
machine: runaway
context: { n: 0 }
initial: a
states:
  a: { on: { go: b } }
  b: { always: { target: c, assign: { n: "context.n + 1" } } }
  c: { always: b }
"##,
        &["go"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(a)
          => ["a"] running {"n":0}
        go
          refused: more than 1000 microsteps in one macrostep: the machine loops without waiting for an event
    "#]].assert_eq(&t);
}

#[test]
fn timers_tasks_and_approvals_are_reconciled_at_the_end_of_the_macrostep() {
    let t = trace(
        r##"
machine: resources
context: { skip: false }
initial: work
states:
  work:
    task: { queue: agents, action: plan, input: "{'n': 1}", timeout: 10m,
            retry: { max_attempts: 3, initial: 1s } }
    after: { 30s: timeout }
    on:
      task.done: review
      skip: { target: review, assign: { skip: true } }
  review:
    approval: { prompt: "Approve?" }
    always: { target: work, guard: "context.skip" , assign: { skip: false } }
    on: { approve: done, reject: work }
  timeout: { type: final, status: failed }
  done: { type: final }
"##,
        &["task.done", "reject", "skip", "timer.work.30s"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(work)
          effect {"type":"set_timer","state":"work","event":"timer.work.30s","delay_ms":30000}
          effect {"type":"enqueue_task","state":"work","queue":"agents","action":"plan","input":{"n":1},"timeout_ms":600000,"heartbeat_ms":null,"retry":{"max_attempts":3,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          => ["work"] running {"skip":false}
        task.done
          External task.done [work->review] exit(work) enter(review)
          effect {"type":"cancel_timer","state":"work","event":"timer.work.30s"}
          effect {"type":"cancel_task","state":"work"}
          effect {"type":"request_approval","state":"review","prompt":"Approve?","approvers":[],"quorum":1}
          => ["review"] running {"skip":false}
        reject
          External reject [review->work] exit(review) enter(work)
          effect {"type":"cancel_approval","state":"review"}
          effect {"type":"set_timer","state":"work","event":"timer.work.30s","delay_ms":30000}
          effect {"type":"enqueue_task","state":"work","queue":"agents","action":"plan","input":{"n":1},"timeout_ms":600000,"heartbeat_ms":null,"retry":{"max_attempts":3,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          => ["work"] running {"skip":false}
        skip
          External skip [work->review] exit(work) enter(review)
          Eventless - [review->work] exit(review) enter(work)
          effect {"type":"cancel_timer","state":"work","event":"timer.work.30s"}
          effect {"type":"cancel_task","state":"work"}
          effect {"type":"set_timer","state":"work","event":"timer.work.30s","delay_ms":30000}
          effect {"type":"enqueue_task","state":"work","queue":"agents","action":"plan","input":{"n":1},"timeout_ms":600000,"heartbeat_ms":null,"retry":{"max_attempts":3,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          => ["work"] running {"skip":false}
        timer.work.30s
          External timer.work.30s [work->timeout] exit(work) enter(timeout)
          effect {"type":"cancel_timer","state":"work","event":"timer.work.30s"}
          effect {"type":"cancel_task","state":"work"}
          => ["timeout"] failed {"skip":false}
    "#]].assert_eq(&t);
}

#[test]
fn a_misspelled_event_is_refused_with_the_nearest_accepted_one() {
    let t = trace(
        "machine: m\ninitial: a\nstates:\n  a: { on: { submit: b, cancel: b } }\n  b: {}\n",
        &["sumbit", "zzz"],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(a)
          => ["a"] running {}
        sumbit
          refused: event `sumbit` is not accepted in ["a"]; accepted now: cancel, submit; did you mean `submit`?
        zzz
          refused: event `zzz` is not accepted in ["a"]; accepted now: cancel, submit
    "#]]
    .assert_eq(&t);
}
