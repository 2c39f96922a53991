//! The shared behaviour suite on SQLite, plus what only SQLite has: the directory lock,
//! migrations from each earlier schema, and durability settings.

use cairn_store::{Error, Reader};
use cairn_store_sqlite::{MIGRATIONS, Options, SqliteStore};
use cairn_store_tests::Units;

fn open() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Options::default()).unwrap();
    (store, dir)
}

cairn_store_tests::suite!(open());

mod without_group_commit {
    use super::*;
    cairn_store_tests::suite!({
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(
            dir.path(),
            Options {
                group_commit: false,
                ..Options::default()
            },
        )
        .unwrap();
        (store, dir)
    });
}

#[test]
fn a_data_directory_has_one_writing_process() {
    let (store, dir) = open();
    match SqliteStore::open(dir.path(), Options::default()) {
        Err(Error::Locked(msg)) => {
            assert!(msg.contains("in use by another process"), "{msg}");
            assert!(msg.contains("--server"), "{msg}");
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second open of the same directory succeeded"),
    }
    drop(store);
    // Released on close.
    SqliteStore::open(dir.path(), Options::default()).unwrap();
}

#[test]
fn migrations_apply_from_empty_and_from_each_earlier_schema() {
    for start in 0..=MIGRATIONS.len() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut conn = rusqlite::Connection::open(dir.path().join("cairn.db")).unwrap();
            for (i, sql) in MIGRATIONS.iter().enumerate().take(start) {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", (i + 1) as i64)
                    .unwrap();
            }
            let _ = &mut conn;
        }
        let store = SqliteStore::open(dir.path(), Options::default()).unwrap();
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        assert_eq!(
            cairn_store_sqlite::schema_version(&conn).unwrap(),
            MIGRATIONS.len()
        );
        assert!(store.machines("default").unwrap().is_empty());
    }
}

/// Tokens made before subjects existed get `token:<id>`: the actor of what they do now,
/// never their old free-text name.
#[test]
fn tokens_from_before_subjects_get_one_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("cairn.db")).unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(5) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        conn.execute(
            "INSERT INTO tokens (id, name, hash, role, namespaces, created_at) VALUES ('abc', 'ann', 'h', 'admin', '[\"*\"]', '2026-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), Options::default()).unwrap();
    let t = store.token_by_hash("h").unwrap().unwrap();
    assert_eq!((t.name.as_str(), t.subject.as_str()), ("ann", "token:abc"));
}

