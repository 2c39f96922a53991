//! The instance lifecycle on a real store (SQLite or PostgreSQL) and a manual clock (no test sleeps):
//! timers, approvals, pause / resume / cancel, checkpoints and fork, deletion, retention,
//! compaction and stats. Every scenario ends with `verify`.

use std::sync::Arc;

use cairn_core::Status;
use cairn_engine::{
    Config, DecideRequest, Engine, Error, ForkFrom, ManualClock, Retention, SendRequest,
    StartRequest,
};
use cairn_store::{ApprovalStatus, Reader};
use cairn_store_any::AnyStore;
use cairn_store_any::testing::Backend;
use chrono::Duration;
use serde_json::json;

const LIFE: &str = r#"
machine: life
context: { entries: 0 }
initial: drafting
states:
  drafting:
    entry: { assign: { entries: "context.entries + 1" } }
    after: { 10m: timed_out }
    on:
      submit: review
      note: { assign: { notes: "has(context.notes) ? context.notes + [event.payload.text] : [event.payload.text]" } }
  review:
    approval: { prompt: "Ship it?", approvers: [ann, bob], quorum: 2 }
    after: { 1h: drafting }
    on:
      approve: { target: shipped, assign: { approved_by: "event.actor", approval: "event.payload.approval" } }
      reject: { target: drafting, assign: { feedback: "event.reason" } }
  timed_out: { type: final, status: failed }
  shipped: { type: final }
"#;

struct World {
    engine: Engine<AnyStore>,
    clock: Arc<ManualClock>,
    dir: Backend,
}

fn world() -> World {
    let dir = Backend::new();
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    ));
    let engine = open(&dir, &clock);
    engine
        .apply("default", LIFE, None, Some("life.yaml"))
        .unwrap();
    World { engine, clock, dir }
}

fn open(dir: &Backend, clock: &Arc<ManualClock>) -> Engine<AnyStore> {
    let store = dir.open();
    Engine::new(store, clock.clone(), Config::default())
}

fn start(e: &Engine<AnyStore>, id: &str) {
    e.start(
        "default",
        StartRequest {
            machine: "life".into(),
            id: Some(id.into()),
            ..Default::default()
        },
    )
    .unwrap();
}

fn send(e: &Engine<AnyStore>, id: &str, event: &str) -> Result<cairn_engine::Sent, Error> {
    e.send(
        "default",
        id,
        SendRequest {
            event: event.into(),
            actor: "test".into(),
            ..Default::default()
        },
    )
}

fn verified(e: &Engine<AnyStore>, id: &str) {
    let v = e.verify("default", id).unwrap();
    assert!(v.ok, "{id}: {:?}", v.problem);
}

#[test]
fn timers_fire_once_when_due_also_after_a_restart_and_not_after_their_state_is_left() {
    let w = world();
    start(&w.engine, "t");
    start(&w.engine, "left");
    assert_eq!(w.engine.store().timers("default", "t").unwrap().len(), 1);
    w.clock.advance(Duration::minutes(9));
    assert_eq!(w.engine.fire_due_timers().unwrap(), 0);
    // Leaving the state cancels its timer.
    send(&w.engine, "left", "submit").unwrap();
    assert!(
        w.engine
            .store()
            .timers("default", "left")
            .unwrap()
            .iter()
            .all(|t| t.state == "review")
    );
    // A restart keeps pending timers.
    let World { engine, clock, dir } = w;
    drop(engine);
    let engine = open(&dir, &clock);
    clock.advance(Duration::minutes(2));
    assert_eq!(engine.fire_due_timers().unwrap(), 1);
    assert_eq!(engine.fire_due_timers().unwrap(), 0, "a timer fires once");
    let t = engine.get("default", "t").unwrap();
    assert_eq!(
        (t.status, t.configuration.clone()),
        (Status::Failed, vec!["timed_out".to_string()])
    );
    assert_eq!(
        engine.get("default", "left").unwrap().configuration,
        ["review"]
    );
    let h = engine.history("default", "t").unwrap();
    assert_eq!(
        (h[1].event.as_str(), h[1].actor.as_str()),
        ("timer.drafting.10m", "timer")
    );
    verified(&engine, "t");
    verified(&engine, "left");
}

