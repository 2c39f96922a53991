//! The shared behaviour suite on PostgreSQL (each test on a database of its own), plus
//! what only PostgreSQL has: commit-ordered log positions under concurrent writers,
//! claims that skip what another unit holds, migrations run once by racing nodes, and
//! the database clock.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use cairn_store::{Error, NewLogEntry, Reader};
use cairn_store_postgres::testing::TestDb;
use cairn_store_postgres::{Options, PgStore};
use cairn_store_tests::Units;
use serde_json::json;

fn open() -> (PgStore, TestDb) {
    let db = TestDb::create().unwrap();
    let store = PgStore::open(&db.url, Options::default()).unwrap();
    (store, db)
}

cairn_store_tests::suite!(open());

fn entry(id: &str, v: u64) -> NewLogEntry {
    NewLogEntry {
        namespace: "default".into(),
        instance_id: id.into(),
        kind: "transition".into(),
        version: v,
        data: json!({}),
        created_at: chrono::Utc::now(),
    }
}

/// A unit that took its position first but commits last must not be skipped by a reader
/// that has already read past later positions: the reader does not see the later ones
/// until the earlier unit has ended.
#[test]
fn log_positions_hold_back_behind_a_unit_still_running() {
    let (s, _db) = open();
    let started = Arc::new(Barrier::new(2));
    let finish = Arc::new(Barrier::new(2));
    let (st, fi) = (Arc::clone(&started), Arc::clone(&finish));
    let slow_store = s.clone();
    let slow = std::thread::spawn(move || {
        slow_store
            .unit(move |tx| {
                let p = tx.append_log(&entry("slow", 1))?;
                st.wait();
                fi.wait();
                Ok(p)
            })
            .unwrap()
    });
    started.wait();
    let fast = s.unit(|tx| tx.append_log(&entry("fast", 1))).unwrap();
    // The fast unit committed, but the slow one (an older transaction) still runs.
    assert!(
        s.log(0, 10).unwrap().is_empty(),
        "an entry showed while an older unit could still commit below it"
    );
    finish.wait();
    let slow_pos = slow.join().unwrap();
    assert!(slow_pos < fast);
    let all: Vec<i64> = cairn_store_tests::log_settled(&s, 0, 10, 2)
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(all, vec![slow_pos, fast]);
}