/// A data directory from before figures: the migration counts what is stored and replays
/// each instance's history for the time spent in states (and when its leaves were entered),
/// so `stats` answers as it did by scanning.
#[test]
fn figures_of_an_older_data_directory_are_counted_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("cairn.db")).unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(10) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        let instance = |id: &str, status: &str, config: &str| {
            conn.execute(
                "INSERT INTO instances (namespace, id, machine, machine_version, status, configuration, context, version, history_seq, labels, created_at, updated_at) \
                 VALUES ('default', ?1, 'm', 1, ?2, ?3, '{}', 1, 1, '{}', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                rusqlite::params![id, status, config],
            )
            .unwrap();
        };
        // (instance, seq, kind, from, to, second)
        let history = |id: &str, seq: i64, kind: &str, from: &str, to: &str, sec: i64| {
            conn.execute(
                "INSERT INTO history (namespace, instance_id, seq, kind, version, event, payload, actor, reason, from_configuration, to_configuration, context, status, microsteps, effects, created_at) \
                 VALUES ('default', ?1, ?2, ?3, ?2, '', '{}', 'a', '', ?4, ?5, '{}', 'running', '[]', '[]', ?6)",
                rusqlite::params![id, seq, kind, from, to, format!("2026-01-01T00:00:{sec:02}Z")],
            )
            .unwrap();
        };
        instance("i1", "completed", r#"["done"]"#);
        history("i1", 1, "start", "[]", r#"["a"]"#, 0);
        history("i1", 2, "event", r#"["a"]"#, r#"["b"]"#, 4);
        history("i1", 3, "pause", r#"["b"]"#, r#"["b"]"#, 5);
        history("i1", 4, "event", r#"["b"]"#, r#"["done"]"#, 10);
        instance("i2", "running", r#"["b"]"#);
        history("i2", 1, "start", "[]", r#"["a"]"#, 0);
        history("i2", 2, "event", r#"["a"]"#, r#"["b"]"#, 2);
        conn.execute(
            "INSERT INTO timers (namespace, instance_id, event, state, due_at, created_at) VALUES ('default', 'i2', 'timer.x', 'b', '2026-01-02T00:00:00Z', '2026-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), Options::default()).unwrap();
    let mut figures: Vec<(String, String, String, i64)> = store
        .figures(Some("default"))
        .unwrap()
        .into_iter()
        .map(|f| (f.kind, f.name, f.detail, f.value))
        .collect();
    figures.sort();
    let f = |k: &str, n: &str, d: &str, v: i64| (k.to_string(), n.to_string(), d.to_string(), v);
    assert_eq!(
        figures,
        [
            // a: 4 s (i1) and 2 s (i2); b: 6 s (i1, the pause kept it); i2 is still in b.
            f("dwell_ms", "m", "a", 6000),
            f("dwell_ms", "m", "b", 6000),
            f("dwell_visits", "m", "a", 2),
            f("dwell_visits", "m", "b", 1),
            f("instances", "m", "completed", 1),
            f("instances", "m", "running", 1),
            f("timers", "", "", 1),
            f("transitions", "", "", 5),
        ]
    );
    let i2 = store.instance("default", "i2").unwrap().unwrap();
    assert_eq!(
        i2.entered.get("b").map(|t| t.to_rfc3339()),
        Some("2026-01-01T00:00:02+00:00".to_string())
    );
}

#[test]
fn a_newer_schema_is_refused_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("cairn.db")).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    match SqliteStore::open(dir.path(), Options::default()) {
        Err(Error::Corrupt(msg)) => assert!(msg.contains("newer than this Cairn knows"), "{msg}"),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("opened a database from the future"),
    }
}

#[test]
fn every_connection_is_wal_with_synchronous_full() {
    let (store, _dir) = open();
    let d = store.durability().unwrap();
    assert_eq!(d.journal_mode, "wal");
    assert_eq!(
        (d.writer_synchronous, d.reader_synchronous),
        (2, 2),
        "{d:?}"
    );
    assert_eq!(d.label(), "sqlite wal synchronous=FULL");
}

#[test]
fn backup_is_online_and_restore_replaces_the_database() {
    use cairn_core::Status;
    let (store, dir) = open();
    for i in 0..50 {
        let inst = cairn_store_tests::instance(
            "default",
            &format!("i{i}"),
            "m",
            Status::Running,
            &["a"],
            &[],
        );
        store.unit(move |tx| tx.insert_instance(&inst)).unwrap();
    }
    // Writers carry on while the backup runs.
    let writer = {
        let s = store.clone();
        std::thread::spawn(move || {
            for i in 50..200 {
                let inst = cairn_store_tests::instance(
                    "default",
                    &format!("i{i}"),
                    "m",
                    Status::Running,
                    &["a"],
                    &[],
                );
                s.unit(move |tx| tx.insert_instance(&inst)).unwrap();
            }
        })
    };
    let file = dir.path().join("backup.db");
    let bytes = store.backup(&file).unwrap();
    assert!(bytes > 0);
    writer.join().unwrap();
    assert!(
        matches!(store.backup(&file), Err(Error::Conflict(_))),
        "an existing file is never overwritten"
    );
    let in_backup = {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.query_row("SELECT COUNT(*) FROM instances", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert!((50..=200).contains(&in_backup), "{in_backup}");

    // Restoring into a live directory is refused; into a free one it works.
    assert!(matches!(
        SqliteStore::restore(dir.path(), &file),
        Err(Error::Locked(_))
    ));
    let other = tempfile::tempdir().unwrap();
    {
        let s = SqliteStore::open(other.path(), Options::default()).unwrap();
        let inst =
            cairn_store_tests::instance("default", "only-here", "m", Status::Running, &["a"], &[]);
        s.unit(move |tx| tx.insert_instance(&inst)).unwrap();
    }
    SqliteStore::restore(other.path(), &file).unwrap();
    let restored = SqliteStore::open(other.path(), Options::default()).unwrap();
    assert_eq!(
        restored.instance_ids(Some("default")).unwrap().len() as i64,
        in_backup
    );
    assert_eq!(restored.instance("default", "only-here").unwrap(), None);

    // Garbage is refused before anything is touched.
    drop(restored);
    let junk = other.path().join("junk.db");
    std::fs::write(
        &junk,
        b"not a database at all, not even close to one.......",
    )
    .unwrap();
    assert!(matches!(
        SqliteStore::restore(other.path(), &junk),
        Err(Error::Corrupt(_))
    ));
    let still = SqliteStore::open(other.path(), Options::default()).unwrap();
    assert_eq!(
        still.instance_ids(Some("default")).unwrap().len() as i64,
        in_backup
    );
}
