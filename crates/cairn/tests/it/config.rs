//! Settings are layered (defaults < cairn.toml < cairn.local.toml < CAIRN_* < flags) and
//! every bad value is refused at start with the setting and where it came from.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn cairn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.args(args).current_dir(dir);
    for v in [
        "CAIRN_DATA",
        "CAIRN_NAMESPACE",
        "CAIRN_LISTEN",
        "CAIRN_AUTH",
        "CAIRN_MAX_PAYLOAD",
        "CAIRN_CONFIG",
        "CAIRN_SERVER",
    ] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn setting<'a>(v: &'a Value, key: &str) -> (&'a Value, &'a str) {
    (&v[key]["value"], v[key]["source"].as_str().unwrap())
}

#[test]
fn layers_apply_in_order_and_name_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("cairn.toml"), "namespace = \"from-file\"\nlisten = \"127.0.0.1:9001\"\nmax_payload = 100\ndata = \"./store\"\n[http]\nmax_streams = 3\n").unwrap();
    std::fs::write(
        d.join("cairn.local.toml"),
        "namespace = \"from-local\"\n[retention]\nfinished_after = \"30d\"\n",
    )
    .unwrap();
    let (code, out, err) = cairn(d, &["--json", "config"], &[("CAIRN_MAX_PAYLOAD", "200")]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(setting(&v, "namespace").0, "from-local");
    assert!(setting(&v, "namespace").1.ends_with("cairn.local.toml"));
    assert_eq!(setting(&v, "listen").0, "127.0.0.1:9001");
    assert!(setting(&v, "listen").1.ends_with("cairn.toml"));
    assert_eq!(
        setting(&v, "max_payload"),
        (&Value::from(200), "environment variable CAIRN_MAX_PAYLOAD")
    );
    assert_eq!(setting(&v, "http.max_streams").0, 3);
    assert_eq!(
        setting(&v, "http.max_page"),
        (&Value::from(1000), "default")
    );
    assert_eq!(setting(&v, "retention.finished_after").0, "30d");
    let (_, out, _) = cairn(
        d,
        &["--json", "--namespace", "from-flag", "config"],
        &[("CAIRN_NAMESPACE", "from-env")],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        setting(&v, "namespace"),
        (&Value::from("from-flag"), "flag --namespace")
    );
    // The configured data directory and namespace are the ones commands use.
    let (code, _, err) = cairn(d, &["ls"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(d.join("store").join("cairn.db").exists());
}

/// (file, its text, environment, arguments, expected in the error).
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    &'static str,
);

#[test]
fn bad_settings_are_refused_naming_setting_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[Case] = &[
        (
            "cairn.toml",
            "[http]\nrequest_timeout = \"soon\"\n",
            &[],
            &["serve"],
            "setting `http.request_timeout` = `soon` (from ",
        ),
        (
            "cairn.local.toml",
            "auth = \"maybe\"\n",
            &[],
            &["serve"],
            "setting `auth` = `maybe` (from ",
        ),
        (
            "cairn.toml",
            "",
            &[("CAIRN_LISTEN", "nowhere")],
            &["serve"],
            "setting `listen` = `nowhere` (from environment variable CAIRN_LISTEN)",
        ),
        (
            "cairn.toml",
            "",
            &[],
            &["serve", "--listen", "bad"],
            "setting `listen` = `bad` (from flag --listen)",
        ),
        (
            "cairn.toml",
            "lisen = \"x\"\n",
            &[],
            &["ls"],
            "unknown field: found `lisen`",
        ),
        (
            "cairn.toml",
            "[retention]\nmax_history = 0\n",
            &[],
            &["ls"],
            "setting `retention.max_history`",
        ),
        (
            "cairn.toml",
            "max_payload = \"big\"\n",
            &[],
            &["ls"],
            "max_payload",
        ),
    ];
    for (file, text, env, args, expected) in cases {
        let _ = std::fs::remove_file(d.join("cairn.toml"));
        let _ = std::fs::remove_file(d.join("cairn.local.toml"));
        std::fs::write(d.join(file), text).unwrap();
        let (code, _, err) = cairn(d, args, env);
        assert_eq!(code, 2, "{file}: {text} {env:?} {args:?}: {err}");
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
        if !expected.contains("environment")
            && !expected.contains("flag")
            && expected.starts_with("setting")
        {
            assert!(err.contains(file), "the file is named: {err}");
        }
    }
    // Commands that touch no state do not read the configuration.
    std::fs::write(d.join("cairn.toml"), "lisen = 1\n").unwrap();
    let machine = d.join("m.yaml");
    std::fs::write(&machine, "machine: m\ninitial: a\nstates: {a: {}}\n").unwrap();
    assert_eq!(cairn(d, &["validate", machine.to_str().unwrap()], &[]).0, 0);
}
