//! Tasks on a real store (SQLite or PostgreSQL) and a manual clock: enqueue with the state, exclusive
//! claims, completion reaching the instance, stale and duplicate completions refused,
//! retries with backoff, expired leases reclaimed, cancellation with the state, a machine
//! that cannot take `task.done` failing visibly, attempts in history, in-process handlers.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use cairn_core::Status;
use cairn_engine::{
    Batch, Config, Engine, Error, MAX_OUTCOMES, ManualClock, NextClaim, Outcome, Report,
    SendRequest, StartRequest, Usage,
};
use cairn_store::{HistoryKind, Reader, TaskStatus};
use cairn_store_any::AnyStore;
use cairn_store_any::testing::Backend;
use chrono::Duration;
use serde_json::json;

const JOB: &str = r#"
machine: job
context: {}
initial: working
states:
  working:
    task: { queue: q, action: work, input: "{'n': 1}", timeout: 1m,
            retry: { max_attempts: 2, backoff: exponential, initial: 10s, jitter: 0 } }
    on:
      task.done: { target: done, assign: { result: "event.payload.answer", worker: "event.actor" } }
      task.failed: { target: broken, assign: { error: "event.payload.error" } }
      skip: skipped
  done: { type: final }
  broken: { type: final, status: failed }
  skipped: { type: final, status: cancelled }
"#;

struct W {
    e: Engine<AnyStore>,
    clock: Arc<ManualClock>,
    _dir: Backend,
}

fn world() -> W {
    let dir = Backend::new();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    ));
    let e = Engine::new(dir.open(), clock.clone(), Config::default());
    e.apply("default", JOB, None, Some("job.yaml")).unwrap();
    W {
        e,
        clock,
        _dir: dir,
    }
}

fn start(e: &Engine<AnyStore>, id: &str) {
    e.start(
        "default",
        StartRequest {
            machine: "job".into(),
            id: Some(id.into()),
            ..Default::default()
        },
    )
    .unwrap();
}

fn q() -> Vec<String> {
    vec!["q".to_string()]
}

fn verified(e: &Engine<AnyStore>, id: &str) {
    let v = e.verify("default", id).unwrap();
    assert!(v.ok, "{id}: {:?}", v.problem);
}

#[test]
fn a_claimed_task_completes_once_and_its_output_reaches_the_instance() {
    let w = world();
    start(&w.e, "j");
    let tasks =
        w.e.tasks("default", Some("q"), Some(TaskStatus::Pending), None)
            .unwrap();
    assert_eq!(
        (
            tasks.len(),
            tasks[0].input.clone(),
            tasks[0].action.as_str()
        ),
        (1, json!({"n": 1}), "work")
    );
    let claimed =
        w.e.claim(&q(), "w1", 10, StdDuration::from_secs(30))
            .unwrap();
    assert_eq!(
        (claimed.len(), claimed[0].attempt, claimed[0].max_attempts),
        (1, 1, 2)
    );
    assert_eq!(
        claimed[0].lease_expires_at,
        w.clock_now(&w) + Duration::seconds(30),
        "the worker's lease, under the task's 1m timeout"
    );
    assert!(
        w.e.claim(&q(), "w2", 10, StdDuration::from_secs(30))
            .unwrap()
            .is_empty(),
        "a leased task is not claimed twice"
    );
    let t = &claimed[0];
    w.e.complete(
        &t.id,
        t.attempt,
        json!({"answer": 42}),
        Usage {
            tokens: Some(1200),
            cost: Some(0.03),
        },
    )
    .unwrap();
    let inst = w.e.get("default", "j").unwrap();
    assert_eq!(
        (
            inst.status,
            inst.context["result"].clone(),
            inst.context["worker"].clone()
        ),
        (Status::Completed, json!(42), json!("w1"))
    );
    let again =
        w.e.complete(&t.id, t.attempt, json!({"answer": 43}), Usage::default());
    assert!(
        matches!(&again, Err(Error::Conflict(m)) if m.contains("stale") && m.contains("completed")),
        "{again:?}"
    );
    let attempts = w.e.store().attempts(&t.id).unwrap();
    assert_eq!(
        (
            attempts.len(),
            attempts[0].outcome.as_deref(),
            attempts[0].tokens,
            attempts[0].cost
        ),
        (1, Some("completed"), Some(1200), Some(0.03))
    );
    let export = w.e.export("default", "j").unwrap();
    assert_eq!(
        (
            export.usage.attempts,
            export.usage.tokens,
            export.usage.cost
        ),
        (1, 1200, 0.03),
        "summed per instance"
    );
    assert_eq!(export.tasks[0].attempts[0].worker, "w1");
    let h = w.e.history("default", "j").unwrap();
    let kinds: Vec<HistoryKind> = h.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [HistoryKind::Start, HistoryKind::Attempt, HistoryKind::Event]
    );
    assert_eq!(h[1].payload["outcome"], "completed");
    assert_eq!(h[1].payload["worker"], "w1");
    verified(&w.e, "j");
}

