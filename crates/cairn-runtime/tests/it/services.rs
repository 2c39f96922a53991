//! The timer service and in-process workers, each started, observed doing its work, and
//! stopped explicitly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_core::Status;
use cairn_engine::{Config, Engine, ManualClock, StartRequest};
use cairn_runtime::{
    Handler, Running, TaskError, TimerOptions, TimerService, WorkerOptions, WorkerService,
};
use cairn_store::Reader;
use cairn_store_any::AnyStore;
use cairn_store_any::testing::Backend;
use serde_json::json;

const MACHINES: &str = r#"
machine: job
context: {}
initial: working
states:
  working:
    after: { 10m: timed_out }
    task: { queue: q, action: work, input: "{'n': context.n}", timeout: 1m }
    on:
      task.done: { target: done, assign: { result: "event.payload.answer" } }
      task.failed: { target: broken, assign: { error: "event.payload.error" } }
  done: { type: final }
  broken: { type: final, status: failed }
  timed_out: { type: final, status: failed }
"#;

struct World {
    engine: Engine<AnyStore>,
    clock: Arc<ManualClock>,
    _dir: Backend,
}

fn world() -> World {
    let dir = Backend::new();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    ));
    let engine = Engine::new(dir.open(), clock.clone(), Config::default());
    engine
        .apply("default", MACHINES, None, Some("job.yaml"))
        .unwrap();
    World {
        engine,
        clock,
        _dir: dir,
    }
}

fn start(e: &Engine<AnyStore>, id: &str, n: i64) {
    e.start(
        "default",
        StartRequest {
            machine: "job".into(),
            id: Some(id.into()),
            input: json!({"n": n}),
            ..Default::default()
        },
    )
    .unwrap();
}

/// Waits (bounded) until every named instance has finished.
fn finished(e: &Engine<AnyStore>, ids: &[&str], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids
        .iter()
        .any(|id| e.get("default", id).unwrap().status == Status::Running)
    {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn verified(e: &Engine<AnyStore>, id: &str) {
    let v = e.verify("default", id).unwrap();
    assert!(v.ok, "{id}: {:?}", v.problem);
}

#[test]
fn the_timer_service_fires_due_timers_in_the_background() {
    let w = world();
    start(&w.engine, "bg", 1);
    let service = Running::spawn(TimerService::new(
        w.engine.clone(),
        TimerOptions {
            every: Duration::from_millis(5),
        },
    ))
    .unwrap();
    // Nothing is due yet: the clock, not the wait, makes the timer due.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        w.engine.get("default", "bg").unwrap().status,
        Status::Running
    );
    w.clock.advance(chrono::Duration::minutes(11));
    finished(&w.engine, &["bg"], "the timer service firing a due timer");
    service.stop();
    assert_eq!(
        w.engine.get("default", "bg").unwrap().configuration,
        ["timed_out"]
    );
    verified(&w.engine, "bg");
}

#[test]
fn in_process_handlers_complete_and_fail_tasks_until_stopped() {
    let w = world();
    let handler: Handler = Arc::new(|t| {
        if t.instance == "bad" {
            Err(TaskError {
                message: "nope".into(),
                retryable: false,
            })
        } else {
            Ok(json!({"answer": t.input["n"].as_i64().unwrap() * 10}))
        }
    });
    let options = WorkerOptions {
        poll: Duration::from_millis(5),
        ..WorkerOptions::new("inproc", vec!["q".into()])
    };
    let worker = Running::spawn(WorkerService::new(w.engine.clone(), options, handler)).unwrap();
    start(&w.engine, "good", 1);
    start(&w.engine, "bad", 2);
    finished(&w.engine, &["good", "bad"], "the handlers running");
    assert_eq!(
        w.engine.get("default", "good").unwrap().context["result"],
        10
    );
    let bad = w.engine.get("default", "bad").unwrap();
    assert_eq!(bad.configuration, ["broken"]);
    assert_eq!(bad.context["error"], "nope");
    let task = &w
        .engine
        .tasks("default", Some("q"), None, Some("good"))
        .unwrap()[0];
    let attempts = w.engine.store().attempts(&task.id).unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].worker, "inproc");

    // Stopped, the worker takes nothing more.
    worker.stop();
    start(&w.engine, "later", 3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        w.engine.get("default", "later").unwrap().status,
        Status::Running
    );
    for id in ["good", "bad"] {
        verified(&w.engine, id);
    }
}

