//! The behaviour suite every storage backend must pass, written against the traits of
//! `cairn-store` only, so a new backend runs it unchanged: `cairn_store_tests::suite!`
//! expands to one `#[test]` per contract, given an expression that opens a fresh store.
//! SQLite runs it in `cairn-store-sqlite`'s tests (with and without group commit),
//! PostgreSQL in `cairn-store-postgres`'s.
#![warn(missing_docs)]

use std::collections::BTreeMap;

use cairn_core::Status;
use cairn_store::{
    ApprovalRecord, ApprovalStatus, CheckpointRecord, Decision, Error, HistoryKind, HistoryRecord,
    IdempotencyRecord, InboxRecord, InstanceFilter, InstanceRecord, LogEntry, MachineRecord,
    NewLogEntry, Reader, Store, TimerRecord,
};
use chrono::{DateTime, Utc};
use serde_json::json;

/// [`Store::write`] with the store's own error, which is what every unit of the suite
/// returns (the method is generic over the error type; here it is fixed).
pub trait Units: Store {
    /// Runs `work` as one unit of work.
    fn unit<T, F>(&self, work: F) -> Result<T, cairn_store::Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn cairn_store::Tx) -> Result<T, cairn_store::Error> + Send + 'static,
    {
        Store::write(self, work)
    }
}

impl<S: Store> Units for S {}

/// Expands to one test per contract; `$open` is an expression giving a fresh store (and
/// whatever must live as long as it, e.g. a temporary directory) as `(store, guard)`.
#[macro_export]
macro_rules! suite {
    ($open:expr) => {
        $crate::suite!(@tests $open;
            failed_units_leave_no_trace, one_failing_unit_does_not_spoil_its_batch,
            duplicates_and_stale_versions_conflict, committed_writes_are_visible_to_readers,
            log_positions_follow_commit_order, pagination_visits_each_instance_once,
            filters_by_machine_status_state_and_label, machines_keep_every_version,
            idempotency_keys_are_unique_per_instance, concurrent_writers_are_serialised,
            timers_reset_fire_once_and_come_due_in_order, approvals_are_stored_and_decided,
            checkpoints_are_unique_by_name, the_inbox_keeps_order_and_empties_once,
            deleting_an_instance_removes_everything_of_it, history_can_be_compacted,
            retention_and_counts, children_are_linked_and_listed_by_parent,
            the_outbox_keeps_order_until_delivered, triggers_are_unique_by_name,
            schedules_come_due_in_order, tokens_keep_their_subject_and_are_revoked_once,
            deleted_machine_versions_stay_taken_and_unreadable_ones_are_found,
            tasks_are_claimed_leased_and_reclaimed_once, claims_skip_deleted_instances,
            log_retention_trims_the_oldest_and_moves_the_horizon,
            vacuum_gives_space_back_and_keeps_every_row, figures_count_what_is_stored,
            an_undone_part_leaves_the_rest_of_its_unit,
            a_write_that_fails_late_still_fails_its_unit);
    };
    (@tests $open:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (store, _guard) = $open;
                $crate::$name(&store);
            }
        )*
    };
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// A new instance record for the suite.
pub fn instance(
    ns: &str,
    id: &str,
    machine: &str,
    status: Status,
    configuration: &[&str],
    labels: &[(&str, &str)],
) -> InstanceRecord {
    InstanceRecord {
        namespace: ns.into(),
        id: id.into(),
        machine: machine.into(),
        machine_version: 1,
        status,
        configuration: configuration.iter().map(|s| s.to_string()).collect(),
        context: json!({"n": 0}),
        version: 1,
        history_seq: 1,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        parent: None,
        last_error: None,
        created_at: t0(),
        updated_at: t0(),
        entered: BTreeMap::new(),
    }
}

/// A history record for the suite.
pub fn history(ns: &str, id: &str, version: u64) -> HistoryRecord {
    HistoryRecord {
        namespace: ns.into(),
        instance_id: id.into(),
        seq: version,
        kind: if version == 1 {
            HistoryKind::Start
        } else {
            HistoryKind::Event
        },
        version,
        event: if version == 1 {
            String::new()
        } else {
            "go".into()
        },
        payload: json!({}),
        actor: "test".into(),
        reason: String::new(),
        // Every other record made with a token, on someone's behalf.
        token_id: version.is_multiple_of(2).then(|| "tok1".into()),
        on_behalf_of: version.is_multiple_of(2).then(|| "bob".into()),
        // Every other event addressed to the state that owned its work.
        addressed_to: version.is_multiple_of(2).then(|| "a.b".into()),
        from_configuration: vec!["a".into()],
        to_configuration: vec!["b".into()],
        context: json!({"n": version}),
        status: Status::Running,
        idempotency_key: None,
        microsteps: json!([]),
        effects: json!([]),
        time_in_states_ms: Some(5),
        created_at: t0(),
    }
}

fn log_entry(id: &str, version: u64) -> NewLogEntry {
    NewLogEntry {
        namespace: "default".into(),
        instance_id: id.into(),
        kind: "transition".into(),
        version,
        data: json!({}),
        created_at: t0(),
    }
}

fn filter(ns: &str) -> InstanceFilter {
    InstanceFilter {
        namespace: ns.into(),
        limit: 100,
        ..Default::default()
    }
}

/// A unit that writes and then fails leaves nothing behind.
pub fn failed_units_leave_no_trace<S: Store>(s: &S) {
    let r: Result<(), Error> = s.unit(|tx| {
        tx.insert_instance(&instance(
            "default",
            "x",
            "m",
            Status::Running,
            &["a"],
            &[("k", "v")],
        ))?;
        tx.append_history(&history("default", "x", 1))?;
        tx.append_log(&log_entry("x", 1))?;
        Err(Error::Refused("no".into()))
    });
    assert_eq!(r, Err(Error::Refused("no".into())));
    assert_eq!(s.instance("default", "x").unwrap(), None);
    assert!(s.history("default", "x", 0, 10).unwrap().is_empty());
    assert!(s.log(0, 10).unwrap().is_empty());
    let page = s
        .instances(&InstanceFilter {
            labels: vec![("k".into(), "v".into())],
            ..filter("default")
        })
        .unwrap();
    assert!(page.items.is_empty());
}

/// A part of a unit is undone alone: its rows, log entries and figures go, what the unit
/// wrote before and after it stays, and a part that failed on a duplicate key (which
/// aborts a PostgreSQL transaction) leaves the unit able to go on.
pub fn an_undone_part_leaves_the_rest_of_its_unit<S: Store>(s: &S) {
    let row = |id: &str| instance("default", id, "m", Status::Running, &["a"], &[]);
    let r: Result<(), Error> = s.unit(move |tx| {
        tx.insert_instance(&row("a"))?;
        tx.append_history(&history("default", "a", 1))?;
        tx.begin_part()?;
        tx.insert_instance(&row("b"))?;
        tx.append_history(&history("default", "b", 1))?;
        tx.append_log(&log_entry("b", 1))?;
        tx.undo_part()?;
        tx.begin_part()?;
        let dup = tx.insert_instance(&row("a"));
        assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
        tx.undo_part()?;
        // A part of writes alone (a backend may hold them unsent), undone.
        tx.begin_part()?;
        tx.append_history(&history("default", "a", 2))?;
        tx.append_log(&log_entry("a", 2))?;
        tx.add_figure(&cairn_store::Figure {
            namespace: "default".into(),
            kind: "transitions".into(),
            name: String::new(),
            detail: String::new(),
            value: 5,
        })?;
        tx.undo_part()?;
        tx.begin_part()?;
        tx.insert_instance(&row("c"))?;
        tx.append_log(&log_entry("c", 1))?;
        tx.keep_part()?;
        tx.insert_instance(&row("d"))?;
        Ok(())
    });
    r.unwrap();
    let ids = |id: &str| s.instance("default", id).unwrap().map(|i| i.id);
    assert_eq!(
        (ids("a"), ids("b"), ids("c"), ids("d")),
        (Some("a".into()), None, Some("c".into()), Some("d".into()))
    );
    assert!(s.history("default", "b", 0, 10).unwrap().is_empty());
    assert_eq!(s.history("default", "a", 0, 10).unwrap().len(), 1);
    let log: Vec<String> = log_settled(s, 0, 10, 1)
        .into_iter()
        .map(|e| e.entry.instance_id)
        .collect();
    assert_eq!(log, vec!["c".to_string()]);
    assert_eq!(figure(s, "default", "instances", "m", "running"), 3);
    assert_eq!(figure(s, "default", "transitions", "", ""), 1);
}

