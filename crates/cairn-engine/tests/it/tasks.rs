//! Tasks on a real store (SQLite or PostgreSQL) and a manual clock: enqueue with the state, exclusive
//! claims, completion reaching the instance, stale and duplicate completions refused,
//! retries with backoff, expired leases reclaimed, cancellation with the state, a machine
//! that cannot take `task.done` failing visibly, attempts in history, in-process handlers.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use cairn_core::Status;
use cairn_engine::{Config, Engine, Error, ManualClock, SendRequest, StartRequest, Usage};
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
