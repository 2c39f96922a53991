//! Outcomes addressed to the state that owns the work (`Event::to`): a task's, an
//! approval's or a child's outcome enables only transitions whose source is that state,
//! one of its ancestors or one of its descendants. `task.done@research.web.searching`
//! below is `task.done` addressed to `research.web.searching`, as the engine sends it.

use crate::support;

use expect_test::expect;
use support::trace;

/// Two regions, each with a task and its own `task.done`: the docs' worked trace.
const RESEARCH: &str = r##"
machine: research
context: { web: null, papers: null }
initial: research
states:
  research:
    type: parallel
    on_done: report
    states:
      web:
        initial: searching
        states:
          searching:
            task: { queue: search, action: search_web }
            on:
              task.done: { target: found, actions: { assign: { web: "event.payload.output" } } }
          found: { type: final }
      papers:
        initial: searching
        states:
          searching:
            task: { queue: search, action: search_papers }
            on:
              task.done: { target: found, actions: { assign: { papers: "event.payload.output" } } }
          found: { type: final }
  report: { type: final }
"##;

#[test]
fn each_region_takes_only_its_own_tasks_outcome_web_first() {
    let t = trace(
        RESEARCH,
        &[
            r#"task.done@research.web.searching {"output": ["web hit"]}"#,
            r#"task.done@research.papers.searching {"output": ["paper"]}"#,
        ],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(research research.web research.web.searching research.papers research.papers.searching)
          effect {"type":"enqueue_task","state":"research.web.searching","queue":"search","action":"search_web","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          effect {"type":"enqueue_task","state":"research.papers.searching","queue":"search","action":"search_papers","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          => ["research.papers.searching", "research.web.searching"] running {"web":null,"papers":null}
        task.done@research.web.searching {"output": ["web hit"]}
          External task.done [research.web.searching->research.web.found] exit(research.web.searching) enter(research.web.found)
          effect {"type":"cancel_task","state":"research.web.searching"}
          => ["research.papers.searching", "research.web.found"] running {"web":["web hit"],"papers":null}
        task.done@research.papers.searching {"output": ["paper"]}
          External task.done [research.papers.searching->research.papers.found] exit(research.papers.searching) enter(research.papers.found)
          Internal done.state.research [research->report] exit(research.papers.found research.papers research.web.found research.web research) enter(report)
          effect {"type":"cancel_task","state":"research.papers.searching"}
          => ["report"] completed {"web":["web hit"],"papers":["paper"]}
    "#]]
    .assert_eq(&t);
}

#[test]
fn each_region_takes_only_its_own_tasks_outcome_papers_first() {
    let t = trace(
        RESEARCH,
        &[
            r#"task.done@research.papers.searching {"output": ["paper"]}"#,
            r#"task.done@research.web.searching {"output": ["web hit"]}"#,
        ],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(research research.web research.web.searching research.papers research.papers.searching)
          effect {"type":"enqueue_task","state":"research.web.searching","queue":"search","action":"search_web","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          effect {"type":"enqueue_task","state":"research.papers.searching","queue":"search","action":"search_papers","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          => ["research.papers.searching", "research.web.searching"] running {"web":null,"papers":null}
        task.done@research.papers.searching {"output": ["paper"]}
          External task.done [research.papers.searching->research.papers.found] exit(research.papers.searching) enter(research.papers.found)
          effect {"type":"cancel_task","state":"research.papers.searching"}
          => ["research.papers.found", "research.web.searching"] running {"web":null,"papers":["paper"]}
        task.done@research.web.searching {"output": ["web hit"]}
          External task.done [research.web.searching->research.web.found] exit(research.web.searching) enter(research.web.found)
          Internal done.state.research [research->report] exit(research.papers.found research.papers research.web.found research.web research) enter(report)
          effect {"type":"cancel_task","state":"research.web.searching"}
          => ["report"] completed {"web":["web hit"],"papers":["paper"]}
    "#]].assert_eq(&t);
}

#[test]
fn an_unaddressed_event_still_reaches_every_region() {
    // What a client's own event does (and what every outcome did before outcomes were
    // addressed): each region with a transition for it takes it.
    let t = trace(RESEARCH, &[r#"task.done {"output": ["web hit"]}"#]);
    expect![[r#"
        start
          Initial - [] exit() enter(research research.web research.web.searching research.papers research.papers.searching)
          effect {"type":"enqueue_task","state":"research.web.searching","queue":"search","action":"search_web","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          effect {"type":"enqueue_task","state":"research.papers.searching","queue":"search","action":"search_papers","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          => ["research.papers.searching", "research.web.searching"] running {"web":null,"papers":null}
        task.done {"output": ["web hit"]}
          External task.done [research.web.searching->research.web.found, research.papers.searching->research.papers.found] exit(research.papers.searching research.web.searching) enter(research.web.found research.papers.found)
          Internal done.state.research [research->report] exit(research.papers.found research.papers research.web.found research.web research) enter(report)
          effect {"type":"cancel_task","state":"research.papers.searching"}
          effect {"type":"cancel_task","state":"research.web.searching"}
          => ["report"] completed {"web":["web hit"],"papers":["web hit"]}
    "#]].assert_eq(&t);
}

#[test]
fn an_ancestor_takes_any_regions_outcome_and_a_descendant_its_states() {
    let t = trace(
        r##"
machine: family
initial: work
states:
  work:
    type: parallel
    on: { task.failed: failed }
    states:
      a:
        initial: job
        states:
          job:
            task: { action: a }
            initial: waiting
            states:
              waiting: { on: { task.done: done } }
              done: {}
      b:
        initial: job
        states:
          job:
            task: { action: b }
            on: { task.done: done }
          done: {}
  failed: { type: final, status: failed }
"##,
        &[
            // Addressed to `work.a.job`: its descendant `waiting` takes it, `b` does not.
            "task.done@work.a.job",
            // `work.b.job` has no transition for it; its ancestor `work` does.
            "task.failed@work.b.job",
        ],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(work work.a work.a.job work.a.job.waiting work.b work.b.job)
          effect {"type":"enqueue_task","state":"work.a.job","queue":"default","action":"a","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          effect {"type":"enqueue_task","state":"work.b.job","queue":"default","action":"b","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          => ["work.a.job.waiting", "work.b.job"] running {}
        task.done@work.a.job
          External task.done [work.a.job.waiting->work.a.job.done] exit(work.a.job.waiting) enter(work.a.job.done)
          => ["work.a.job.done", "work.b.job"] running {}
        task.failed@work.b.job
          External task.failed [work->failed] exit(work.b.job work.b work.a.job.done work.a.job work.a work) enter(failed)
          effect {"type":"cancel_task","state":"work.b.job"}
          effect {"type":"cancel_task","state":"work.a.job"}
          => ["failed"] failed {}
    "#]].assert_eq(&t);
}

#[test]
fn an_outcome_no_related_state_takes_is_not_accepted() {
    let t = trace(
        RESEARCH,
        &[
            // `papers` handles `task.done`, but this one is `web`'s: `web` has none here.
            "task.done@research.web.found",
            "task.done@no.such.state",
        ],
    );
    expect![[r#"
        start
          Initial - [] exit() enter(research research.web research.web.searching research.papers research.papers.searching)
          effect {"type":"enqueue_task","state":"research.web.searching","queue":"search","action":"search_web","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          effect {"type":"enqueue_task","state":"research.papers.searching","queue":"search","action":"search_papers","input":{},"timeout_ms":null,"heartbeat_ms":null,"retry":{"max_attempts":1,"backoff":"exponential","initial_ms":1000,"max_ms":null,"jitter":0.1}}
          => ["research.papers.searching", "research.web.searching"] running {"web":null,"papers":null}
        task.done@research.web.found
          refused: event `task.done` (addressed to `research.web.found`) is not accepted in ["research.papers.searching", "research.web.searching"]; accepted now: task.done
        task.done@no.such.state
          refused: the event is addressed to state `no.such.state`, which this machine does not have
    "#]].assert_eq(&t);
}
