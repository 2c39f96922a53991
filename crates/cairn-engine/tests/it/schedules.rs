//! Cron schedules on a real store (SQLite or PostgreSQL) and a manual clock: the first tick after now, a
//! due tick starting one instance, many missed ticks starting one (or none with `skip`),
//! time zones, and the checks made when a schedule is added.

use cairn_api::Schedule;
use cairn_engine::{Engine, Error};
use cairn_store_any::AnyStore;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

const JOB: &str = r#"
machine: job
initial: waiting
states:
  waiting: { on: { done: finished } }
  finished: { type: final }
"#;

use crate::common;

fn every_five(name: &str) -> Schedule {
    Schedule {
        name: name.into(),
        cron: "*/5 * * * *".into(),
        timezone: None,
        machine: "job".into(),
        input: Some(json!({"from": "cron"})),
        catch_up: None,
        next_at: None,
        last_at: None,
        created_at: None,
    }
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn jobs(e: &Engine<AnyStore>) -> Vec<String> {
    let mut ids: Vec<String> = e
        .list(&cairn_store::InstanceFilter {
            namespace: "default".into(),
            machine: Some("job".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_due_tick_starts_one_instance_and_missed_ticks_start_one() {
    let w = common::world(&[JOB]);
    let (e, clock) = (&w.e, &w.clock);
    let s = e.add_schedule("default", every_five("nightly")).unwrap();
    assert_eq!(s.next_at, Some(at("2023-11-14T22:15:00Z")));
    assert_eq!(e.fire_due_schedules().unwrap(), 0);

    clock.advance(Duration::seconds(101)); // 22:15:01
    assert_eq!(e.fire_due_schedules().unwrap(), 1);
    assert_eq!(e.fire_due_schedules().unwrap(), 0, "a tick runs once");
    assert_eq!(jobs(e), ["nightly-20231114T221500Z"]);
    let i = e.get("default", "nightly-20231114T221500Z").unwrap();
    assert_eq!(i.context["from"], "cron");
    assert_eq!(
        e.history("default", &i.id).unwrap()[0].actor,
        "schedule:nightly"
    );

    // The server was "down" for an hour: twelve ticks missed, one runs (the latest).
    clock.advance(Duration::hours(1)); // 23:15:01
    assert_eq!(e.fire_due_schedules().unwrap(), 1);
    assert_eq!(e.fire_due_schedules().unwrap(), 0);
    assert_eq!(
        jobs(e),
        ["nightly-20231114T221500Z", "nightly-20231114T231500Z"]
    );
    let listed = &e.schedules("default").unwrap()[0];
    assert_eq!(listed.next_at, Some(at("2023-11-14T23:20:00Z")));
    assert_eq!(listed.last_at, Some(at("2023-11-14T23:15:00Z")));

    // With `skip`, missed ticks do not run; the next one does.
    let mut skip = every_five("skipper");
    skip.catch_up = Some("skip".into());
    e.add_schedule("default", skip).unwrap();
    clock.advance(Duration::hours(2));
    e.fire_due_schedules().unwrap();
    assert!(jobs(e).iter().all(|j| !j.starts_with("skipper")));
    clock.advance(Duration::minutes(5));
    e.fire_due_schedules().unwrap();
    assert_eq!(
        jobs(e).iter().filter(|j| j.starts_with("skipper")).count(),
        1
    );

    e.remove_schedule("default", "nightly").unwrap();
    assert!(matches!(
        e.remove_schedule("default", "nightly"),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn time_zones_place_the_ticks() {
    let w = common::world(&[JOB]);
    let e = &w.e;
    let mut s = every_five("paris");
    s.cron = "0 9 * * *".into();
    s.timezone = Some("Europe/Paris".into());
    // 09:00 in Paris in November is 08:00 UTC.
    let s = e.add_schedule("default", s).unwrap();
    assert_eq!(s.next_at, Some(at("2023-11-15T08:00:00Z")));
    let mut s = every_five("ny");
    s.cron = "30 18 * * 1-5".into();
    s.timezone = Some("America/New_York".into());
    // Tuesday 14 November 22:13 UTC is 17:13 in New York: today at 18:30 there.
    let s = e.add_schedule("default", s).unwrap();
    assert_eq!(s.next_at, Some(at("2023-11-14T23:30:00Z")));
}

#[test]
fn schedules_are_checked_when_added() {
    let w = common::world(&[JOB]);
    let e = &w.e;
    type Change = fn(&mut Schedule);
    let cases: [(Change, &str); 5] = [
        (|s| s.cron = "61 * * * *".into(), "`cron` `61 * * * *`"),
        (
            |s| s.timezone = Some("Mars/Olympus".into()),
            "not an IANA time zone",
        ),
        (|s| s.catch_up = Some("all".into()), "expected once or skip"),
        (|s| s.input = Some(json!([1])), "must be a JSON object"),
        (|s| s.name = "a b".into(), "a name is"),
    ];
    for (change, want) in cases {
        let mut s = every_five("x");
        change(&mut s);
        let err = e.add_schedule("default", s).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    e.add_schedule("default", every_five("x")).unwrap();
    assert!(matches!(
        e.add_schedule("default", every_five("x")),
        Err(Error::Conflict(_))
    ));
}
