//! Throwaway databases for tests, on the PostgreSQL the test run finds:
//! `CAIRN_TEST_POSTGRES_URL` when set; else the server on 127.0.0.1:5432 (as user
//! `postgres`); else a server started for this test process from the installed
//! PostgreSQL binaries (`initdb`, `pg_ctl`), stopped when the process ends.
//!
//! Each [`TestDb`] is a database of its own, created empty and dropped (with its
//! connections) when the value is dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use postgres::{Client, NoTls};

/// A database made for one test.
pub struct TestDb {
    admin: String,
    name: String,
    /// The database's URL.
    pub url: String,
}

fn admin_url() -> Result<String, String> {
    static ADMIN: OnceLock<Result<String, String>> = OnceLock::new();
    ADMIN
        .get_or_init(|| {
            if let Ok(url) = std::env::var("CAIRN_TEST_POSTGRES_URL") {
                return Ok(url);
            }
            let local = "127.0.0.1:5432".parse().expect("an address");
            if TcpStream::connect_timeout(&local, Duration::from_secs(1)).is_ok() {
                return Ok("postgres://postgres@127.0.0.1:5432/postgres".into());
            }
            throwaway_server()
        })
        .clone()
}

/// `url` naming database `db` instead of its own.
pub fn with_database(url: &str, db: &str) -> String {
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let start = head.find("://").map_or(0, |i| i + 3);
    let host_end = head[start..].find('/').map_or(head.len(), |i| start + i);
    format!("{}/{db}{query}", &head[..host_end])
}

/// Runs `f` on a thread of its own: the synchronous driver cannot run on a thread that
/// drives an async runtime, and tests set up from `#[tokio::test]`s.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("the database work panicked"))
}

impl TestDb {
    /// A new, empty database.
    pub fn create() -> Result<TestDb, String> {
        off_runtime(TestDb::create_here)
    }

    fn create_here() -> Result<TestDb, String> {
        let admin = admin_url()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!(
            "cairn_test_{now}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut c = Client::connect(&admin, NoTls)
            .map_err(|e| format!("cannot reach the test PostgreSQL at {admin}: {e}"))?;
        // Databases of test processes that were killed before they could drop theirs.
        if let Ok(rows) = c.query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'cairn\\_test\\_%'",
            &[],
        ) {
            for r in rows {
                let old: String = r.get(0);
                let born = old.split('_').nth(2).and_then(|s| s.parse::<u64>().ok());
                if born.is_some_and(|b| b + 2 * 3600 < now) {
                    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)"));
                }
            }
        }
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(TestDb {
            url: with_database(&admin, &name),
            admin,
            name,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (&self.admin, &self.name);
        off_runtime(|| {
            if let Ok(mut c) = Client::connect(admin, NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        });
    }
}

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Runs `cmd` as user `postgres` when this process is root (initdb refuses root).
fn as_owner(bin: &Path, args: &[&str]) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

/// Starts a PostgreSQL server for this process from the installed binaries, on a free
/// port of 127.0.0.1, and returns the URL of its `postgres` database. A watchdog stops
/// it and removes its files when this process ends.
pub fn throwaway_server() -> Result<String, String> {
    let bin = pg_bin().ok_or("no PostgreSQL at 127.0.0.1:5432 and no PostgreSQL binaries under /usr/lib/postgresql to start one; set CAIRN_TEST_POSTGRES_URL")?;
    let dir = std::env::temp_dir().join(format!("cairn-pg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let _ = Command::new("chown").arg("postgres").arg(&dir).status();
    let data = dir.join("data");
    let data_s = data.to_string_lossy().to_string();
    let ok = as_owner(
        &bin.join("initdb"),
        &["-D", &data_s, "-A", "trust", "-U", "postgres"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .map_err(|e| format!("initdb: {e}"))?;
    if !ok.success() {
        return Err("initdb failed".into());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
        dir.display()
    );
    let log = dir.join("log").to_string_lossy().to_string();
    let ok = as_owner(
        &bin.join("pg_ctl"),
        &["-D", &data_s, "-l", &log, "-o", &opts, "-w", "start"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .map_err(|e| format!("pg_ctl: {e}"))?;
    if !ok.success() {
        return Err(format!("pg_ctl start failed; see {log}"));
    }
    // A watchdog stops the server once this process is gone, however it ends.
    let stop = format!(
        "while [ -e /proc/{pid} ]; do sleep 1; done; {ctl} -D {data_s} -m immediate stop; rm -rf {dir}",
        pid = std::process::id(),
        ctl = bin.join("pg_ctl").display(),
        dir = dir.display()
    );
    let watchdog = if as_owner(Path::new("true"), &[]).get_program() == "runuser" {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &stop]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &stop]);
        c
    };
    let mut watchdog = watchdog;
    watchdog
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("watchdog: {e}"))?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}
