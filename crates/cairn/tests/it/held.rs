//! A data directory a `cairn serve` holds: commands on it talk to that server (saying so
//! once on stderr) instead of failing; a second server, or a restore, names the URL; a
//! server killed with SIGKILL leaves a record that no longer counts; `server` in
//! `cairn.toml` points commands at a server too.

use std::process::Command;

use crate::common::{self, Killed, ok_at, run_in};

#[test]
fn commands_on_a_directory_a_server_holds_talk_to_that_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, url, _) = common::spawn_serve(&data, "127.0.0.1:0", &[]).expect("cairn serve");
    let mut server = Killed(child);
    let file = dir.path().join("m.yaml");
    std::fs::write(
        &file,
        "machine: m\ninitial: a\nstates:\n  a: { on: { go: b } }\n  b: { type: final }\n",
    )
    .unwrap();

    let (code, out, err) = run_in(&data, &["apply", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied machine `m` version 1"), "{out}");
    assert!(
        err.contains(&format!("is held by `cairn serve` (pid {})", server.id()))
            && err.contains(&format!("talking to it at {url}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "said once: {err}");
    let (code, _, err) = run_in(&data, &["start", "m", "--id", "i"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ok_at(&url, &["show", "i"])["configuration"],
        serde_json::json!(["a"]),
        "the instance is the server's"
    );

    // Where an error is still right, it names the server.
    let (code, _, err) = run_in(&data, &["serve", "--listen", "127.0.0.1:0"]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("already served at {url}")), "{err}");
    let backup = dir.path().join("b.db");
    let (code, _, err) = run_in(&data, &["backup", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "a backup through the server: {err}");
    let (code, _, err) = run_in(&data, &["restore", backup.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("served by `cairn serve` at {url}")),
        "{err}"
    );

    // `server` in the configuration file: commands go there, whatever the directory.
    let config = dir.path().join("cairn.toml");
    std::fs::write(&config, format!("server = \"{url}\"\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--json", "show", "i"])
        .env_remove("CAIRN_SERVER")
        .env("CAIRN_CONFIG", &config)
        .env("CAIRN_DATA", dir.path().join("elsewhere"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], "i");
    assert!(
        !dir.path().join("elsewhere").exists(),
        "no store was opened"
    );

    // Killed, the server leaves its record behind; it names a pid that holds nothing,
    // so commands open the directory themselves again.
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(data.join("cairn.server").exists());
    let (code, out, err) = run_in(&data, &["ls"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("talking to it"), "{err}");
    assert!(out.contains('i'), "{out}");
    // With no server to follow, `watch` says how to get one instead of hanging.
    let (code, _, err) = run_in(&data, &["watch", "i"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`cairn watch` follows a server"), "{err}");
}

/// `cairn watch` follows an instance's entries as they commit, and when the server dies
/// (SIGKILL) and comes back on the same address, resumes after the last entry it printed:
/// nothing twice, nothing missed.
#[test]
fn watch_follows_an_instance_and_resumes_after_the_server_restarts() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = common::serve_on(&data, port);
    let file = dir.path().join("m.yaml");
    std::fs::write(
        &file,
        "machine: m\ninitial: a\nstates:\n  a: { on: { go: b } }\n  b: { on: { go: a, stop: c } }\n  c: { type: final }\n",
    )
    .unwrap();
    ok_at(&url, &["apply", file.to_str().unwrap()]);
    ok_at(&url, &["start", "m", "--id", "w"]);

    let mut watch = Killed(
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["--server", &url, "--json", "watch", "w"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The entries of `w` as they arrive, until one of `kind` for version `version`.
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let mut until = |kind: &str, version: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{kind}` at version {version}; saw {seen:?}"));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["instance"], "w", "{v}");
            seen.push(v.clone());
            if v["kind"] == kind && v["version"] == version {
                return seen.clone();
            }
        }
    };
    until("started", 1);
    ok_at(&url, &["send", "w", "go"]);
    until("transition", 2);

    // The server dies and comes back on the same address; meanwhile nothing is lost.
    server.kill().unwrap();
    server.wait().unwrap();
    let _server = common::serve_on(&data, port);
    ok_at(&url, &["send", "w", "go"]);
    ok_at(&url, &["send", "w", "go"]);
    let all = until("transition", 4);
    let transitions: Vec<u64> = all
        .iter()
        .filter(|v| v["kind"] == "transition")
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(transitions, [2, 3, 4], "each transition once, in order");
    let positions: Vec<u64> = all
        .iter()
        .map(|v| v["position"].as_u64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions only grow: {positions:?}"
    );
}
