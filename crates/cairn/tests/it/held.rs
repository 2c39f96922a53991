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
}
