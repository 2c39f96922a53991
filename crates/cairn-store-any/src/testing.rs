//! The backend tests run on: SQLite in a temporary directory, or PostgreSQL when
//! `CAIRN_TEST_BACKEND=postgres` (a database of the test's own, see
//! `cairn_store_postgres::testing`). The same tests run on both.

use std::path::PathBuf;

pub use cairn_store_postgres::testing::TestDb;

use crate::AnyStore;

/// Whether this test run is on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("CAIRN_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Where one test keeps its data: a directory, or a database; dropped with everything in it.
pub struct Backend {
    dir: tempfile::TempDir,
    db: Option<TestDb>,
}

impl Backend {
    /// A store of its own for one test: a temporary directory, and on PostgreSQL a
    /// database of its own.
    pub fn new() -> Backend {
        Backend {
            dir: tempfile::tempdir().expect("a temporary directory"),
            db: on_postgres().then(|| TestDb::create().expect("a test database")),
        }
    }

    /// The SQLite data directory (also there on PostgreSQL, for files a test writes).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The same directory, borrowed.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The database URL, on PostgreSQL.
    pub fn database(&self) -> Option<&str> {
        self.db.as_ref().map(|d| d.url.as_str())
    }

    /// Opens the store (again: a second open after dropping the first sees the same data).
    pub fn open(&self) -> AnyStore {
        let dir = self.dir();
        cairn_store_postgres::testing::off_runtime(|| AnyStore::open(&dir, self.database()))
            .expect("the test store opens")
    }

    /// Runs one SQL statement straight on the database, behind the store's back (to
    /// tamper with records, say). The statement must suit both SQLite and PostgreSQL.
    pub fn sql(&self, statement: &str) {
        cairn_store_postgres::testing::off_runtime(|| self.sql_here(statement))
    }

    fn sql_here(&self, statement: &str) {
        match self.database() {
            Some(url) => {
                let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
                c.batch_execute(statement).expect("the statement runs");
            }
            None => {
                let c = rusqlite::Connection::open(self.dir().join("cairn.db")).expect("open");
                c.execute_batch(statement).expect("the statement runs");
            }
        }
    }

    /// `--data DIR` or `--database URL`, for a `cairn` process on this backend.
    pub fn args(&self) -> Vec<String> {
        match self.database() {
            Some(url) => vec!["--database".into(), url.into()],
            None => vec!["--data".into(), self.dir().to_string_lossy().into_owned()],
        }
    }
}

impl Default for Backend {
    fn default() -> Backend {
        Backend::new()
    }
}
