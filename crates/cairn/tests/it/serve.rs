//! `cairn serve` as a real process on a real socket: it prints its address, answers, holds
//! the data directory (the embedded CLI talks to it instead), and on SIGTERM finishes and
//! exits cleanly with its data intact; it logs readable lines or JSON lines.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_answers_holds_the_directory_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, _) =
        common::spawn_serve(dir.path(), "127.0.0.1:0", &[]).expect("cairn serve started");
    let addr = url.trim_start_matches("http://").to_string();

    let (status, body) = http(&addr, "GET", "/healthz", "");
    assert_eq!((status, body.contains("\"ok\"")), (200, true), "{body}");
    let machine =
        r#"{"machine": "m", "initial": "a", "states": {"a": {"on": {"go": "b"}}, "b": {}}}"#;
    assert_eq!(http(&addr, "POST", "/v1/machines", machine).0, 201);
    assert_eq!(
        http(
            &addr,
            "POST",
            "/v1/instances",
            r#"{"machine": "m", "id": "i"}"#
        )
        .0,
        201
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            "/v1/instances/i/events",
            r#"{"event": "go"}"#
        )
        .0,
        200
    );

    // The embedded CLI on the held directory talks to the server instead.
    let cli = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["ls", "--data"])
        .arg(dir.path())
        .env_remove("CAIRN_SERVER")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&cli.stderr);
    assert!(
        cli.status.success() && err.contains(&format!("talking to it at {url}")),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&cli.stdout).contains('i'));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "cairn serve exited with {status} on SIGTERM"
    );
    assert!(
        !dir.path().join("cairn.server").exists(),
        "a server that stops removes its record"
    );

    let show = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--json", "show", "i", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        (v["version"].as_u64(), v["configuration"][0].as_str()),
        (Some(2), Some("b"))
    );
}

#[test]
fn with_auth_on_the_cli_needs_a_token_created_beforehand() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--json", "token", "create", "--role", "admin", "--scope", "*", "--name", "ops",
            "--data",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(token.starts_with("cairn_") && token.len() > 40);

    let (mut child, url, line) = common::spawn_serve(dir.path(), "127.0.0.1:0", &["--auth", "on"])
        .expect("cairn serve started");
    assert!(line.contains("auth on"), "{line}");
    let cli = |args: &[&str], token: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.args(args)
            .env("CAIRN_SERVER", &url)
            .env_remove("CAIRN_TOKEN");
        if let Some(t) = token {
            c.env("CAIRN_TOKEN", t);
        }
        c.output().unwrap()
    };
    let denied = cli(&["ls"], None);
    assert_eq!(denied.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("bearer token"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let ok = cli(&["--json", "ls"], Some(&token));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // An admin makes a viewer over HTTP; the viewer reads but cannot write.
    let made = cli(
        &["--json", "token", "create", "--role", "viewer"],
        Some(&token),
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let viewer = serde_json::from_slice::<serde_json::Value>(&made.stdout).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cli(&["machines"], Some(&viewer)).status.success());
    let write = cli(&["start", "nothing"], Some(&viewer));
    assert_eq!(write.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&write.stderr).contains("needs the operator role"));
    let listed = cli(&["--json", "token", "ls"], Some(&token));
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&viewer),
        "secrets are never listed"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The poison pills of an earlier Cairn, and today's hostile requests: the server refuses
/// what it can, fails only the instance a stored pill belongs to, keeps serving, survives
/// SIGKILL and restarts cleanly with every other instance intact and `verify` passing.
#[test]
fn poison_pills_fail_their_instance_never_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // An earlier Cairn accepted a timer guard of 5,000 terms: plant it as it was stored.
    let tiny = dir.path().join("tiny.yaml");
    std::fs::write(&tiny, "machine: tiny\ninitial: a\nstates: { a: {} }\n").unwrap();
    common::ok_in(data, &["apply", tiny.to_str().unwrap()]);
    let pill = vec!["1"; 5000].join(" + ");
    let definition = serde_json::json!({
        "machine": "old",
        "initial": "idle",
        "states": {
            "idle": {"on": {"arm": "armed", "go": "done"}},
            "armed": {"after": {"1s": {"target": "idle", "guard": format!("{pill} > 0")}}},
            "done": {"type": "final"}
        }
    });
    {
        let db = rusqlite::Connection::open(data.join("cairn.db")).unwrap();
        db.execute(
            "INSERT INTO machines (namespace, name, version, digest, definition, created_at) VALUES ('default', 'old', 1, 'old', ?1, '2026-01-01T00:00:00Z')",
            [definition.to_string()],
        )
        .unwrap();
    }
    for id in ["armed", "calm"] {
        common::ok_in(data, &["start", "old", "--id", id]);
    }
    common::ok_in(data, &["send", "armed", "arm"]);
    let port = common::free_port();
    let server = common::serve_on(data, port);
    let url = format!("http://127.0.0.1:{port}");
    let addr = format!("127.0.0.1:{port}");
    // The armed timer comes due within a second or two and fails its instance alone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let i = common::ok_at(&url, &["show", "armed"]);
        if i["status"] == "failed" {
            assert!(
                i["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("beyond what Cairn evaluates"),
                "{i}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the timer never fired: {i}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Today's pills are refused at the door, with a problem naming the limit.
    let chain = vec!["1"; 10_000].join(" + ");
    let deep = format!(
        "{{\"machine\": \"deep\", \"initial\": \"a\", \"states\": {{\"a\": {{}}}}, \"context\": {{\"x\": {}1{}}}}}",
        "[".repeat(70),
        "]".repeat(70)
    );
    for (path, body) in [
        (
            "/v1/machines",
            format!(
                "{{\"machine\": \"m\", \"initial\": \"a\", \"states\": {{\"a\": {{\"on\": {{\"go\": {{\"target\": \"a\", \"guard\": \"{chain} > 0\"}}}}}}}}}}"
            ),
        ),
        ("/v1/machines", deep),
        (
            "/v1/triggers",
            format!(
                "{{\"name\": \"t\", \"machine\": \"old\", \"on_status\": \"completed\", \"when\": \"{chain} > 0\", \"start\": {{\"machine\": \"old\"}}}}"
            ),
        ),
    ] {
        let (status, problem) = http(&addr, "POST", path, &body);
        assert_eq!(status, 400, "{path}: {problem}");
        assert!(problem.contains("limit"), "{path}: {problem}");
    }
    // The calm instance of the same machine goes on; the server answers all along.
    assert_eq!(
        common::ok_at(&url, &["send", "calm", "go"])["status"],
        "completed"
    );
    drop(server); // SIGKILL
    let server = common::serve_on(data, port);
    assert_eq!(http(&addr, "GET", "/healthz", "").0, 200);
    let v = common::ok_at(&url, &["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(common::ok_at(&url, &["show", "armed"])["status"], "failed");
    drop(server);
}

/// `log_format`: `text` gives readable lines; `auto` on a pipe (not a terminal) gives JSON.
#[test]
fn serve_logs_text_or_json_lines() {
    for (format, json) in [("text", false), ("auto", true)] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .env("CAIRN_LOG_FORMAT", format)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.contains("listening"), "{line}");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let logs = String::from_utf8_lossy(&out.stderr);
        let first = logs.lines().find(|l| l.contains("listening")).unwrap_or("");
        assert!(!first.is_empty(), "{format}: {logs}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(first).is_ok(),
            json,
            "{format}: {first}"
        );
    }
}