/// A backend may send some writes with the unit's next statement (PostgreSQL pipelines
/// them) and so learn of their failure late: a stale update of an instance, or of a task
/// that does not exist, fails its unit all the same, whether it says so at once or with a
/// later statement, and even when a part was kept and another begun in between (undoing
/// that later part must not save the unit). Nothing of the unit is kept.
pub fn a_write_that_fails_late_still_fails_its_unit<S: Store>(s: &S) {
    let row = |id: &str| instance("default", id, "m", Status::Running, &["a"], &[]);
    s.unit(move |tx| {
        tx.insert_instance(&row("old"))?;
        tx.append_history(&history("default", "old", 1))
    })
    .unwrap();
    // A stale version, learnt at the call or at the commit.
    let r: Result<(), Error> = s.unit(move |tx| {
        tx.append_history(&history("default", "old", 2))?;
        let mut stale = row("old");
        stale.version = 3;
        tx.update_instance(&stale, 2)?;
        tx.insert_instance(&row("new"))?;
        Ok(())
    });
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    // A task that does not exist, in a kept part; then another part, undone.
    let r: Result<(), Error> = s.unit(move |tx| {
        tx.insert_instance(&row("p"))?;
        tx.begin_part()?;
        if let Err(e) = tx.update_task(&task("ghost", "p", "q")) {
            tx.undo_part()?;
            return Err(e);
        }
        tx.keep_part()?;
        tx.begin_part()?;
        let next = tx.insert_instance(&row("q"));
        assert!(
            next.is_err(),
            "the kept part's failed write surfaces: {next:?}"
        );
        tx.undo_part()?;
        Ok(())
    });
    assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");
    let ids = |id: &str| s.instance("default", id).unwrap().map(|i| i.version);
    assert_eq!(
        (ids("old"), ids("new"), ids("p"), ids("q")),
        (Some(1), None, None, None)
    );
    assert_eq!(s.history("default", "old", 0, 10).unwrap().len(), 1);
}

/// Units committed together are independent: one failing does not undo the others.
pub fn one_failing_unit_does_not_spoil_its_batch<S: Store>(s: &S) {
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.unit(move |tx| {
                    tx.insert_instance(&instance(
                        "default",
                        &format!("i{i}"),
                        "m",
                        Status::Running,
                        &["a"],
                        &[],
                    ))?;
                    if i % 4 == 0 {
                        return Err(Error::Refused(format!("unit {i} refuses")));
                    }
                    Ok(i)
                })
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.join().unwrap();
        let stored = s.instance("default", &format!("i{i}")).unwrap();
        if i % 4 == 0 {
            assert_eq!(r, Err(Error::Refused(format!("unit {i} refuses"))));
            assert!(stored.is_none(), "unit {i} left a row");
        } else {
            assert_eq!(r, Ok(i));
            assert!(stored.is_some(), "unit {i} lost its row");
        }
    }
}

/// A duplicate instance or a stale version conflicts, and the unit changes nothing.
pub fn duplicates_and_stale_versions_conflict<S: Store>(s: &S) {
    let i = instance("default", "d", "m", Status::Running, &["a"], &[]);
    let i2 = i.clone();
    s.unit(move |tx| tx.insert_instance(&i2)).unwrap();
    let i3 = i.clone();
    assert!(matches!(
        s.unit(move |tx| tx.insert_instance(&i3)),
        Err(Error::Conflict(_))
    ));
    // The same id in another namespace is another instance.
    let other = instance("other", "d", "m", Status::Running, &["a"], &[]);
    s.unit(move |tx| tx.insert_instance(&other)).unwrap();

    let mut next = i.clone();
    next.version = 2;
    let n2 = next.clone();
    s.unit(move |tx| tx.update_instance(&n2, 1)).unwrap();
    let n3 = next.clone();
    assert!(matches!(
        s.unit(move |tx| tx.update_instance(&n3, 1)),
        Err(Error::Conflict(_))
    ));
    assert_eq!(s.instance("default", "d").unwrap().unwrap().version, 2);

    s.unit(|tx| tx.append_history(&history("default", "d", 1)))
        .unwrap();
    assert!(matches!(
        s.unit(|tx| tx.append_history(&history("default", "d", 1))),
        Err(Error::Conflict(_))
    ));
    // Another record for version 1 under a new seq is refused for a transition...
    let again = HistoryRecord {
        seq: 2,
        kind: HistoryKind::Event,
        ..history("default", "d", 1)
    };
    assert!(matches!(
        s.unit(move |tx| tx.append_history(&again)),
        Err(Error::Conflict(_))
    ));
    // ...and fine for a lifecycle record, which does not advance the version.
    let pause = HistoryRecord {
        seq: 2,
        kind: HistoryKind::Pause,
        status: Status::Paused,
        ..history("default", "d", 1)
    };
    let p2 = pause.clone();
    s.unit(move |tx| tx.append_history(&p2)).unwrap();
    assert_eq!(
        s.history("default", "d", 0, 10).unwrap(),
        vec![history("default", "d", 1), pause.clone()]
    );
    assert_eq!(s.history("default", "d", 1, 10).unwrap(), vec![pause]);
    assert_eq!(
        s.transition("default", "d", 1).unwrap(),
        Some(history("default", "d", 1))
    );
    assert_eq!(s.transition("default", "d", 2).unwrap(), None);
}

/// What a unit wrote is visible to readers once it has committed.
pub fn committed_writes_are_visible_to_readers<S: Store>(s: &S) {
    let inst = instance(
        "default",
        "v",
        "m",
        Status::Running,
        &["a.b"],
        &[("team", "x")],
    );
    let stored = inst.clone();
    s.unit(move |tx| {
        tx.insert_instance(&stored)?;
        tx.append_history(&history("default", "v", 1))?;
        // A unit sees its own writes.
        assert!(tx.instance("default", "v")?.is_some());
        Ok(())
    })
    .unwrap();
    assert_eq!(s.instance("default", "v").unwrap(), Some(inst));
    assert_eq!(s.history("default", "v", 0, 10).unwrap().len(), 1);
    assert_eq!(s.instance("other", "v").unwrap(), None);
}

/// The log after `after` once at least `want` entries show. A backend may hold entries
/// back behind units still running anywhere in the database (PostgreSQL does, to keep
/// positions in commit order), so a read straight after a commit can see fewer.
pub fn log_settled<S: Reader>(s: &S, after: i64, limit: usize, want: usize) -> Vec<LogEntry> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got = s.log(after, limit).unwrap();
        if got.len() >= want || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Log positions follow commit order.
