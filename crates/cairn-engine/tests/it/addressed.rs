//! Outcomes reach the state that asked for them, on a real store (SQLite or PostgreSQL):
//! two parallel regions, each with its own task, approval or child, and each region moves
//! only on its own outcome, whichever comes first, paused or not. History keeps the
//! address (`addressed_to`), so `verify` replays every instance exactly.

use std::time::Duration as StdDuration;

use cairn_core::Status;
use cairn_engine::{DecideRequest, Usage};
use cairn_store::{ApprovalStatus, HistoryKind};
use serde_json::{Value, json};

use crate::common::{send, start, verified, world};

const RESEARCH: &str = r#"
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
              task.done: { target: found, assign: { web: "event.payload.output" } }
          found: { type: final }
      papers:
        initial: searching
        states:
          searching:
            task: { queue: search, action: search_papers }
            on:
              task.done: { target: found, assign: { papers: "event.payload.output" } }
          found: { type: final }
  report: { type: final }
"#;

/// The addresses the instance's event records carry, in order.
fn addresses(w: &crate::common::World, id: &str) -> Vec<(String, Option<String>)> {
    w.e.history("default", id)
        .unwrap()
        .into_iter()
        .filter(|h| h.kind == HistoryKind::Event)
        .map(|h| (h.event, h.addressed_to))
        .collect()
}

#[test]
fn each_region_takes_its_own_tasks_outcome_in_either_order() {
    for (id, first) in [
        ("web-first", "search_web"),
        ("papers-first", "search_papers"),
    ] {
        let w = world(&[RESEARCH]);
        start(&w.e, "research", id, Value::Null).unwrap();
        let claimed =
            w.e.claim(
                &["search".to_string()],
                "w1",
                10,
                StdDuration::from_secs(30),
            )
            .unwrap();
        assert_eq!(claimed.len(), 2, "{id}: both regions' tasks are enqueued");
        let mut order: Vec<_> = claimed.iter().collect();
        order.sort_by_key(|c| c.action != first);
        for c in &order {
            let hits = json!([format!("{} hit", c.action)]);
            w.e.complete(&c.id, c.attempt, hits, Usage::default())
                .unwrap();
            if c.action == first {
                let mid = w.e.get("default", id).unwrap();
                assert_eq!(
                    mid.status,
                    Status::Running,
                    "{id}: the other region still waits for its own task"
                );
                assert_eq!(mid.configuration.len(), 2, "{id}: {:?}", mid.configuration);
            }
        }
        let inst = w.e.get("default", id).unwrap();
        assert_eq!(
            (
                inst.status,
                inst.context["web"].clone(),
                inst.context["papers"].clone()
            ),
            (
                Status::Completed,
                json!(["search_web hit"]),
                json!(["search_papers hit"])
            ),
            "{id}: each region holds its own task's output"
        );
        let mut want = vec![
            (
                "task.done".to_string(),
                Some("research.web.searching".to_string()),
            ),
            (
                "task.done".to_string(),
                Some("research.papers.searching".to_string()),
            ),
        ];
        if first == "search_papers" {
            want.reverse();
        }
        assert_eq!(addresses(&w, id), want, "{id}: history keeps the address");
        verified(&w.e, &[id]);
    }
}

#[test]
fn a_paused_instance_keeps_the_address_of_a_queued_outcome() {
    let w = world(&[RESEARCH]);
    start(&w.e, "research", "r", Value::Null).unwrap();
    let claimed =
        w.e.claim(
            &["search".to_string()],
            "w1",
            10,
            StdDuration::from_secs(30),
        )
        .unwrap();
    w.e.pause("default", "r", "ops", "looking").unwrap();
    let web = claimed.iter().find(|c| c.action == "search_web").unwrap();
    w.e.complete(&web.id, web.attempt, json!(["w"]), Usage::default())
        .unwrap();
    w.e.resume("default", "r", "ops", "go on").unwrap();
    let inst = w.e.get("default", "r").unwrap();
    assert_eq!(
        (inst.configuration.clone(), inst.context["papers"].clone()),
        (
            vec![
                "research.papers.searching".to_string(),
                "research.web.found".to_string()
            ],
            Value::Null
        ),
        "the queued outcome reached its own region only"
    );
    assert_eq!(
        addresses(&w, "r"),
        [(
            "task.done".to_string(),
            Some("research.web.searching".to_string())
        )]
    );
    verified(&w.e, &["r"]);
}

const REVIEW: &str = r#"
machine: review
initial: review
states:
  review:
    type: parallel
    states:
      legal:
        initial: asking
        states:
          asking:
            approval: { prompt: "Legal?", approvers: [ann] }
            on: { approve: ok, reject: no }
          ok: { type: final }
          no: { type: final }
      security:
        initial: asking
        states:
          asking:
            approval: { prompt: "Security?", approvers: [ann] }
            on: { approve: ok, reject: no }
          ok: { type: final }
          no: { type: final }