/// Handlers run at once, up to `concurrency`, and the worker never holds more claimed
/// tasks than that; a handler that panics fails its attempt, not the worker.
#[test]
fn in_process_handlers_run_concurrently_and_hold_no_more_than_their_concurrency() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let w = world();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let most_leased = Arc::new(AtomicUsize::new(0));
    let (engine, r, m, ml) = (
        w.engine.clone(),
        Arc::clone(&running),
        Arc::clone(&most),
        Arc::clone(&most_leased),
    );
    let handler: Handler = Arc::new(move |t| {
        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        let leased = engine
            .tasks(
                "default",
                Some("q"),
                Some(cairn_store::TaskStatus::Leased),
                None,
            )
            .map(|l| l.len())
            .unwrap_or(0);
        ml.fetch_max(leased, Ordering::SeqCst);
        // Long enough that the others are claimed and started meanwhile.
        std::thread::sleep(Duration::from_millis(100));
        r.fetch_sub(1, Ordering::SeqCst);
        if t.instance == "p0" {
            panic!("a handler's bug");
        }
        Ok(json!({"answer": 1}))
    });
    let options = WorkerOptions {
        poll: Duration::from_millis(5),
        concurrency: 4,
        ..WorkerOptions::new("wide", vec!["q".into()])
    };
    let ids: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        start(&w.engine, id, i as i64);
    }
    let worker = Running::spawn(WorkerService::new(w.engine.clone(), options, handler)).unwrap();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    // p0's attempt panicked: retryable, so it is retried after its backoff; the others
    // complete.
    finished(&w.engine, &refs[1..], "the handlers running");
    worker.stop();
    let (most, most_leased) = (
        most.load(Ordering::SeqCst),
        most_leased.load(Ordering::SeqCst),
    );
    assert!(
        (2..=4).contains(&most),
        "handlers ran {most} at once; expected several and at most 4"
    );
    assert!(most_leased <= 4, "{most_leased} tasks were held at once");
    let p0 = w
        .engine
        .tasks("default", Some("q"), None, Some("p0"))
        .unwrap();
    let attempts = w.engine.store().attempts(&p0[0].id).unwrap();
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("the handler panicked"),
        "{attempts:?}"
    );
    for id in &refs[1..] {
        verified(&w.engine, id);
    }
}

/// Stopping a worker claims nothing more, lets the handlers finish what they hold, and
/// reports their outcomes in one last batch: no task is left leased to a stopped worker.
#[test]
fn a_stopped_worker_reports_what_its_handlers_were_running() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let w = world();
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let handler: Handler = Arc::new(move |_| {
        s.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        Ok(json!({"answer": 1}))
    });
    let options = WorkerOptions {
        poll: Duration::from_millis(5),
        concurrency: 3,
        ..WorkerOptions::new("stopping", vec!["q".into()])
    };
    let ids: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        start(&w.engine, id, i as i64);
    }
    let worker = Running::spawn(WorkerService::new(w.engine.clone(), options, handler)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while started.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the handlers did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    worker.stop();
    let ran = started.load(Ordering::SeqCst);
    let tasks = w.engine.tasks("default", Some("q"), None, None).unwrap();
    let count = |s: cairn_store::TaskStatus| tasks.iter().filter(|t| t.status == s).count();
    assert_eq!(
        (
            count(cairn_store::TaskStatus::Completed),
            count(cairn_store::TaskStatus::Leased),
            count(cairn_store::TaskStatus::Pending)
        ),
        (ran, 0, 6 - ran),
        "every task a handler ran is completed, none is left leased: {tasks:?}"
    );
    for t in tasks
        .iter()
        .filter(|t| t.status == cairn_store::TaskStatus::Completed)
    {
        verified(&w.engine, &t.instance_id);
    }
}