pub fn log_positions_follow_commit_order<S: Store>(s: &S) {
    let mut positions = Vec::new();
    for v in 1..=20u64 {
        positions.push(s.unit(move |tx| tx.append_log(&log_entry("l", v))).unwrap());
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let all = log_settled(s, 0, 100, 20);
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        positions
    );
    assert_eq!(
        all.iter().map(|e| e.entry.version).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    let tail = s.log(positions[9], 5).unwrap();
    assert_eq!(
        tail.iter().map(|e| e.position).collect::<Vec<_>>(),
        positions[10..15].to_vec()
    );
}

/// Log retention trims the oldest entries and moves the horizon.
pub fn log_retention_trims_the_oldest_and_moves_the_horizon<S: Store>(s: &S) {
    assert_eq!(s.log_horizon().unwrap(), 0);
    let mut positions = Vec::new();
    for v in 1..=20u64 {
        let e = NewLogEntry {
            created_at: at(v as i64),
            ..log_entry("r", v)
        };
        positions.push(s.unit(move |tx| tx.append_log(&e)).unwrap());
    }
    log_settled(s, 0, 100, 20);
    let trim = |before: Option<i64>, keep: Option<u64>, limit: usize| {
        s.unit(move |tx| tx.trim_log(before.map(at), keep, limit))
            .unwrap()
    };
    let left = || {
        s.log(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>()
    };
    // Nothing older than the oldest: nothing removed, the horizon stays.
    assert_eq!(trim(Some(1), None, 100), 0);
    assert_eq!(s.log_horizon().unwrap(), 0);
    assert_eq!(trim(None, None, 100), 0);
    // By age, oldest first, at most `limit` per call.
    assert_eq!(trim(Some(9), None, 5), 5);
    assert_eq!(s.log_horizon().unwrap(), positions[4]);
    assert_eq!(left(), positions[5..].to_vec());
    assert_eq!(trim(Some(9), None, 100), 3);
    assert_eq!(s.log_horizon().unwrap(), positions[7]);
    // By count: all but the newest 10.
    assert_eq!(trim(None, Some(10), 100), 2);
    assert_eq!(s.log_horizon().unwrap(), positions[9]);
    assert_eq!(left(), positions[10..].to_vec());
    assert_eq!(trim(None, Some(3), 4), 4);
    assert_eq!(left(), positions[14..].to_vec());
    // Keeping more than there are, or an age older than all, removes nothing, and the
    // horizon never goes back.
    assert_eq!(trim(None, Some(50), 100), 0);
    assert_eq!(trim(Some(0), None, 100), 0);
    assert_eq!(s.log_horizon().unwrap(), positions[13]);
    // Reading from below the horizon gives what is left; new entries come after it.
    assert_eq!(
        s.log(positions[2], 100)
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        positions[14..].to_vec()
    );
    let next = s.unit(|tx| tx.append_log(&log_entry("r", 21))).unwrap();
    assert!(next > positions[19]);
    assert_eq!(log_settled(s, positions[19], 10, 1).len(), 1);
}

/// Vacuum gives space back and keeps every row.
pub fn vacuum_gives_space_back_and_keeps_every_row<S: Store>(s: &S) {
    // 300 instances with 8 KiB contexts, then all but ten deleted.
    for chunk in 0..10 {
        s.unit(move |tx| {
            for i in 0..30 {
                let mut r = instance(
                    "default",
                    &format!("v{}", chunk * 30 + i),
                    "m",
                    Status::Running,
                    &["a"],
                    &[],
                );
                r.context = json!({"pad": "x".repeat(8192)});
                tx.insert_instance(&r)?;
            }
            Ok(())
        })
        .unwrap();
    }
    let full = s.space().unwrap();
    assert!(full.bytes > 0, "{full:?}");
    s.unit(|tx| {
        for i in 10..300 {
            assert!(tx.delete_instance("default", &format!("v{i}"))?);
        }
        Ok(())
    })
    .unwrap();
    let v = s.vacuum().unwrap();
    assert!(v.steps >= 1 && v.after.bytes > 0, "{v:?}");
    // PostgreSQL keeps the space for reuse (and may add its maps): it does not say how
    // much is free.
    if let Some(free) = v.before.free_bytes {
        // SQLite: the deleted rows' pages were free, and are given back.
        assert!(free > 200 * 8192, "{v:?}");
        assert_eq!(v.after.free_bytes, Some(0), "{v:?}");
        assert!(v.after.bytes + 200 * 8192 < v.before.bytes, "{v:?}");
    }
    // Every row left is whole, and the store takes new units as before.
    for i in 0..10 {
        let r = s.instance("default", &format!("v{i}")).unwrap().unwrap();
        assert_eq!(r.context["pad"].as_str().unwrap().len(), 8192);
    }
    assert_eq!(s.instance("default", "v10").unwrap(), None);
    s.unit(|tx| {
        tx.insert_instance(&instance(
            "default",
            "after",
            "m",
            Status::Running,
            &["a"],
            &[],
        ))
    })
    .unwrap();
    assert!(s.instance("default", "after").unwrap().is_some());
    // Nothing left to give back.
    let again = s.vacuum().unwrap();
    if again.before.free_bytes.is_some() {
        assert_eq!(again.steps, 1, "{again:?}");
        assert!(again.after.bytes <= again.before.bytes, "{again:?}");
    }
}

/// Pagination visits each instance once.
pub fn pagination_visits_each_instance_once<S: Store>(s: &S) {
    for i in 0..25 {
        let inst = instance(
            "default",
            &format!("p{i:02}"),
            "m",
            Status::Running,
            &["a"],
            &[],
        );
        s.unit(move |tx| tx.insert_instance(&inst)).unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .instances(&InstanceFilter {
                after: after.clone(),
                limit: 7,
                ..filter("default")
            })
            .unwrap();
        seen.extend(page.items.into_iter().map(|i| i.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..25).map(|i| format!("p{i:02}")).collect::<Vec<_>>()
    );
}

/// Instances are filtered by machine, status, state and label.
pub fn filters_by_machine_status_state_and_label<S: Store>(s: &S) {
    let rows = [
        instance(
            "default",
            "a",
            "m1",
            Status::Running,
            &["review.waiting"],
            &[("team", "red")],
        ),
        instance(
            "default",
            "b",
            "m1",
            Status::Completed,
            &["done"],
            &[("team", "blue")],
        ),
        instance(
            "default",
            "c",
            "m2",
            Status::Running,
            &["review_x"],
            &[("team", "red"), ("tier", "1")],
        ),
        instance(
            "default",
            "d",
            "m2",
            Status::Running,
            &["p.r1.a", "p.r2.review"],
            &[],
        ),
    ];
    for r in rows {
        s.unit(move |tx| tx.insert_instance(&r)).unwrap();
    }
    let ids = |f: InstanceFilter| -> Vec<String> {
        s.instances(&f)
            .unwrap()
            .items
            .into_iter()
            .map(|i| i.id)
            .collect()
    };
    assert_eq!(
        ids(InstanceFilter {
            machine: Some("m1".into()),
            ..filter("default")
        }),
        ["a", "b"]
    );
    assert_eq!(
        ids(InstanceFilter {
            status: Some(Status::Running),
            ..filter("default")
        }),
        ["a", "c", "d"]
    );
    // A state matches its descendants, and only whole path segments.
    assert_eq!(
        ids(InstanceFilter {
            state: Some("review".into()),
            ..filter("default")
        }),
        ["a"]
    );
    assert_eq!(
        ids(InstanceFilter {
            state: Some("p.r2".into()),
            ..filter("default")
        }),
        ["d"]
    );
    assert_eq!(
        ids(InstanceFilter {
            state: Some("p.r1.a".into()),
            ..filter("default")
        }),
        ["d"]
    );
    assert_eq!(
        ids(InstanceFilter {
            labels: vec![("team".into(), "red".into())],
            ..filter("default")
        }),
        ["a", "c"]
    );
    assert_eq!(
        ids(InstanceFilter {
            labels: vec![("team".into(), "red".into()), ("tier".into(), "1".into())],
            ..filter("default")
        }),
        ["c"]
    );
    assert!(ids(filter("elsewhere")).is_empty());
}

/// Every version of a machine is kept.
pub fn machines_keep_every_version<S: Store>(s: &S) {
    for v in 1..=3u32 {
        let m = MachineRecord {
            namespace: "default".into(),
            name: "m".into(),
            version: v,
            digest: format!("d{v}"),
            definition: json!({"machine": "m", "v": v}),
            created_at: t0(),
        };
        s.unit(move |tx| tx.insert_machine(&m)).unwrap();
    }
    let dup = MachineRecord {
        namespace: "default".into(),
        name: "m".into(),
        version: 2,
        digest: "x".into(),
        definition: json!({}),
        created_at: t0(),
    };
    assert!(matches!(
        s.unit(move |tx| tx.insert_machine(&dup)),
        Err(Error::Conflict(_))
    ));
    assert_eq!(s.machine("default", "m", None).unwrap().unwrap().version, 3);
    assert_eq!(
        s.machine("default", "m", Some(2)).unwrap().unwrap().digest,
        "d2"
    );
    assert_eq!(s.machine("default", "m", Some(9)).unwrap(), None);
    let all = s.machines("default").unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].version, 3);
}

/// Deleted machine versions stay taken, and unreadable ones are found.
pub fn deleted_machine_versions_stay_taken_and_unreadable_ones_are_found<S: Store>(s: &S) {
    let record = |name: &str, v: u32, definition: serde_json::Value| MachineRecord {
        namespace: "default".into(),
        name: name.into(),
        version: v,
        digest: format!("d{v}"),
        definition,
        created_at: t0(),
    };
    for v in 1..=2u32 {
        let m = record("m", v, json!({"machine": "m", "v": v}));
        s.unit(move |tx| tx.insert_machine(&m)).unwrap();
    }
    let i = instance("default", "i", "m", Status::Running, &["a"], &[]);
    s.unit(move |tx| tx.insert_instance(&i)).unwrap();
    assert_eq!(
        s.unit(|tx| tx.machine_in_use("default", "m", 1)).unwrap(),
        1
    );
    assert_eq!(
        s.unit(|tx| tx.machine_in_use("default", "m", 2)).unwrap(),
        0
    );
    assert!(
        s.unit(|tx| tx.delete_machine("default", "m", 2, at(3)))
            .unwrap()
    );
    assert!(
        !s.unit(|tx| tx.delete_machine("default", "m", 2, at(4)))
            .unwrap(),
        "deleted once"
    );
    assert!(
        !s.unit(|tx| tx.delete_machine("default", "m", 7, at(4)))
            .unwrap()
    );
    assert_eq!(s.machine("default", "m", Some(2)).unwrap(), None);
    assert_eq!(s.machine("default", "m", None).unwrap().unwrap().version, 1);
    assert_eq!(s.machines("default").unwrap()[0].version, 1);
    assert_eq!(
        s.unit(|tx| tx.max_machine_version("default", "m")).unwrap(),
        Some(2),
        "a deleted version's number stays taken"
    );
    assert_eq!(
        s.unit(|tx| tx.max_machine_version("default", "none"))
            .unwrap(),
        None
    );
    // A definition too deep for the JSON reader (as an older Cairn could store one) is
    // still listed and found, with a null definition, and can be deleted.
    let mut deep = json!(0);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let bad = record("deep", 1, json!({"machine": "deep", "context": deep}));
    s.unit(move |tx| tx.insert_machine(&bad)).unwrap();
    let found = s.unreadable_machines().unwrap();
    assert_eq!(
        found
            .iter()
            .map(|m| (m.name.as_str(), m.version))
            .collect::<Vec<_>>(),
        [("deep", 1)]
    );
    assert!(found[0].definition.is_null());
    assert!(
        s.machine("default", "deep", None)
            .unwrap()
            .unwrap()
            .definition
            .is_null()
    );
    assert_eq!(
        s.machines("default").unwrap().len(),
        2,
        "listing does not fail on it"
    );
    assert!(
        s.unit(|tx| tx.delete_machine("default", "deep", 1, at(5)))
            .unwrap()
    );
    assert!(s.unreadable_machines().unwrap().is_empty());
}

/// Idempotency keys are unique per instance.
pub fn idempotency_keys_are_unique_per_instance<S: Store>(s: &S) {
    let rec = |id: &str, key: &str| IdempotencyRecord {
        namespace: "default".into(),
        instance_id: id.into(),
        key: key.into(),
        fingerprint: "f".into(),
        version: 2,
        created_at: t0(),
    };
    let (a, b, c) = (rec("i", "k"), rec("i", "k"), rec("j", "k"));
    s.unit(move |tx| tx.insert_idempotency(&a)).unwrap();
    assert!(matches!(
        s.unit(move |tx| tx.insert_idempotency(&b)),
        Err(Error::Conflict(_))
    ));
    s.unit(move |tx| tx.insert_idempotency(&c)).unwrap();
    let got = s.unit(|tx| tx.idempotency("default", "i", "k")).unwrap();
    assert_eq!(got, Some(rec("i", "k")));
    assert_eq!(
        s.unit(|tx| tx.idempotency("default", "i", "nope")).unwrap(),
        None
    );
}

/// Many threads advancing one counter through read-modify-write units lose no update.
pub fn concurrent_writers_are_serialised<S: Store>(s: &S) {
    let start = instance("default", "counter", "m", Status::Running, &["a"], &[]);
    s.unit(move |tx| tx.insert_instance(&start)).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    s.unit(|tx| {
                        let mut i = tx
                            .instance("default", "counter")?
                            .ok_or(Error::NotFound("counter".into()))?;
                        let v = i.version;
                        i.version += 1;
                        tx.update_instance(&i, v)?;
                        tx.append_history(&history("default", "counter", i.version))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        s.instance("default", "counter").unwrap().unwrap().version,
        401
    );
    assert_eq!(s.history("default", "counter", 0, 1000).unwrap().len(), 400);
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn timer(id: &str, event: &str, due: i64) -> TimerRecord {
    TimerRecord {
        namespace: "default".into(),
        instance_id: id.into(),
        event: event.into(),
        state: "s".into(),
        due_at: at(due),
        created_at: t0(),
    }
}

/// Timers are reset, fire once, and come due in order.
pub fn timers_reset_fire_once_and_come_due_in_order<S: Store>(s: &S) {
    s.unit(|tx| {
        tx.set_timer(&timer("a", "timer.s.10s", 10))?;
        tx.set_timer(&timer("b", "timer.s.5s", 5))?;
        tx.set_timer(&timer("a", "timer.s.1h", 3600))?;
        // Setting the same timer again resets it.
        tx.set_timer(&timer("a", "timer.s.10s", 20))
    })
    .unwrap();
    let due: Vec<(String, String)> = s
        .due_timers(at(30), 10)
        .unwrap()
        .into_iter()
        .map(|t| (t.instance_id, t.event))
        .collect();
    assert_eq!(
        due,
        [
            ("b".to_string(), "timer.s.5s".to_string()),
            ("a".to_string(), "timer.s.10s".to_string())
        ]
    );
    assert_eq!(s.due_timers(at(30), 1).unwrap().len(), 1);
    assert_eq!(s.timers("default", "a").unwrap().len(), 2);
    // Of concurrent deletions of one timer, exactly one sees it.
    let hits: Vec<bool> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.unit(|tx| tx.delete_timer("default", "a", "timer.s.10s"))
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(hits.iter().filter(|h| **h).count(), 1, "{hits:?}");
    let mine = s
        .unit(|tx| tx.due_timers_of("default", "a", at(7200)))
        .unwrap();
    assert_eq!(
        mine.iter().map(|t| t.event.as_str()).collect::<Vec<_>>(),
        ["timer.s.1h"]
    );
    s.unit(|tx| tx.delete_timers("default", "a")).unwrap();
    assert!(s.timers("default", "a").unwrap().is_empty());
    assert_eq!(s.timers("default", "b").unwrap().len(), 1);
}

fn approval(id: &str, instance: &str) -> ApprovalRecord {
    ApprovalRecord {
        id: id.into(),
        namespace: "default".into(),
        instance_id: instance.into(),
        state: "review".into(),
        prompt: Some("ok?".into()),
        approvers: vec!["ann".into(), "bob".into()],
        quorum: 2,
        status: ApprovalStatus::Pending,
        decisions: Vec::new(),
        created_at: t0(),
        decided_at: None,
        decided_by: None,
        reason: None,
    }
}

/// Approvals are stored and decided once.
pub fn approvals_are_stored_and_decided<S: Store>(s: &S) {
    s.unit(|tx| {
        tx.insert_approval(&approval("ap1", "i"))?;
        tx.insert_approval(&approval("ap2", "j"))
    })
    .unwrap();
    assert!(matches!(
        s.unit(|tx| tx.insert_approval(&approval("ap1", "i"))),
        Err(Error::Conflict(_))
    ));
    let mut a = approval("ap1", "i");
    a.decisions.push(Decision {
        actor: "ann".into(),
        token_id: Some("tok1".into()),
        on_behalf_of: None,
        approve: true,
        reason: "fine".into(),
        at: at(1),
    });
    a.status = ApprovalStatus::Approved;
    a.decided_at = Some(at(1));
    a.decided_by = Some("ann".into());
    let stored = a.clone();
    s.unit(move |tx| tx.update_approval(&stored)).unwrap();
    assert_eq!(s.unit(|tx| tx.approval("ap1")).unwrap(), Some(a.clone()));
    assert_eq!(Reader::approval(s, "ap1").unwrap(), Some(a));
    assert_eq!(Reader::approval(s, "nope").unwrap(), None);
    assert!(
        s.unit(|tx| tx.pending_approvals("default", "i"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.approvals("default", Some(ApprovalStatus::Pending), None)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.approvals("default", None, Some("i")).unwrap()[0].status,
        ApprovalStatus::Approved
    );
    assert!(matches!(
        s.unit(|tx| tx.update_approval(&approval("nope", "i"))),
        Err(Error::NotFound(_))
    ));
}

/// Checkpoints are unique by name per instance.
pub fn checkpoints_are_unique_by_name<S: Store>(s: &S) {
    let k = CheckpointRecord {
        namespace: "default".into(),
        instance_id: "i".into(),
        name: "after_planning".into(),
        seq: 3,
        version: 3,
        configuration: vec!["a".into()],
        context: json!({"plan": "p"}),
        status: Status::Running,
        created_at: t0(),
    };
    let k2 = k.clone();
    s.unit(move |tx| tx.insert_checkpoint(&k2)).unwrap();
    let k3 = k.clone();
    assert!(matches!(
        s.unit(move |tx| tx.insert_checkpoint(&k3)),
        Err(Error::Conflict(_))
    ));
    assert_eq!(s.checkpoints("default", "i").unwrap(), vec![k.clone()]);
    assert_eq!(
        s.unit(|tx| tx.checkpoint("default", "i", "after_planning"))
            .unwrap(),
        Some(k)
    );
    assert_eq!(
        s.unit(|tx| tx.checkpoint("default", "i", "nope")).unwrap(),
        None
    );
}

/// The inbox keeps its order and empties once.
pub fn the_inbox_keeps_order_and_empties_once<S: Store>(s: &S) {
    for (n, key) in [("e1", Some("k1")), ("e2", None), ("e3", None)] {
        let rec = InboxRecord {
            namespace: "default".into(),
            instance_id: "i".into(),
            seq: 0,
            event: n.into(),
            payload: json!({"n": n}),
            actor: String::new(),
            reason: String::new(),
            token_id: key.map(|_| "tok1".to_string()),
            on_behalf_of: key.map(|_| "bob".to_string()),
            addressed_to: key.map(|_| "research.web".to_string()),
            idempotency_key: key.map(str::to_string),
            created_at: t0(),
        };
        s.unit(move |tx| tx.push_inbox(&rec)).unwrap();
    }
    assert_eq!(
        s.unit(|tx| tx.inbox_key("default", "i", "k1"))
            .unwrap()
            .map(|e| e.event),
        Some("e1".into())
    );
    assert_eq!(s.inbox("default", "i").unwrap().len(), 3);
    let taken = s.unit(|tx| tx.take_inbox("default", "i")).unwrap();
    assert_eq!(
        taken.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["e1", "e2", "e3"]
    );
    assert_eq!(taken.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        (
            taken[0].token_id.as_deref(),
            taken[0].on_behalf_of.as_deref()
        ),
        (Some("tok1"), Some("bob")),
        "who queued it is kept"
    );
    assert_eq!(
        taken
            .iter()
            .map(|e| e.addressed_to.as_deref())
            .collect::<Vec<_>>(),
        [Some("research.web"), None, None],
        "the state an outcome was addressed to is kept"
    );
    assert_eq!(
        (
            taken[1].token_id.as_deref(),
            taken[1].on_behalf_of.as_deref()
        ),
        (None, None)
    );
    assert!(
        s.unit(|tx| tx.take_inbox("default", "i"))
            .unwrap()
            .is_empty()
    );
}

fn task(id: &str, instance: &str, queue: &str) -> cairn_store::TaskRecord {
    cairn_store::TaskRecord {
        id: id.into(),
        namespace: "default".into(),
        instance_id: instance.into(),
        state: "s".into(),
        queue: queue.into(),
        action: "a".into(),
        input: json!({"id": id}),
        status: cairn_store::TaskStatus::Pending,
        attempt: 0,
        retry: json!({}),
        timeout_ms: None,
        heartbeat_ms: None,
        available_at: t0(),
        lease_owner: None,
        lease_expires_at: None,
        output: None,
        error: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

fn outbox_entry(to: &str, source: &str) -> cairn_store::OutboxRecord {
    cairn_store::OutboxRecord {
        seq: 0,
        kind: "system".into(),
        hops: 0,
        namespace: "default".into(),
        instance_id: to.into(),
        event: "child.done".into(),
        payload: json!({}),
        actor: format!("instance:{source}"),
        reason: String::new(),
        source: format!("child:{source}"),
        created_at: t0(),
    }
}

/// Every table that holds something of an instance, after `gone` was deleted: nothing
/// of it anywhere, and everything of `keep` where it was (what `gone` sent included).
pub fn deleting_an_instance_removes_everything_of_it<S: Store>(s: &S) {
    let keep = instance(
        "default",
        "keep",
        "m",
        Status::Running,
        &["a"],
        &[("k", "v")],
    );
    let gone = instance(
        "default",
        "gone",
        "m",
        Status::Completed,
        &["a"],
        &[("k", "v")],
    );
    s.unit(move |tx| {
        for i in [&keep, &gone] {
            let id = i.id.as_str();
            tx.insert_instance(i)?;
            tx.append_history(&history("default", id, 1))?;
            tx.set_timer(&timer(id, "timer.s.1s", 1))?;
            tx.insert_approval(&approval(&format!("ap-{id}"), id))?;
            tx.insert_idempotency(&IdempotencyRecord {
                namespace: "default".into(),
                instance_id: id.into(),
                key: "k".into(),
                fingerprint: "f".into(),
                version: 1,
                created_at: t0(),
            })?;
            tx.insert_checkpoint(&CheckpointRecord {
                namespace: "default".into(),
                instance_id: id.into(),
                name: "c".into(),
                seq: 1,
                version: 1,
                configuration: vec!["a".into()],
                context: json!({}),
                status: Status::Running,
                created_at: t0(),
            })?;
            tx.push_inbox(&InboxRecord {
                namespace: "default".into(),
                instance_id: id.into(),
                seq: 0,
                event: "e".into(),
                payload: json!({}),
                actor: String::new(),
                reason: String::new(),
                token_id: None,
                on_behalf_of: None,
                addressed_to: None,
                idempotency_key: None,
                created_at: t0(),
            })?;
            tx.put_map("default", id, "m", &json!({"items": []}))?;
            tx.insert_task(&task(&format!("t-{id}"), id, "q"))?;
            tx.put_attempt(&cairn_store::AttemptRecord {
                task_id: format!("t-{id}"),
                attempt: 1,
                namespace: "default".into(),
                instance_id: id.into(),
                worker: "w".into(),
                started_at: t0(),
                ended_at: None,
                outcome: None,
                error: None,
                tokens: None,
                cost: None,
            })?;
        }
        // `gone` is `keep`'s child; each has sent the other something.
        tx.insert_child(&cairn_store::ChildRecord {
            namespace: "default".into(),
            parent_id: "keep".into(),
            child_id: "gone".into(),
            state: Some("a".into()),
            created_at: t0(),
        })?;
        tx.push_outbox(&outbox_entry("keep", "gone"))?;
        tx.push_outbox(&outbox_entry("gone", "keep"))?;
        Ok(())
    })
    .unwrap();
    assert!(s.unit(|tx| tx.delete_instance("default", "gone")).unwrap());
    assert!(!s.unit(|tx| tx.delete_instance("default", "gone")).unwrap());
    // Nothing of `gone` is left...
    assert_eq!(s.instance("default", "gone").unwrap(), None);
    assert!(s.history("default", "gone", 0, 10).unwrap().is_empty());
    assert!(s.timers("default", "gone").unwrap().is_empty());
    assert!(
        s.approvals("default", None, Some("gone"))
            .unwrap()
            .is_empty()
    );
    assert!(s.checkpoints("default", "gone").unwrap().is_empty());
    assert!(s.inbox("default", "gone").unwrap().is_empty());
    assert_eq!(s.task("t-gone").unwrap(), None);
    assert!(s.attempts("t-gone").unwrap().is_empty());
    let (idem, maps, children, outbox) = s
        .unit(|tx| {
            Ok((
                tx.idempotency("default", "gone", "k")?,
                tx.maps_of("default", "gone")?,
                tx.children("default", "keep")?,
                tx.outbox(100)?,
            ))
        })
        .unwrap();
    assert_eq!(idem, None);
    assert!(maps.is_empty());
    assert!(children.is_empty(), "the link to its parent is gone");
    // ...and what it sent its parent is still on its way; what was sent to it is not.
    assert_eq!(
        outbox
            .iter()
            .map(|e| (e.instance_id.as_str(), e.source.as_str()))
            .collect::<Vec<_>>(),
        [("keep", "child:gone")]
    );
    let labelled = s
        .instances(&InstanceFilter {
            labels: vec![("k".into(), "v".into())],
            ..filter("default")
        })
        .unwrap();
    assert_eq!(
        labelled
            .items
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        ["keep"]
    );
    // Everything of `keep` is where it was.
    assert_eq!(s.history("default", "keep", 0, 10).unwrap().len(), 1);
    assert_eq!(s.timers("default", "keep").unwrap().len(), 1);
    assert_eq!(s.approvals("default", None, Some("keep")).unwrap().len(), 1);
    assert_eq!(s.checkpoints("default", "keep").unwrap().len(), 1);
    assert_eq!(s.inbox("default", "keep").unwrap().len(), 1);
    assert!(s.task("t-keep").unwrap().is_some());
    assert_eq!(s.attempts("t-keep").unwrap().len(), 1);
    let (idem, maps) = s
        .unit(|tx| {
            Ok((
                tx.idempotency("default", "keep", "k")?,
                tx.maps_of("default", "keep")?,
            ))
        })
        .unwrap();
    assert!(idem.is_some());
    assert_eq!(maps.len(), 1);
}

/// Claims hand out a pending task once, leases expire and are found, and a claimed task
/// is not claimable again.
pub fn tasks_are_claimed_leased_and_reclaimed_once<S: Store>(s: &S) {
    let i = instance("default", "i", "m", Status::Running, &["a"], &[]);
    let other = InstanceRecord {
        namespace: "other".into(),
        ..instance("other", "j", "m", Status::Running, &["a"], &[])
    };
    s.unit(move |tx| {
        tx.insert_instance(&i)?;
        tx.insert_instance(&other)?;
        tx.insert_task(&task("t1", "i", "q"))?;
        tx.insert_task(&cairn_store::TaskRecord {
            available_at: at(100),
            ..task("t2", "i", "q")
        })?;
        tx.insert_task(&task("t3", "i", "elsewhere"))?;
        tx.insert_task(&cairn_store::TaskRecord {
            namespace: "other".into(),
            ..task("t4", "j", "q")
        })?;
        Ok(())
    })
    .unwrap();
    assert!(matches!(
        s.unit(|tx| tx.insert_task(&task("t1", "i", "q"))),
        Err(Error::Conflict(_))
    ));
    // Each task's owner, in one read; unknown ids are left out.
    let mut owners = s
        .unit(|tx| tx.task_instances(&["t4".into(), "nope".into(), "t1".into()]))
        .unwrap();
    owners.sort();
    assert_eq!(
        owners,
        [
            ("t1".to_string(), "default".to_string(), "i".to_string()),
            ("t4".into(), "other".into(), "j".into())
        ]
    );
    let q = vec!["q".to_string()];
    let ids = |tasks: Vec<cairn_store::TaskRecord>| -> Vec<String> {
        tasks.into_iter().map(|t| t.id).collect()
    };
    // Only what is due, of the queues and namespaces asked, oldest first.
    let (q2, q3) = (q.clone(), q.clone());
    assert_eq!(
        ids(s
            .unit(move |tx| tx.claimable_tasks(&q2, None, at(10), 10))
            .unwrap()),
        ["t1", "t4"]
    );
    assert_eq!(
        ids(s
            .unit(move |tx| tx.claimable_tasks(&q3, Some(&["default".to_string()]), at(200), 10))
            .unwrap()),
        ["t1", "t2"]
    );
    assert!(
        s.task_work(&q, Some(&["default".to_string()]), at(10))
            .unwrap()
    );
    assert!(!s.task_work(&["none".to_string()], None, at(10)).unwrap());
    // Leased, it is no longer claimable; its lease expires and is found once.
    s.unit(|tx| {
        let mut t = tx.task("t1")?.expect("t1");
        t.status = cairn_store::TaskStatus::Leased;
        t.attempt = 1;
        t.lease_owner = Some("w".into());
        t.lease_expires_at = Some(at(30));
        tx.update_task(&t)
    })
    .unwrap();
    let q4 = q.clone();
    assert_eq!(
        ids(s
            .unit(move |tx| tx.claimable_tasks(&q4, None, at(50), 10))
            .unwrap()),
        ["t4"]
    );
    assert!(
        s.unit(|tx| tx.expired_leases(at(20), 10))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(s.unit(|tx| tx.expired_leases(at(40), 10)).unwrap()),
        ["t1"]
    );
    let open = s.unit(|tx| tx.open_tasks("default", "i")).unwrap();
    assert_eq!(open.len(), 3);
    s.unit(|tx| {
        let mut t = tx.task("t1")?.expect("t1");
        t.status = cairn_store::TaskStatus::Completed;
        tx.update_task(&t)
    })
    .unwrap();
    assert!(
        s.unit(|tx| tx.expired_leases(at(40), 10))
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.unit(|tx| tx.open_tasks("default", "i")).unwrap().len(), 2);
    // Attempts are kept by number, replaced in place.
    for outcome in [None, Some("completed")] {
        s.unit(move |tx| {
            tx.put_attempt(&cairn_store::AttemptRecord {
                task_id: "t1".into(),
                attempt: 1,
                namespace: "default".into(),
                instance_id: "i".into(),
                worker: "w".into(),
                started_at: t0(),
                ended_at: outcome.map(|_| at(5)),
                outcome: outcome.map(str::to_string),
                error: None,
                tokens: Some(7),
                cost: Some(0.5),
            })
        })
        .unwrap();
    }
    let attempts = s.attempts("t1").unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_deref(), Some("completed"));
    assert_eq!((attempts[0].tokens, attempts[0].cost), (Some(7), Some(0.5)));
}

/// A task whose instance is gone is never handed out, on any backend.
pub fn claims_skip_deleted_instances<S: Store>(s: &S) {
    let i = instance("default", "i", "m", Status::Running, &["a"], &[]);
    s.unit(move |tx| {
        tx.insert_instance(&i)?;
        // A task without its instance, as a store written before deletion was complete
        // could hold one.
        tx.insert_task(&task("orphan", "missing", "q"))?;
        tx.insert_task(&task("t", "i", "q"))
    })
    .unwrap();
    let q = vec!["q".to_string()];
    let q2 = q.clone();
    let claimable = s
        .unit(move |tx| tx.claimable_tasks(&q2, None, at(10), 10))
        .unwrap();
    assert_eq!(
        claimable.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t"]
    );
    s.unit(|tx| tx.delete_instance("default", "i")).unwrap();
    assert!(
        s.unit(move |tx| tx.claimable_tasks(&q, None, at(10), 10))
            .unwrap()
            .is_empty()
    );
    assert!(!s.task_work(&["q".to_string()], None, at(10)).unwrap());
}

/// Compaction folds history into a base record and keeps the newest.
pub fn history_can_be_compacted<S: Store>(s: &S) {
    for v in 1..=5 {
        s.unit(move |tx| tx.append_history(&history("default", "h", v)))
            .unwrap();
    }
    let removed = s
        .unit(|tx| tx.delete_history_before("default", "h", 4))
        .unwrap();
    assert_eq!(removed, 3);
    let base = HistoryRecord {
        kind: HistoryKind::Base,
        event: String::new(),
        ..history("default", "h", 4)
    };
    let b2 = base.clone();
    s.unit(move |tx| tx.replace_history(&b2)).unwrap();
    let left = s.history("default", "h", 0, 10).unwrap();
    assert_eq!(
        left.iter().map(|h| (h.seq, h.kind)).collect::<Vec<_>>(),
        [(4, HistoryKind::Base), (5, HistoryKind::Event)]
    );
    assert_eq!(
        s.unit(|tx| tx.history_at("default", "h", 4)).unwrap(),
        Some(base)
    );
}

/// Finished instances are found by age, and counted.
pub fn retention_and_counts<S: Store>(s: &S) {
    let mut old = instance("default", "old", "m", Status::Completed, &["done"], &[]);
    old.updated_at = at(10);
    let mut recent = instance("default", "recent", "m", Status::Failed, &["done"], &[]);
    recent.updated_at = at(1000);
    let mut running = instance("default", "running", "m2", Status::Running, &["a"], &[]);
    running.updated_at = at(10);
    s.unit(move |tx| {
        tx.insert_instance(&old)?;
        tx.insert_instance(&recent)?;
        tx.insert_instance(&running)?;
        tx.append_history(&history("default", "old", 1))?;
        tx.append_history(&history("default", "old", 2))
    })
    .unwrap();
    assert_eq!(s.finished_before("default", at(500), 10).unwrap(), ["old"]);
    assert_eq!(
        s.finished_before("default", at(5000), 10).unwrap(),
        ["old", "recent"]
    );
    let instances: Vec<_> = s
        .figures(Some("default"))
        .unwrap()
        .into_iter()
        .filter(|f| f.kind == "instances")
        .map(|f| (f.name, f.detail, f.value))
        .collect();
    assert_eq!(
        instances,
        [
            ("m".to_string(), "completed".to_string(), 1),
            ("m".to_string(), "failed".to_string(), 1),
            ("m2".to_string(), "running".to_string(), 1)
        ]
    );
    assert_eq!(figure(s, "default", "transitions", "", ""), 2);
}

/// A figure's value (0 when absent).
fn figure<S: Reader>(s: &S, ns: &str, kind: &str, name: &str, detail: &str) -> i64 {
    s.figures(Some(ns))
        .unwrap()
        .iter()
        .find(|f| f.kind == kind && f.name == name && f.detail == detail)
        .map_or(0, |f| f.value)
}

/// The figures follow every change of what they count, however it is made, and stay
/// exact across many units (on PostgreSQL, across folds of their changes).
pub fn figures_count_what_is_stored<S: Store>(s: &S) {
    // 300 instances, one unit each (more commits than a PostgreSQL node folds after).
    for i in 0..300 {
        let r = instance(
            "default",
            &format!("f{i}"),
            "m",
            Status::Running,
            &["a"],
            &[],
        );
        s.unit(move |tx| {
            tx.insert_instance(&r)?;
            tx.append_history(&history("default", &r.id, 1))
        })
        .unwrap();
    }
    assert_eq!(figure(s, "default", "instances", "m", "running"), 300);
    assert_eq!(figure(s, "default", "transitions", "", ""), 300);
    // Status changes move an instance between figures; other updates do not count.
    s.unit(|tx| {
        for i in 0..10 {
            let mut r = tx.instance("default", &format!("f{i}"))?.unwrap();
            r.status = Status::Completed;
            r.version += 1;
            tx.update_instance(&r, 1)?;
            tx.append_history(&history("default", &r.id, 2))?;
        }
        let mut r = tx.instance("default", "f10")?.unwrap();
        r.context = json!({"n": 1});
        r.version += 1;
        tx.update_instance(&r, 1)
    })
    .unwrap();
    assert_eq!(figure(s, "default", "instances", "m", "running"), 290);
    assert_eq!(figure(s, "default", "instances", "m", "completed"), 10);
    assert_eq!(figure(s, "default", "transitions", "", ""), 310);
    // Compaction: a record turned into a base, older ones deleted.
    s.unit(|tx| {
        let mut base = tx.history_at("default", "f0", 2)?.unwrap();
        base.kind = HistoryKind::Base;
        tx.replace_history(&base)?;
        tx.delete_history_before("default", "f0", 2)
    })
    .unwrap();
    assert_eq!(figure(s, "default", "transitions", "", ""), 308);
    // Tasks by queue and status, timers (set twice: one), the outbox.
    s.unit(|tx| {
        tx.insert_task(&task("t1", "f1", "q1"))?;
        tx.insert_task(&task("t2", "f1", "q1"))?;
        tx.insert_task(&task("t3", "f2", "q2"))?;
        let mut t = task("t1", "f1", "q1");
        t.status = cairn_store::TaskStatus::Leased;
        tx.update_task(&t)?;
        tx.set_timer(&timer("f1", "timer.a", 10))?;
        tx.set_timer(&timer("f1", "timer.a", 20))?;
        tx.set_timer(&timer("f2", "timer.b", 10))?;
        tx.push_outbox(&outbox_entry("f3", "f4"))?;
        tx.push_outbox(&outbox_entry("f3", "f5"))?;
        Ok(())
    })
    .unwrap();
    assert_eq!(figure(s, "default", "tasks", "q1", "pending"), 1);
    assert_eq!(figure(s, "default", "tasks", "q1", "leased"), 1);
    assert_eq!(figure(s, "default", "tasks", "q2", "pending"), 1);
    assert_eq!(figure(s, "default", "timers", "", ""), 2);
    assert_eq!(figure(s, "default", "outbox", "", ""), 2);
    assert_eq!(
        s.timers_due(at(15), 100).unwrap(),
        [("default".to_string(), 1)]
    );
    assert_eq!(s.timers_due(at(15), 0).unwrap(), []);
    // Deleting instances takes everything of theirs out of the figures.
    s.unit(|tx| {
        for id in ["f1", "f2", "f3"] {
            tx.delete_instance("default", id)?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(figure(s, "default", "instances", "m", "running"), 290);
    assert_eq!(figure(s, "default", "instances", "m", "completed"), 7);
    assert_eq!(figure(s, "default", "transitions", "", ""), 302);
    for (kind, name, detail) in [
        ("tasks", "q1", "pending"),
        ("tasks", "q1", "leased"),
        ("tasks", "q2", "pending"),
        ("timers", "", ""),
        ("outbox", "", ""),
    ] {
        assert_eq!(figure(s, "default", kind, name, detail), 0, "{kind}");
    }
    // What the engine adds, added up; other namespaces apart.
    for v in [1500, 500] {
        s.unit(move |tx| {
            tx.add_figure(&cairn_store::Figure {
                namespace: "default".into(),
                kind: "dwell_ms".into(),
                name: "m".into(),
                detail: "a".into(),
                value: v,
            })
        })
        .unwrap();
    }
    assert_eq!(figure(s, "default", "dwell_ms", "m", "a"), 2000);
    // Units committed together add up; a unit that rolls back adds nothing.
    let dwell = |v: i64| cairn_store::Figure {
        namespace: "default".into(),
        kind: "dwell_ms".into(),
        name: "m".into(),
        detail: "a".into(),
        value: v,
    };
    std::thread::scope(|scope| {
        for i in 0..16 {
            let s = s.clone();
            scope.spawn(move || {
                let r = s.unit(move |tx| {
                    tx.add_figure(&dwell(10))?;
                    if i % 4 == 0 {
                        return Err(cairn_store::Error::Conflict("rolled back".into()));
                    }
                    Ok(())
                });
                assert_eq!(r.is_ok(), i % 4 != 0);
            });
        }
    });
    assert_eq!(figure(s, "default", "dwell_ms", "m", "a"), 2000 + 12 * 10);
    assert!(s.figures(Some("other")).unwrap().is_empty());
    assert!(
        s.figures(None)
            .unwrap()
            .iter()
            .all(|f| f.namespace == "default")
    );
}

/// Children are linked to their parent and listed by it.
pub fn children_are_linked_and_listed_by_parent<S: Store>(s: &S) {
    let parent = instance("default", "p", "m", Status::Running, &["a"], &[]);
    let mut kids = Vec::new();
    for (n, state) in [("c1", Some("a")), ("c2", None), ("c3", Some("a"))] {
        let mut c = instance("default", n, "m", Status::Running, &["a"], &[]);
        c.parent = Some("p".into());
        kids.push((c, state));
    }
    s.unit(move |tx| {
        tx.insert_instance(&parent)?;
        for (i, (c, state)) in kids.iter().enumerate() {
            tx.insert_instance(c)?;
            tx.insert_child(&cairn_store::ChildRecord {
                namespace: "default".into(),
                parent_id: "p".into(),
                child_id: c.id.clone(),
                state: state.map(str::to_string),
                created_at: t0() + chrono::Duration::seconds(i as i64),
            })?;
        }
        Ok(())
    })
    .unwrap();
    let links = s.unit(|tx| tx.children("default", "p")).unwrap();
    assert_eq!(
        links
            .iter()
            .map(|l| (l.child_id.as_str(), l.state.as_deref()))
            .collect::<Vec<_>>(),
        [("c1", Some("a")), ("c2", None), ("c3", Some("a"))]
    );
    assert!(
        s.unit(|tx| tx.children("default", "c1"))
            .unwrap()
            .is_empty()
    );
    let listed = s
        .instances(&InstanceFilter {
            parent: Some("p".into()),
            ..filter("default")
        })
        .unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        ["c1", "c2", "c3"]
    );
    // Deleting a child drops its link; deleting the parent drops the rest.
    assert!(s.unit(|tx| tx.delete_instance("default", "c2")).unwrap());
    assert_eq!(s.unit(|tx| tx.children("default", "p")).unwrap().len(), 2);
    assert!(s.unit(|tx| tx.delete_instance("default", "p")).unwrap());
    assert!(s.unit(|tx| tx.children("default", "p")).unwrap().is_empty());
}

/// Outbox entries keep their order until delivered.
pub fn the_outbox_keeps_order_until_delivered<S: Store>(s: &S) {
    assert!(!s.outbox_waiting().unwrap());
    let seqs = s
        .unit(|tx| {
            let mut seqs = Vec::new();
            for n in ["e1", "e2", "e3"] {
                seqs.push(tx.push_outbox(&cairn_store::OutboxRecord {
                    seq: 0,
                    kind: "system".into(),
                    hops: 2,
                    namespace: "default".into(),
                    instance_id: "p".into(),
                    event: n.into(),
                    payload: json!({"n": n}),
                    actor: "instance:c".into(),
                    reason: String::new(),
                    source: "child:c".into(),
                    created_at: t0(),
                })?);
            }
            Ok(seqs)
        })
        .unwrap();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(s.outbox_waiting().unwrap());
    // A unit that fails leaves its deliveries in place.
    let first = seqs[0];
    let failed: Result<(), cairn_store::Error> = s.unit(move |tx| {
        tx.delete_outbox(first)?;
        Err(cairn_store::Error::Refused("rolled back".into()))
    });
    assert!(failed.is_err());
    let all = s.unit(|tx| tx.outbox(10)).unwrap();
    assert_eq!(
        all.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["e1", "e2", "e3"]
    );
    assert_eq!(all[0].payload, json!({"n": "e1"}));
    assert_eq!(all[0].source, "child:c");
    assert_eq!((all[0].kind.as_str(), all[0].hops), ("system", 2));
    for seq in seqs {
        assert!(s.unit(move |tx| tx.delete_outbox(seq)).unwrap());
        assert!(!s.unit(move |tx| tx.delete_outbox(seq)).unwrap());
    }
    assert!(!s.outbox_waiting().unwrap());
}

/// Triggers are unique by name per namespace.
pub fn triggers_are_unique_by_name<S: Store>(s: &S) {
    let t = |ns: &str, name: &str| cairn_store::TriggerRecord {
        namespace: ns.into(),
        name: name.into(),
        machine: "a".into(),
        definition: json!({"name": name, "machine": "a"}),
        created_at: t0(),
    };
    let (b, a, other) = (t("default", "b"), t("default", "a"), t("other", "a"));
    s.unit(move |tx| {
        tx.insert_trigger(&b)?;
        tx.insert_trigger(&a)?;
        tx.insert_trigger(&other)
    })
    .unwrap();
    let again = t("default", "a");
    let e = s.unit(move |tx| tx.insert_trigger(&again)).unwrap_err();
    assert!(matches!(e, cairn_store::Error::Conflict(_)), "{e}");
    let names: Vec<String> = s
        .triggers("default")
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        s.unit(|tx| tx.triggers("default")).unwrap()[0].definition,
        json!({"name": "a", "machine": "a"})
    );
    assert!(s.unit(|tx| tx.delete_trigger("default", "a")).unwrap());
    assert!(!s.unit(|tx| tx.delete_trigger("default", "a")).unwrap());
    assert_eq!(s.triggers("default").unwrap().len(), 1);
    assert_eq!(s.triggers("other").unwrap().len(), 1);
}

/// Schedules come due in order of their next tick.
pub fn schedules_come_due_in_order<S: Store>(s: &S) {
    let sched = |name: &str, next: i64| cairn_store::ScheduleRecord {
        namespace: "default".into(),
        name: name.into(),
        definition: json!({"name": name}),
        next_at: t0() + chrono::Duration::seconds(next),
        last_at: None,
        created_at: t0(),
    };
    let (late, early, later) = (sched("late", 20), sched("early", 10), sched("later", 30));
    s.unit(move |tx| {
        tx.insert_schedule(&late)?;
        tx.insert_schedule(&early)?;
        tx.insert_schedule(&later)
    })
    .unwrap();
    let dup = sched("early", 5);
    assert!(matches!(
        s.unit(move |tx| tx.insert_schedule(&dup)).unwrap_err(),
        cairn_store::Error::Conflict(_)
    ));
    assert!(
        !s.schedules_due(t0() + chrono::Duration::seconds(9))
            .unwrap()
    );
    assert!(
        s.schedules_due(t0() + chrono::Duration::seconds(10))
            .unwrap()
    );
    let due = s
        .unit(|tx| tx.due_schedules(t0() + chrono::Duration::seconds(25), 10))
        .unwrap();
    assert_eq!(
        due.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["early", "late"]
    );
    let mut moved = due[0].clone();
    moved.next_at = t0() + chrono::Duration::seconds(100);
    moved.last_at = Some(t0() + chrono::Duration::seconds(10));
    let m = moved.clone();
    s.unit(move |tx| tx.update_schedule(&m)).unwrap();
    let listed = s.schedules("default").unwrap();
    assert_eq!(
        listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["early", "late", "later"]
    );
    assert_eq!(listed[0], moved);
    assert!(s.unit(|tx| tx.delete_schedule("default", "late")).unwrap());
    assert!(!s.unit(|tx| tx.delete_schedule("default", "late")).unwrap());
    assert_eq!(s.schedules("default").unwrap().len(), 2);
}

/// Tokens keep their subject, and are revoked once.
pub fn tokens_keep_their_subject_and_are_revoked_once<S: Store>(s: &S) {
    let token = |id: &str, subject: &str, hash: &str| cairn_store::TokenRecord {
        id: id.into(),
        name: subject.into(),
        subject: subject.into(),
        hash: hash.into(),
        role: "operator".into(),
        namespaces: vec!["a".into(), "b".into()],
        created_at: t0(),
        revoked_at: None,
    };
    let (ann, bot) = (token("t1", "ann", "h1"), token("t2", "token:t2", "h2"));
    let stored = (ann.clone(), bot.clone());
    s.unit(move |tx| {
        tx.insert_token(&stored.0)?;
        tx.insert_token(&stored.1)
    })
    .unwrap();
    let again = token("t3", "eve", "h1");
    assert!(
        matches!(
            s.unit(move |tx| tx.insert_token(&again)),
            Err(Error::Conflict(_))
        ),
        "a secret's hash is unique"
    );
    assert_eq!(s.token_by_hash("h1").unwrap(), Some(ann.clone()));
    assert_eq!(s.token_by_hash("nope").unwrap(), None);
    assert_eq!(s.tokens().unwrap(), vec![ann, bot]);
    assert!(s.unit(|tx| tx.revoke_token("t1", at(5))).unwrap());
    assert!(
        s.unit(|tx| tx.revoke_token("t1", at(9))).unwrap(),
        "revoking again is harmless"
    );
    assert!(!s.unit(|tx| tx.revoke_token("none", at(9))).unwrap());
    assert_eq!(
        s.token_by_hash("h1").unwrap().and_then(|t| t.revoked_at),
        Some(at(5)),
        "the first revocation's time stays"
    );
}
