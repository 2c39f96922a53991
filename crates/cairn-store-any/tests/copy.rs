//! The copy contract (`cairn_store::Export` / `Import`) between the two backends: a real
//! SQLite store copied into a real PostgreSQL database holds the same instances, history,
//! log positions and figures, row for row; a second copy into the same database is
//! refused and changes nothing; PostgreSQL exports what it imported.

use cairn_core::Status;
use cairn_store::{Export, Import, NewLogEntry, Reader, TABLES};
use cairn_store_any::testing::TestDb;
use cairn_store_any::{PgOptions, PgStore, SqliteOptions, SqliteStore};
use cairn_store_tests::{Units, history, instance};
use serde_json::json;

#[test]
fn a_sqlite_store_copies_into_postgres_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    for (ns, id, labels) in [
        ("default", "a", vec![("team", "x")]),
        ("default", "b", vec![]),
        // Tabs, newlines and backslashes in a plain text column (COPY's own separators).
        ("other", "a", vec![("k", "v\tw\\x\ny\rz"), ("team", "y")]),
    ] {
        let mut inst = instance(ns, id, "m", Status::Running, &["s"], &labels);
        inst.context = json!({"text": "ünïcode, \"quotes\", and\nnewlines", "n": 1.5});
        sqlite
            .unit(move |tx| {
                tx.insert_instance(&inst)?;
                tx.append_history(&history(ns, id, 1))?;
                tx.append_history(&history(ns, id, 2))?;
                tx.append_log(&NewLogEntry {
                    namespace: ns.into(),
                    instance_id: id.into(),
                    kind: "event".into(),
                    version: 2,
                    data: json!({"event": "go"}),
                    created_at: chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000)
                        .unwrap(),
                })?;
                Ok(())
            })
            .unwrap();
    }
    let db = TestDb::create().expect("a test database");
    let pg = PgStore::open(&db.url, PgOptions::default()).unwrap();

    let mut rows = 0;
    let copied = pg.import(&sqlite, &mut || rows += 1).unwrap();
    assert_eq!(copied.len(), TABLES.len());
    let mut total = 0;
    for (t, n) in &copied {
        assert_eq!(*n, sqlite.count(t).unwrap(), "{t}");
        assert_eq!(pg.count(t).unwrap(), *n, "{t}");
        total += n;
    }
    assert_eq!(rows, total);
    assert!(total >= 3 + 3 + 6 + 3, "{copied:?}");

    for (ns, id) in sqlite.instance_ids(None).unwrap() {
        assert_eq!(
            pg.instance(&ns, &id).unwrap(),
            sqlite.instance(&ns, &id).unwrap(),
            "{ns}/{id}"
        );
        assert_eq!(
            pg.history(&ns, &id, 0, 100).unwrap(),
            sqlite.history(&ns, &id, 0, 100).unwrap(),
            "{ns}/{id}"
        );
    }
    // The label with COPY's separators in it is found by its exact value.
    let page = pg
        .instances(&cairn_store::InstanceFilter {
            namespace: "other".into(),
            labels: vec![("k".into(), "v\tw\\x\ny\rz".into())],
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.items.len(), 1);
    // Log positions are kept: a stream resumes where it was.
    assert_eq!(pg.log(0, 100).unwrap(), sqlite.log(0, 100).unwrap());
    let sorted = |mut f: Vec<cairn_store::Figure>| {
        f.retain(|f| f.value != 0);
        f.sort_by(|a, b| {
            (&a.namespace, &a.kind, &a.name, &a.detail).cmp(&(
                &b.namespace,
                &b.kind,
                &b.name,
                &b.detail,
            ))
        });
        f
    };
    assert_eq!(
        sorted(pg.figures(None).unwrap()),
        sorted(sqlite.figures(None).unwrap())
    );

    // A second copy is refused, and nothing changes.
    let err = pg.import(&sqlite, &mut || {}).unwrap_err();
    assert!(
        matches!(&err, cairn_store::Error::Conflict(m) if m.contains("already holds Cairn data")),
        "{err}"
    );
    assert_eq!(pg.count("instances").unwrap(), 3);

    // PostgreSQL exports what it holds, with the same column values.
    let mut ids = Vec::new();
    let n = pg
        .export("instances", &mut |cols, values| {
            let at = cols.iter().position(|c| c == "id").unwrap();
            ids.push(values[at].clone().unwrap());
            Ok(())
        })
        .unwrap();
    ids.sort();
    assert_eq!((n, ids), (3, vec!["a".to_string(), "a".into(), "b".into()]));
    assert!(matches!(
        sqlite.export("no_such_table", &mut |_, _| Ok(())),
        Err(cairn_store::Error::NotFound(_))
    ));
}