#[test]
fn approvals_need_their_quorum_their_approvers_and_a_pending_request() {
    let w = world();
    let e = &w.engine;
    start(e, "a");
    assert!(
        matches!(e.decide("default", "a", DecideRequest { approval: None, approve: true, actor: "ann".into(), reason: "".into(), payload: json!(null) }), Err(Error::Conflict(m)) if m.contains("no pending approval"))
    );
    send(e, "a", "submit").unwrap();
    let pending = e
        .approvals("default", Some(ApprovalStatus::Pending), None)
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].state.as_str(), pending[0].prompt.as_deref()),
        ("review", Some("Ship it?"))
    );
    assert!(matches!(
        e.decide(
            "default",
            "a",
            DecideRequest {
                approval: None,
                approve: true,
                actor: "eve".into(),
                reason: "".into(),
                payload: json!(null)
            }
        ),
        Err(Error::NotAllowed(_))
    ));
    assert!(matches!(
        e.decide(
            "default",
            "a",
            DecideRequest {
                approval: None,
                approve: false,
                actor: "ann".into(),
                reason: " ".into(),
                payload: json!(null)
            }
        ),
        Err(Error::Invalid(_))
    ));
    let first = e
        .decide("default", "a", DecideRequest::approve("ann", "looks good"))
        .unwrap();
    assert_eq!(
        (first.approval.status, first.transition.is_none()),
        (ApprovalStatus::Pending, true),
        "quorum is 2"
    );
    assert!(
        matches!(e.decide("default", "a", DecideRequest { approval: None, approve: true, actor: "ann".into(), reason: "".into(), payload: json!(null) }), Err(Error::Conflict(m)) if m.contains("already decided"))
    );
    let second = e
        .decide(
            "default",
            "a",
            DecideRequest {
                payload: json!({"note": "x"}),
                ..DecideRequest::approve("bob", "ship")
            },
        )
        .unwrap();
    assert_eq!(second.approval.status, ApprovalStatus::Approved);
    assert_eq!(second.approval.decisions.len(), 2);
    let inst = e.get("default", "a").unwrap();
    assert_eq!(
        (
            inst.status,
            inst.context["approved_by"].clone(),
            inst.context["approval"].clone()
        ),
        (Status::Completed, json!("bob"), json!("review"))
    );
    // Deciding again: nothing is pending; the decided approval cannot be decided either.
    assert!(
        e.decide(
            "default",
            "a",
            DecideRequest {
                approval: Some(second.approval.id.to_string()),
                ..DecideRequest::reject("ann", "no")
            }
        )
        .is_err()
    );
    verified(e, "a");
}

#[test]
fn leaving_the_state_cancels_its_approval_which_can_then_no_longer_be_decided() {
    let w = world();
    let e = &w.engine;
    start(e, "s");
    send(e, "s", "submit").unwrap();
    let id = e
        .approvals("default", Some(ApprovalStatus::Pending), Some("s"))
        .unwrap()[0]
        .id
        .clone();
    // The review's 1h timer sends it back to drafting.
    w.clock.advance(Duration::hours(2));
    assert_eq!(e.fire_due_timers().unwrap(), 1);
    let a = &e.approvals("default", None, Some("s")).unwrap()[0];
    assert_eq!(a.status, ApprovalStatus::Cancelled);
    let r = e.decide(
        "default",
        "s",
        DecideRequest {
            approval: Some(id.to_string()),
            approve: true,
            actor: "ann".into(),
            reason: "".into(),
            payload: json!(null),
        },
    );
    assert!(
        matches!(&r, Err(Error::Conflict(m)) if m.contains("is cancelled, not pending")),
        "{r:?}"
    );
    // Rejection with a reason goes back to drafting and records it.
    send(e, "s", "submit").unwrap();
    let d = e
        .decide("default", "s", DecideRequest::reject("bob", "needs tests"))
        .unwrap();
    assert_eq!(d.approval.status, ApprovalStatus::Rejected);
    let inst = e.get("default", "s").unwrap();
    assert_eq!(
        (inst.configuration.clone(), inst.context["feedback"].clone()),
        (vec!["drafting".to_string()], json!("needs tests"))
    );
    verified(e, "s");
}