#[test]
fn concurrent_units_log_in_an_order_every_reader_agrees_on() {
    let (s, _db) = open();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                for v in 0..40u64 {
                    s.unit(move |tx| {
                        tx.append_log(&entry(&format!("w{w}"), v))?;
                        tx.append_log(&entry(&format!("w{w}"), v))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    // A reader following the log while they write never sees an entry appear behind it.
    let mut seen = Vec::new();
    let mut after = 0;
    while seen.len() < 8 * 40 * 2 {
        for e in s.log(after, 1000).unwrap() {
            assert!(e.position > after);
            after = e.position;
            seen.push(e.position);
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    let all: Vec<i64> = cairn_store_tests::log_settled(&s, 0, 10_000, seen.len())
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(
        all, seen,
        "what was followed is what is there, in the same order"
    );
}

#[test]
fn a_claimed_task_is_skipped_by_a_concurrent_claim() {
    let (s, _db) = open();
    let inst = cairn_store_tests::instance(
        "default",
        "i",
        "m",
        cairn_core::Status::Running,
        &["a"],
        &[],
    );
    s.unit(move |tx| tx.insert_instance(&inst)).unwrap();
    let now = chrono::Utc::now();
    for n in 0..2 {
        let t = cairn_store::TaskRecord {
            id: format!("t{n}"),
            namespace: "default".into(),
            instance_id: "i".into(),
            state: "a".into(),
            queue: "q".into(),
            action: "a".into(),
            input: json!({}),
            status: cairn_store::TaskStatus::Pending,
            attempt: 0,
            retry: json!({}),
            timeout_ms: None,
            heartbeat_ms: None,
            available_at: now,
            lease_owner: None,
            lease_expires_at: None,
            output: None,
            error: None,
            created_at: now,
            updated_at: now,
        };
        s.unit(move |tx| tx.insert_task(&t)).unwrap();
    }
    let holding = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let (h, r) = (Arc::clone(&holding), Arc::clone(&release));
    let s1 = s.clone();
    let first = std::thread::spawn(move || {
        s1.unit(move |tx| {
            let got = tx.claimable_tasks(&["q".into()], None, chrono::Utc::now(), 1)?;
            h.wait();
            r.wait();
            Ok(got.len())
        })
        .unwrap()
    });
    holding.wait();
    // The first unit holds a task of instance `i`, and so the instance: a second claim
    // skips it rather than waiting or taking it twice.
    let second = s
        .unit(|tx| tx.claimable_tasks(&["q".into()], None, chrono::Utc::now(), 10))
        .unwrap();
    release.wait();
    assert_eq!(first.join().unwrap(), 1);
    assert!(second.is_empty(), "{second:?}");
}

/// Tokens made before subjects existed get `token:<id>`: the actor of what they do now,
/// never their old free-text name.
#[test]
fn tokens_from_before_subjects_get_one_of_their_own() {
    let db = TestDb::create().unwrap();
    {
        let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
        c.batch_execute(cairn_store_postgres::MIGRATIONS[0].2)
            .unwrap();
        c.batch_execute(
            "CREATE TABLE cairn_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO cairn_migrations (version, name) VALUES (1, 'initial');
             INSERT INTO tokens (id, name, hash, role, namespaces, created_at) VALUES ('abc', 'ann', 'h', 'admin', '[\"*\"]', now());",
        )
        .unwrap();
    }
    let s = PgStore::open(&db.url, Options::default()).unwrap();
    let t = s.token_by_hash("h").unwrap().unwrap();
    assert_eq!((t.name.as_str(), t.subject.as_str()), ("ann", "token:abc"));
}

#[test]
fn nodes_starting_together_migrate_once() {
    let db = TestDb::create().unwrap();
    let url = db.url.clone();
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                PgStore::open(&url, Options::default()).map(|s| s.schema_version())
            })
        })
        .collect();
    for o in opened {
        assert_eq!(o.join().unwrap().unwrap().unwrap(), latest());
    }
}

#[test]
fn time_comes_from_the_database_clock() {
    let (s, _db) = open();
    // This machine's clock and the database's are the same here: the measured skew is
    // within the round trip.
    assert!(
        s.clock_skew().num_milliseconds().abs() < 1000,
        "{:?}",
        s.clock_skew()
    );
    let before = s.now();
    std::thread::sleep(Duration::from_millis(5));
    assert!(s.now() > before);
}

#[test]
fn notifications_reach_another_connection() {
    let (s, _db) = open();
    use cairn_store_postgres::Moved;
    let mut l = s.listen().unwrap();
    assert_eq!(l.wait(Duration::from_millis(50)).unwrap(), Moved::default());
    s.notify(true, false).unwrap();
    assert_eq!(
        l.wait(Duration::from_secs(5)).unwrap(),
        Moved {
            log: true,
            tasks: false
        }
    );
    s.notify(true, true).unwrap();
    assert_eq!(
        l.wait(Duration::from_secs(5)).unwrap(),
        Moved {
            log: true,
            tasks: true
        }
    );
}

#[test]
fn bad_urls_and_unreachable_servers_are_clear_errors() {
    match PgStore::open("postgres://nobody@127.0.0.1:1/none", Options::default()) {
        Err(Error::Database(m)) => {
            assert!(m.contains("postgres://nobody@127.0.0.1:1/none"), "{m}");
            assert!(m.contains("refused"), "the cause is named: {m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        PgStore::open("postgres://a b c", Options::default()),
        Err(Error::Database(_))
    ));
}

/// Where no PostgreSQL is running, the tests start their own from the installed binaries.
#[test]
fn a_throwaway_server_starts_from_the_installed_binaries() {
    let url = cairn_store_postgres::testing::throwaway_server().unwrap();
    let s = PgStore::open(&url, Options::default()).unwrap();
    assert_eq!(s.schema_version().unwrap(), latest());
    s.unit(|tx| tx.append_log(&entry("x", 1))).unwrap();
    assert_eq!(cairn_store_tests::log_settled(&s, 0, 10, 1).len(), 1);
}

/// Work any node may do (firing timers) skips an instance another unit holds, instead of
/// waiting for it.
#[test]
fn claiming_an_instance_skips_one_held_elsewhere() {
    use cairn_store::Claim;
    let (s, _db) = open();
    let inst = cairn_store_tests::instance(
        "default",
        "i",
        "m",
        cairn_core::Status::Running,
        &["a"],
        &[],
    );
    s.unit(move |tx| tx.insert_instance(&inst)).unwrap();
    let holding = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let (h, r) = (Arc::clone(&holding), Arc::clone(&release));
    let s1 = s.clone();
    let holder = std::thread::spawn(move || {
        s1.unit(move |tx| {
            tx.instance("default", "i")?;
            h.wait();
            r.wait();
            Ok(())
        })
        .unwrap()
    });
    holding.wait();
    let busy = s.unit(|tx| tx.claim_instance("default", "i")).unwrap();
    let missing = s.unit(|tx| tx.claim_instance("default", "nope")).unwrap();
    release.wait();
    holder.join().unwrap();
    assert_eq!(busy, Claim::Busy);
    assert_eq!(missing, Claim::Missing);
    assert!(
        matches!(s.unit(|tx| tx.claim_instance("default", "i")).unwrap(), Claim::Got(i) if i.id == "i")
    );
}

/// The schema version every migration leads to.
fn latest() -> u32 {
    cairn_store_postgres::MIGRATIONS.last().unwrap().0
}