impl W {
    fn clock_now(&self, _: &W) -> chrono::DateTime<chrono::Utc> {
        use cairn_engine::Clock;
        self.clock.now()
    }
}

#[test]
fn retryable_failures_back_off_then_task_failed_reaches_the_instance() {
    let w = world();
    start(&w.e, "r");
    let t =
        w.e.claim(&q(), "w1", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    let out =
        w.e.fail(&t.id, 1, "rate limited", true, Usage::default())
            .unwrap();
    assert!(out.retrying);
    assert_eq!(
        out.task.available_at,
        w.clock_now(&w) + Duration::seconds(10)
    );
    assert!(
        w.e.claim(&q(), "w1", 1, StdDuration::from_secs(30))
            .unwrap()
            .is_empty(),
        "not before the backoff"
    );
    w.clock.advance(Duration::seconds(10));
    let t2 =
        w.e.claim(&q(), "w2", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    assert_eq!((t2.id.clone(), t2.attempt), (t.id.clone(), 2));
    // The first attempt's worker is stale now, and is told why.
    assert!(matches!(
        w.e.complete(&t.id, 1, json!({}), Usage::default()),
        Err(Error::Conflict(m)) if m.contains("attempt 1 is stale: it timed out (its lease expired) and the task was handed out again, now at attempt 2; its result is discarded")
    ));
    let out =
        w.e.fail(&t.id, 2, "still limited", true, Usage::default())
            .unwrap();
    assert!(!out.retrying, "attempts ran out");
    let inst = w.e.get("default", "r").unwrap();
    assert_eq!(
        (inst.status, inst.context["error"].clone()),
        (Status::Failed, json!("still limited"))
    );
    verified(&w.e, "r");
}

#[test]
fn a_non_retryable_failure_fails_at_once() {
    let w = world();
    start(&w.e, "n");
    let t =
        w.e.claim(&q(), "w", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    assert!(
        !w.e.fail(&t.id, 1, "bad input", false, Usage::default())
            .unwrap()
            .retrying
    );
    assert_eq!(w.e.get("default", "n").unwrap().configuration, ["broken"]);
}

#[test]
fn expired_leases_are_reclaimed_and_the_old_attempt_is_stale() {
    let w = world();
    start(&w.e, "x");
    let t =
        w.e.claim(&q(), "dead", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    w.clock.advance(Duration::minutes(2));
    assert_eq!(w.e.reclaim_expired().unwrap(), 1);
    let a = w.e.store().attempts(&t.id).unwrap();
    assert_eq!(a[0].outcome.as_deref(), Some("expired"));
    w.clock.advance(Duration::seconds(10));
    let t2 =
        w.e.claim(&q(), "alive", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    assert_eq!(t2.attempt, 2);
    assert!(matches!(
        w.e.heartbeat(&t.id, 1, StdDuration::from_secs(30)),
        Err(Error::Conflict(_))
    ));
    w.e.heartbeat(&t.id, 2, StdDuration::from_secs(30)).unwrap();
    // Heartbeats renew the lease, but never past the attempt's 1m timeout.
    w.clock.advance(Duration::seconds(50));
    let renewed = w.e.heartbeat(&t.id, 2, StdDuration::from_secs(30)).unwrap();
    assert_eq!(
        renewed.lease_expires_at,
        Some(renewed.updated_at + Duration::minutes(1))
    );
    w.e.complete(&t.id, 2, json!({"answer": 1}), Usage::default())
        .unwrap();
    assert_eq!(w.e.get("default", "x").unwrap().status, Status::Completed);
    verified(&w.e, "x");
}

#[test]
fn leaving_the_state_cancels_its_task_and_a_late_completion_changes_nothing() {
    let w = world();
    start(&w.e, "c");
    let t =
        w.e.claim(&q(), "w", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    w.e.send(
        "default",
        "c",
        SendRequest {
            event: "skip".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let task = &w.e.tasks("default", None, None, Some("c")).unwrap()[0];
    assert_eq!(task.status, TaskStatus::Cancelled);
    assert_eq!(
        w.e.store().attempts(&t.id).unwrap()[0].outcome.as_deref(),
        Some("cancelled")
    );
    let late =
        w.e.complete(&t.id, 1, json!({"answer": 1}), Usage::default());
    assert!(
        matches!(&late, Err(Error::Conflict(m)) if m.contains("cancelled")),
        "{late:?}"
    );
    let inst = w.e.get("default", "c").unwrap();
    assert_eq!((inst.status, inst.version), (Status::Cancelled, 2));
    verified(&w.e, "c");
}

#[test]
fn a_machine_that_cannot_take_task_done_fails_visibly_instead_of_sticking() {
    let w = world();
    start(&w.e, "f");
    let t =
        w.e.claim(&q(), "w", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    // `event.payload.answer` is missing: the assign fails.
    w.e.complete(&t.id, 1, json!({"other": true}), Usage::default())
        .unwrap();
    let inst = w.e.get("default", "f").unwrap();
    assert_eq!(inst.status, Status::Failed);
    assert!(
        inst.last_error
            .as_deref()
            .unwrap()
            .contains("`task.done` could not be applied"),
        "{:?}",
        inst.last_error
    );
    verified(&w.e, "f");
}

const CHAIN: &str = r#"
machine: chain
initial: a
states:
  a: { task: { queue: c, action: one }, on: { task.done: b } }
  b: { task: { queue: c, action: two }, on: { task.done: done } }
  done: { type: final }
"#;

fn done(task: &str, attempt: u32, output: serde_json::Value) -> Outcome {
    Outcome {
        task: task.into(),
        attempt,
        report: Report::Completed { output },
        usage: Usage::default(),
    }
}

fn next(queue: &str, worker: &str, batch: usize) -> Option<NextClaim> {
    Some(NextClaim {
        queues: vec![queue.into()],
        worker: worker.into(),
        batch,
        lease: StdDuration::from_secs(30),
    })
}

#[test]
fn a_batch_applies_each_outcome_alone_and_claims_what_they_enqueued() {
    let w = world();
    w.e.apply("default", CHAIN, None, None).unwrap();
    for id in ["c1", "c2", "c3"] {
        w.e.start(
            "default",
            StartRequest {
                machine: "chain".into(),
                id: Some(id.into()),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let first =
        w.e.claim(&["c".to_string()], "w", 10, StdDuration::from_secs(30))
            .unwrap();
    assert_eq!(first.len(), 3);
    let by_instance = |i: &str| first.iter().find(|t| t.instance == i).unwrap().clone();
    let (t1, t2, t3) = (by_instance("c1"), by_instance("c2"), by_instance("c3"));
    let big = json!({"pad": "x".repeat(2 * 1024 * 1024)});
    let r =
        w.e.report(Batch {
            outcomes: vec![
                done(&t3.id, 1, json!({})),
                done(&t1.id, 2, json!({})), // stale: the attempt is 1
                done("no-such-task", 1, json!({})),
                done(&t2.id, 1, big), // too large
            ],
            claim: next("c", "w", 10),
            ..Default::default()
        })
        .unwrap();
    let verdicts: Vec<(String, bool)> = r
        .outcomes
        .iter()
        .map(|o| (o.task.clone(), o.result.is_ok()))
        .collect();
    assert_eq!(
        verdicts,
        [
            (t3.id.clone(), true),
            (t1.id.clone(), false),
            ("no-such-task".into(), false),
            (t2.id.clone(), false)
        ],
        "one verdict per outcome, in the order given"
    );
    assert!(matches!(&r.outcomes[1].result, Err(Error::Conflict(m)) if m.contains("stale")));
    assert!(matches!(&r.outcomes[2].result, Err(Error::NotFound(_))));
    assert!(matches!(&r.outcomes[3].result, Err(Error::TooLarge { .. })));
    // c3 moved to `b`, and the same unit claimed b's new task.
    assert_eq!(w.e.get("default", "c3").unwrap().configuration, ["b"]);
    assert_eq!(
        r.claimed
            .iter()
            .map(|c| (c.instance.as_str(), c.action.as_str()))
            .collect::<Vec<_>>(),
        [("c3", "two")]
    );
    // The refused outcomes changed nothing: c1 and c2 wait in `a`, their tasks leased.
    for id in ["c1", "c2"] {
        let i = w.e.get("default", id).unwrap();
        assert_eq!(
            (i.configuration.clone(), i.version),
            (vec!["a".to_string()], 1)
        );
    }
    let r =
        w.e.report(Batch {
            outcomes: vec![
                done(&t1.id, 1, json!({"ok": 1})),
                done(&t2.id, 1, json!({})),
            ],
            ..Default::default()
        })
        .unwrap();
    assert!(r.outcomes.iter().all(|o| o.result.is_ok()) && r.claimed.is_empty());
    for id in ["c1", "c2", "c3"] {
        verified(&w.e, id);
    }
}

#[test]
fn an_identical_repeat_is_answered_as_applied_and_changes_nothing() {
    let w = world();
    start(&w.e, "rep");
    let t =
        w.e.claim(&q(), "w", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    let usage = Usage {
        tokens: Some(7),
        cost: Some(0.5),
    };
    let outcome = Outcome {
        usage: usage.clone(),
        ..done(&t.id, 1, json!({"answer": 5}))
    };
    let first =
        w.e.report(Batch {
            outcomes: vec![outcome.clone()],
            ..Default::default()
        })
        .unwrap();
    let first = first.outcomes[0].result.as_ref().unwrap();
    assert!(!first.repeated);
    let version = w.e.get("default", "rep").unwrap().version;
    let history = w.e.history("default", "rep").unwrap().len();
    // The answer was lost; the worker sends the same outcome again.
    let again =
        w.e.report(Batch {
            outcomes: vec![outcome.clone()],
            ..Default::default()
        })
        .unwrap();
    let again = again.outcomes[0].result.as_ref().unwrap();
    assert!(again.repeated, "{again:?}");
    assert_eq!(again.task.status, TaskStatus::Completed);
    // Through the single call too.
    assert!(
        w.e.complete(&t.id, 1, json!({"answer": 5}), usage)
            .unwrap()
            .repeated
    );
    let i = w.e.get("default", "rep").unwrap();
    assert_eq!(
        (i.version, w.e.history("default", "rep").unwrap().len()),
        (version, history)
    );
    assert_eq!(i.context["result"], json!(5));
    // Another output, or other usage, for the same attempt is not a repeat: stale.
    for other in [
        done(&t.id, 1, json!({"answer": 6})),
        done(&t.id, 1, json!({"answer": 5})),
    ] {
        let r =
            w.e.report(Batch {
                outcomes: vec![other],
                ..Default::default()
            })
            .unwrap();
        assert!(
            matches!(&r.outcomes[0].result, Err(Error::Conflict(m)) if m.contains("reported already, with another result")),
            "{:?}",
            r.outcomes[0].result
        );
    }
    verified(&w.e, "rep");
}

#[test]
fn a_repeated_failure_is_applied_once_and_says_it_is_retrying() {
    let w = world();
    start(&w.e, "rf");
    let t =
        w.e.claim(&q(), "w", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    let fail = Outcome {
        task: t.id.clone(),
        attempt: 1,
        report: Report::Failed {
            error: "rate limited".into(),
            retryable: true,
            details: json!(null),
        },
        usage: Usage::default(),
    };
    for repeated in [false, true] {
        let r =
            w.e.report(Batch {
                outcomes: vec![fail.clone()],
                ..Default::default()
            })
            .unwrap();
        let o = r.outcomes[0].result.as_ref().unwrap();
        assert_eq!((o.repeated, o.retrying), (repeated, true));
    }
    assert_eq!(
        w.e.store().attempts(&t.id).unwrap().len(),
        1,
        "one attempt ended once"
    );
    verified(&w.e, "rf");
}

#[test]
fn a_batch_too_large_or_claiming_a_reserved_queue_is_refused_whole() {
    let w = world();
    start(&w.e, "big");
    let t =
        w.e.claim(&q(), "w", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    let mut outcomes = vec![done(&t.id, 1, json!({"answer": 1}))];
    outcomes.extend((0..MAX_OUTCOMES).map(|i| done(&format!("t{i}"), 1, json!({}))));
    let r = w.e.report(Batch {
        outcomes,
        ..Default::default()
    });
    assert!(
        matches!(&r, Err(Error::Invalid(m)) if m.contains("at most 1000 outcomes")),
        "{r:?}"
    );
    let r = w.e.report(Batch {
        outcomes: vec![done(&t.id, 1, json!({"answer": 1}))],
        claim: next("cairn.http", "w", 1),
        ..Default::default()
    });
    assert!(
        matches!(&r, Err(Error::Invalid(m)) if m.contains("built-in executor")),
        "{r:?}"
    );
    let r = w.e.report(Batch {
        outcomes: vec![done(&t.id, 1, json!({"answer": 1}))],
        claim: next("q", "w", 0),
        ..Default::default()
    });
    assert!(matches!(&r, Err(Error::Invalid(_))), "{r:?}");
    // Nothing was applied.
    assert_eq!(w.e.get("default", "big").unwrap().version, 1);
}

#[test]
fn a_batch_sees_only_the_tasks_of_its_namespaces() {
    let w = world();
    start(&w.e, "ns");
    let t =
        w.e.claim(&q(), "w", 1, StdDuration::from_secs(30))
            .unwrap()
            .remove(0);
    let r =
        w.e.report(Batch {
            outcomes: vec![done(&t.id, 1, json!({"answer": 1}))],
            namespaces: Some(vec!["other".into()]),
            ..Default::default()
        })
        .unwrap();
    assert!(matches!(&r.outcomes[0].result, Err(Error::NotFound(_))));
    assert_eq!(w.e.get("default", "ns").unwrap().version, 1);
}
