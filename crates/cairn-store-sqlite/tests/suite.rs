//! The shared behaviour suite on SQLite, plus what only SQLite has: the directory lock,
//! migrations from each earlier schema, and durability settings.

use cairn_store::{Error, Reader, Store};
use cairn_store_sqlite::{MIGRATIONS, Options, SqliteStore};

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
        store.write(move |tx| tx.insert_instance(&inst)).unwrap();
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
                s.write(move |tx| tx.insert_instance(&inst)).unwrap();
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
        s.write(move |tx| tx.insert_instance(&inst)).unwrap();
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