#[test]
fn a_paused_instance_queues_events_in_order_and_applies_them_and_its_timers_on_resume() {
    let w = world();
    let e = &w.engine;
    start(e, "p");
    e.pause("default", "p", "ops", "maintenance").unwrap();
    assert!(matches!(
        e.pause("default", "p", "ops", ""),
        Err(Error::Conflict(_))
    ));
    for text in ["one", "two", "three"] {
        let s = e
            .send(
                "default",
                "p",
                SendRequest {
                    event: "note".into(),
                    payload: json!({"text": text}),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(s.queued && s.transition.is_none());
    }
    // A queued key repeats as queued; the instance has not moved.
    let keyed = SendRequest {
        event: "note".into(),
        payload: json!({"text": "four"}),
        key: Some("k4".into()),
        ..Default::default()
    };
    assert!(e.send("default", "p", keyed.clone()).unwrap().queued);
    assert!(e.send("default", "p", keyed.clone()).unwrap().queued);
    assert_eq!(e.store().inbox("default", "p").unwrap().len(), 4);
    let paused = e.get("default", "p").unwrap();
    assert_eq!((paused.status, paused.version), (Status::Paused, 1));
    // Due timers wait while paused.
    w.clock.advance(Duration::minutes(11));
    assert_eq!(e.fire_due_timers().unwrap(), 0);
    let resumed = e.resume("default", "p", "ops", "").unwrap();
    assert_eq!(
        resumed.context["notes"],
        json!(["one", "two", "three", "four"])
    );
    assert_eq!(
        (resumed.status, resumed.configuration.clone()),
        (Status::Failed, vec!["timed_out".to_string()]),
        "the due timer fired after the queue"
    );
    assert_eq!(resumed.version, 6);
    assert!(e.store().inbox("default", "p").unwrap().is_empty());
    // The key applied on resume is known now.
    assert!(e.send("default", "p", keyed).unwrap().replayed);
    verified(e, "p");
}

#[test]
fn cancel_ends_the_instance_with_its_timers_and_approvals() {
    let w = world();
    let e = &w.engine;
    start(e, "c");
    send(e, "c", "submit").unwrap();
    let c = e.cancel("default", "c", "ops", "customer left").unwrap();
    assert_eq!(c.status, Status::Cancelled);
    assert!(e.store().timers("default", "c").unwrap().is_empty());
    assert_eq!(
        e.approvals("default", None, Some("c")).unwrap()[0].status,
        ApprovalStatus::Cancelled
    );
    assert!(matches!(
        send(e, "c", "submit"),
        Err(Error::Finished {
            status: Status::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        e.cancel("default", "c", "", ""),
        Err(Error::Finished { .. })
    ));
    assert!(matches!(
        e.resume("default", "c", "", ""),
        Err(Error::Finished { .. })
    ));
    let h = e.history("default", "c").unwrap();
    assert_eq!(h.last().unwrap().reason, "customer left");
    verified(e, "c");
}

#[test]
fn forks_start_from_a_checkpoint_or_version_without_rerunning_entry_actions() {
    let w = world();
    let e = &w.engine;
    start(e, "src");
    e.send(
        "default",
        "src",
        SendRequest {
            event: "note".into(),
            payload: json!({"text": "a"}),
            ..Default::default()
        },
    )
    .unwrap();
    e.checkpoint("default", "src", "noted").unwrap();
    assert!(matches!(
        e.checkpoint("default", "src", "noted"),
        Err(Error::Conflict(_))
    ));
    send(e, "src", "submit").unwrap();
    w.clock.advance(Duration::minutes(5));

    let f = e
        .fork(
            "default",
            "src",
            ForkFrom::Checkpoint("noted".into()),
            Some("f1".into()),
            Some(json!({"notes": ["patched"], "extra": 1})),
        )
        .unwrap();
    assert_eq!(f.configuration, ["drafting"]);
    assert_eq!(f.context["entries"], 1, "entry actions did not run again");
    assert_eq!(f.context["notes"], json!(["patched"]));
    // The forked state's timer is set afresh, from the fork's time.
    let timers = e.store().timers("default", "f1").unwrap();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].due_at, f.created_at + Duration::minutes(10));
    // From a version in review: its approval is requested afresh.
    let g = e
        .fork(
            "default",
            "src",
            ForkFrom::Version(3),
            Some("f2".into()),
            None,
        )
        .unwrap();
    assert_eq!(g.configuration, ["review"]);
    assert_eq!(
        e.approvals("default", Some(ApprovalStatus::Pending), Some("f2"))
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        e.fork("default", "src", ForkFrom::Version(99), None, None),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        e.fork(
            "default",
            "src",
            ForkFrom::Checkpoint("nope".into()),
            None,
            None
        ),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        e.fork(
            "default",
            "src",
            ForkFrom::Version(1),
            Some("f1".into()),
            None
        ),
        Err(Error::Exists(_))
    ));
    verified(e, "f1");
    verified(e, "f2");

    // Repair: a failed instance is retried from its last good version.
    start(e, "broken");
    w.clock.advance(Duration::minutes(11));
    e.fire_due_timers().unwrap();
    assert_eq!(e.get("default", "broken").unwrap().status, Status::Failed);
    assert!(matches!(
        e.fork("default", "broken", ForkFrom::Version(2), None, None),
        Err(Error::Conflict(_))
    ));
    let retry = e
        .fork(
            "default",
            "broken",
            ForkFrom::Version(1),
            Some("retry".into()),
            None,
        )
        .unwrap();
    assert_eq!(retry.status, Status::Running);
    send(e, "retry", "submit").unwrap();
    verified(e, "retry");
}

#[test]
fn delete_retention_and_compaction_keep_verify_passing() {
    let w = world();
    let e = &w.engine;
    start(e, "old");
    e.cancel("default", "old", "", "").unwrap();
    w.clock.advance(Duration::days(10));
    start(e, "long");
    for i in 0..30 {
        e.send(
            "default",
            "long",
            SendRequest {
                event: "note".into(),
                payload: json!({"text": i.to_string()}),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let (removed, folded) = e
        .enforce_retention(
            "default",
            &Retention {
                finished_after: Some(Duration::days(7)),
                max_history: Some(10),
            },
        )
        .unwrap();
    assert_eq!((removed, folded), (1, 21));
    assert!(matches!(e.get("default", "old"), Err(Error::NotFound(_))));
    let h = e.history("default", "long").unwrap();
    assert_eq!(h.len(), 10);
    assert_eq!(h[0].kind, cairn_store::HistoryKind::Base);
    assert!(
        e.checkpoints("default", "long")
            .unwrap()
            .iter()
            .any(|k| k.name == "compacted@22")
    );
    verified(e, "long");
    // It keeps running normally after compaction.
    send(e, "long", "submit").unwrap();
    verified(e, "long");
    e.delete("default", "long").unwrap();
    assert!(matches!(
        e.delete("default", "long"),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn retention_deletes_many_finished_instances_in_bounded_units_and_keeps_the_young() {
    let w = world();
    let e = &w.engine;
    let n = 3 * cairn_engine::RETENTION_STEP + 5;
    for i in 0..n {
        let id = format!("old-{i}");
        start(e, &id);
        e.cancel("default", &id, "", "").unwrap();
    }
    start(e, "running");
    w.clock.advance(Duration::days(10));
    start(e, "young");
    e.cancel("default", "young", "", "").unwrap();
    let policy = Retention {
        finished_after: Some(Duration::days(7)),
        max_history: None,
    };
    let (removed, _) = e.enforce_retention("default", &policy).unwrap();
    assert_eq!(removed, n as u64);
    for i in [0, n / 2, n - 1] {
        assert!(matches!(
            e.get("default", &format!("old-{i}")),
            Err(Error::NotFound(_))
        ));
    }
    assert_eq!(e.get("default", "running").unwrap().status, Status::Running);
    assert_eq!(e.get("default", "young").unwrap().status, Status::Cancelled);
    // Every deletion is in the log, and nothing is left to remove.
    e.store().settle_log();
    let deleted = e
        .store()
        .log(0, 100_000)
        .unwrap()
        .iter()
        .filter(|l| l.entry.kind == "instance_deleted")
        .count();
    assert_eq!(deleted, n);
    assert_eq!(e.enforce_retention("default", &policy).unwrap().0, 0);
    verified(e, "running");
}

#[test]
fn stats_count_instances_transitions_and_time_in_states() {
    let w = world();
    let e = &w.engine;
    start(e, "x");
    w.clock.advance(Duration::seconds(30));
    send(e, "x", "submit").unwrap();
    w.clock.advance(Duration::seconds(90));
    e.decide(
        "default",
        "x",
        DecideRequest {
            approval: None,
            approve: false,
            actor: "ann".into(),
            reason: "no".into(),
            payload: json!(null),
        },
    )
    .unwrap();
    start(e, "y");
    let s = e.stats("default").unwrap();
    assert_eq!(s.instances["life"]["running"], 2);
    assert_eq!(s.transitions, 4);
    assert_eq!(s.mean_time_in_state_ms["life"]["drafting"], 30_000.0);
    assert_eq!(s.mean_time_in_state_ms["life"]["review"], 90_000.0);
}

const PAR: &str = r#"
machine: par
context: { n: 0 }
initial: p
states:
  p:
    type: parallel
    on: { stop: done }
    states:
      left:
        initial: l1
        states:
          l1: { on: { lgo: l2, lself: l1, lin: { assign: { n: "context.n + 1" } } } }
          l2: { on: { lgo: l1 } }
      right:
        initial: r1
        states:
          r1: { on: { rgo: r2 } }
          r2: { on: { rgo: r1 } }
  done: { type: final }
"#;

/// The mean time in each state, as `stats` computed it before figures were kept: a replay
/// of every instance's history (a leaf is left when it is in a record's `from` and not
/// in its `to`, and was entered when it first appeared in a `to` since).
fn replayed_time_in_states(
    e: &Engine<AnyStore>,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>> {
    use std::collections::{BTreeMap, HashMap};
    let mut time: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for (_, id) in e.instance_ids(Some("default")).unwrap() {
        let inst = e.get("default", &id).unwrap();
        let mut entered: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
        for h in e.history("default", &id).unwrap() {
            for leaf in &h.from_configuration {
                if !h.to_configuration.contains(leaf)
                    && let Some(t) = entered.remove(leaf)
                {
                    let v = time
                        .entry((inst.machine.clone(), leaf.clone()))
                        .or_default();
                    v.0 += (h.created_at - t).num_milliseconds();
                    v.1 += 1;
                }
            }
            for leaf in &h.to_configuration {
                entered.entry(leaf.clone()).or_insert(h.created_at);
            }
        }
    }
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for ((machine, state), (ms, n)) in time {
        out.entry(machine)
            .or_default()
            .insert(state, (ms as f64 / n as f64 * 10.0).round() / 10.0);
    }
    out
}

/// `stats` reads figures the units keep; on a workload of parallel regions, self and
/// internal transitions, pauses, forks and refusals they equal a replay of all history.
#[test]
fn stats_kept_by_units_equal_a_replay_of_history() {
    let w = world();
    let e = &w.engine;
    e.apply("default", PAR, None, None).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let events = ["lgo", "lself", "lin", "rgo", "stop", "nope"];
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = format!("p{i}");
        e.start(
            "default",
            StartRequest {
                machine: "par".into(),
                id: Some(id.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        ids.push(id);
    }
    start(e, "l1");
    for step in 0..300 {
        w.clock
            .advance(Duration::milliseconds(1 + next(5_000) as i64));
        let id = ids[next(ids.len() as u64) as usize].clone();
        match next(20) {
            0 => {
                let _ = e.pause("default", &id, "t", "");
            }
            1 => {
                let _ = e.resume("default", &id, "t", "");
            }
            2 if step % 3 == 0 => {
                let fork = format!("f{step}");
                let from = cairn_engine::ForkFrom::Version(1);
                if e.fork("default", &id, from, Some(fork.clone()), None)
                    .is_ok()
                {
                    ids.push(fork);
                }
            }
            _ => {
                let _ = send(e, &id, events[next(events.len() as u64) as usize]);
            }
        }
    }
    w.clock.advance(Duration::seconds(45));
    send(e, "l1", "submit").unwrap();
    let s = e.stats("default").unwrap();
    let replayed = replayed_time_in_states(e);
    assert!(replayed["par"].len() >= 4, "{replayed:?}");
    assert_eq!(s.mean_time_in_state_ms, replayed);
    let histories: u64 = e
        .instance_ids(Some("default"))
        .unwrap()
        .iter()
        .map(|(_, id)| {
            e.history("default", id)
                .unwrap()
                .iter()
                .filter(|h| {
                    matches!(
                        h.kind,
                        cairn_store::HistoryKind::Start | cairn_store::HistoryKind::Event
                    )
                })
                .count() as u64
        })
        .sum();
    assert_eq!(s.transitions, histories);
    let running = e
        .instance_ids(Some("default"))
        .unwrap()
        .iter()
        .filter(|(_, id)| e.get("default", id).unwrap().machine == "par")
        .count() as u64;
    assert_eq!(s.instances["par"].values().sum::<u64>(), running);
}
