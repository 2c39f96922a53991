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