"#;

#[test]
fn an_approval_decides_only_its_own_region() {
    let w = world(&[REVIEW]);
    start(&w.e, "review", "v", Value::Null).unwrap();
    let pending =
        w.e.approvals("default", Some(ApprovalStatus::Pending), Some("v"))
            .unwrap();
    let legal = pending
        .iter()
        .find(|a| a.state == "review.legal.asking")
        .unwrap();
    w.e.decide(
        "default",
        "v",
        DecideRequest {
            approval: Some(legal.id.clone()),
            approve: false,
            actor: "ann".into(),
            reason: "no".into(),
            payload: Value::Null,
        },
    )
    .unwrap();
    let inst = w.e.get("default", "v").unwrap();
    assert_eq!(
        inst.configuration,
        ["review.legal.no", "review.security.asking"],
        "security still waits for its own decision"
    );
    assert_eq!(
        w.e.approvals("default", Some(ApprovalStatus::Pending), Some("v"))
            .unwrap()
            .len(),
        1
    );
    verified(&w.e, &["v"]);
}

const STEP: &str = r#"
machine: step
initial: working
states:
  working: { on: { finish: { target: done, assign: { result: "event.payload.value" } } } }
  done: { type: final }
"#;

const PAIR: &str = r#"
machine: pair
context: { a: null, b: null }
initial: both
states:
  both:
    type: parallel
    on_done: finished
    states:
      a:
        initial: waiting
        states:
          waiting:
            spawn: { machine: step, id: "instance.id + '.a'" }
            on: { child.done: { target: done, assign: { a: "event.payload.output.result" } } }
          done: { type: final }
      b:
        initial: waiting
        states:
          waiting:
            spawn: { machine: step, id: "instance.id + '.b'" }
            on: { child.done: { target: done, assign: { b: "event.payload.output.result" } } }
          done: { type: final }
  finished: { type: final }
"#;

#[test]
fn a_childs_outcome_reaches_the_region_that_spawned_it() {
    let w = world(&[STEP, PAIR]);
    start(&w.e, "pair", "p", Value::Null).unwrap();
    send(&w.e, "p.b", "finish", json!({"value": "from b"}));
    let inst = w.e.get("default", "p").unwrap();
    assert_eq!(
        (
            inst.configuration.clone(),
            inst.context["a"].clone(),
            inst.context["b"].clone()
        ),
        (
            vec!["both.a.waiting".to_string(), "both.b.done".to_string()],
            Value::Null,
            json!("from b")
        ),
        "only the region that spawned `p.b` moved"
    );
    send(&w.e, "p.a", "finish", json!({"value": "from a"}));
    let inst = w.e.get("default", "p").unwrap();
    assert_eq!(
        (inst.status, inst.context["a"].clone()),
        (Status::Completed, json!("from a"))
    );
    assert_eq!(
        addresses(&w, "p"),
        [
            ("child.done".to_string(), Some("both.b.waiting".to_string())),
            ("child.done".to_string(), Some("both.a.waiting".to_string()))
        ]
    );
    verified(&w.e, &["p", "p.a", "p.b"]);
}

#[test]
fn applying_a_machine_returns_its_warnings() {
    let w = world(&[]);
    let warned = w
        .e
        .apply(
            "default",
            "machine: w\ninitial: a\nstates:\n  a:\n    task: { queue: q }\n    on: { task.done: b }\n  b: { type: final }\n",
            None,
            Some("w.yaml"),
        )
        .unwrap();
    assert_eq!(
        warned
            .warnings
            .iter()
            .map(|f| (
                f.kind.as_str(),
                f.severity.as_str(),
                f.state.as_deref(),
                f.line
            ))
            .collect::<Vec<_>>(),
        [("unhandled-outcome", "warning", Some("a"), 4)],
        "{:?}",
        warned.warnings
    );
    assert!(warned.created, "a warning does not refuse the definition");
    // A task whose success nothing takes, in a state nothing else can leave: the
    // success will fail the instance, so the definition is refused and nothing stored.
    let refused = w.e.apply(
        "default",
        "machine: lost\ninitial: a\nstates:\n  a:\n    task: { queue: q }\n    on: { task.failed: b }\n  b: { type: final }\n",
        None,
        Some("lost.yaml"),
    );
    assert!(
        matches!(&refused, Err(cairn_engine::Error::Definition(e)) if e.diagnostics[0].kind.code() == "unhandled-outcome"),
        "{refused:?}"
    );
    assert!(
        w.e.machines("default")
            .unwrap()
            .iter()
            .all(|m| m.name != "lost")
    );
}
