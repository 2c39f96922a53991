//! Shared by the integration tests that run `cairn serve` as a real process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Starts `cairn serve --listen LISTEN [EXTRA...] --data DATA` and reads its first line.
/// Returns the process, the URL it announced and that line, or `None` (after reaping it)
/// if it did not come up listening, e.g. while a killed server's port lingers.
pub fn spawn_serve(data: &Path, listen: &str, extra: &[&str]) -> Option<(Child, String, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--listen", listen])
        .args(extra)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    match line.split_whitespace().find(|w| w.starts_with("http://")) {
        Some(url) if line.contains("listening") => {
            let url = url.to_string();
            Some((child, url, line))
        }
        _ => {
            let _ = child.wait();
            None
        }
    }
}

/// Runs `cairn ARGS` with these environment variables set (and `CAIRN_SERVER` unset
/// unless given): exit code, stdout, stderr.
fn cairn(env: &[(&str, &std::ffi::OsStr)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args).env_remove("CAIRN_SERVER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs `cairn ARGS` against the server at `url`, with a data directory that must never be
/// opened: exit code, stdout, stderr.
#[allow(dead_code)]
pub fn run_at(url: &str, args: &[&str]) -> (i32, String, String) {
    cairn(
        &[
            ("CAIRN_SERVER", url.as_ref()),
            ("CAIRN_DATA", "/nonexistent/never-opened".as_ref()),
        ],
        args,
    )
}

/// `cairn --json ARGS` against `url`, which must succeed: its output as JSON (or a string).
#[allow(dead_code)]
pub fn ok_at(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run_at(url, &all);
    assert_eq!(code, 0, "cairn {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or(Value::String(out))
}

/// A free port on 127.0.0.1.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process the test started, killed when the test ends, also when it panics, so no
/// server or worker outlives a failed test.
#[allow(dead_code)]
pub struct Killed(pub Child);

impl std::ops::Deref for Killed {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cairn serve` on 127.0.0.1:`port`, retried while a killed server's port lingers.
#[allow(dead_code)]
pub fn serve_on(data: &Path, port: u16) -> Killed {
    serve_with(data, port, &[])
}

/// [`serve_on`] with more arguments.
#[allow(dead_code)]
pub fn serve_with(data: &Path, port: u16, extra: &[&str]) -> Killed {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some((child, _, _)) = spawn_serve(data, &format!("127.0.0.1:{port}"), extra) {
            return Killed(child);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not come back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs `cairn ARGS` in embedded mode on the data directory `data`: exit code, stdout,
/// stderr.
#[allow(dead_code)]
pub fn run_in(data: &Path, args: &[&str]) -> (i32, String, String) {
    cairn(&[("CAIRN_DATA", data.as_os_str())], args)
}

/// `cairn --json ARGS` in embedded mode, which must succeed: its output as JSON (or a
/// string).
#[allow(dead_code)]
pub fn ok_in(data: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run_in(data, &all);
    assert_eq!(code, 0, "cairn {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or(Value::String(out))
}

/// What `cairn bench W4 --instances 1000` must print: every instance and its history
/// rows loaded, the sample verified, and each measurement there.
#[allow(dead_code)]
pub fn assert_w4_line(line: &Value) {
    assert_eq!(
        (
            line["instances"].as_u64(),
            line["history_rows"].as_u64(),
            line["verified_sample"].as_u64()
        ),
        (Some(1000), Some(10_000), Some(100)),
        "{line}"
    );
    for key in [
        "ready_ms",
        "idle_rss_mb",
        "get_p99_ms",
        "list_by_state_p99_ms",
        "list_by_label_p99_ms",
        "w1_events_ratio",
        "w1_tasks_ratio",
    ] {
        assert!(line[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {line}");
    }
}
