//! The built-in executors inside a real `cairn serve`, configured by a `cairn.toml`: an
//! allowlisted command run per task with a secret, refusals at apply and claim, secrets
//! hidden by `cairn config`, and a server SIGKILLed while commands run: afterwards every
//! instance completes, each task completion applied once, and `verify` passes.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

const SECRET: &str = "tok-91be77";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(dir: &Path) -> PathBuf {
    let file = dir.join("cairn.toml");
    std::fs::write(
        &file,
        format!(
            "[executors.exec]\nallow = [\"sh\"]\noutput = 1024\n\n[secrets]\ntoken = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    file
}

fn serve(data: &Path, config: &Path) -> (Server, String) {
    for _ in 0..50 {
        if let Some((child, url, _)) =
            common::spawn_serve(data, "127.0.0.1:0", &["--config", config.to_str().unwrap()])
        {
            return (Server(child), url);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("cairn serve did not start");
}

use common::{ok_at as ok, run_at as run};

const MACHINE: &str = r#"
machine: build
initial: compile
states:
  compile:
    task:
      exec:
        command: sh
        args: "['-c', context.script]"
        env: { TOKEN: "'{{secret.token}}'" }
      input: "{'target': context.target}"
      timeout: 2s
      retry: { max_attempts: 20, initial: 50ms, max: 200ms }
    on:
      task.done: { target: built, assign: { result: "event.payload.json" } }
      task.failed: { target: broken, assign: { error: "event.payload.error" } }
  built: { type: final }
  broken: { type: final, status: failed }
"#;

#[test]
fn exec_tasks_run_inside_the_server_with_its_allowlist_and_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (_s, url) = serve(&tmp.path().join("data"), &cfg);
    let u = url.as_str();
    let file = tmp.path().join("build.yaml");
    std::fs::write(&file, MACHINE).unwrap();
    ok(u, &["apply", file.to_str().unwrap()]);
    let script = r#"printf '{"target": %s, "token_len": %s}' "$(cat)" "${#TOKEN}""#;
    let input = serde_json::json!({"script": script, "target": "app"}).to_string();
    ok(u, &["start", "build", "--id", "b1", "--input", &input]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let shown = ok(u, &["show", "b1"]);
        if shown["status"] != "running" {
            break shown;
        }
        assert!(Instant::now() < deadline, "b1 never finished: {shown}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["context"]["result"]["target"]["target"], "app");
    assert_eq!(
        shown["context"]["result"]["token_len"],
        SECRET.len(),
        "the command got the secret"
    );
    let tasks = ok(u, &["tasks", "--queue", "cairn.exec"]);
    assert_eq!(tasks[0]["status"], "completed", "{tasks}");
    let export = run(u, &["export", "b1", "--format", "json"]).1;
    assert!(export.contains("cairn:exec"), "{export}");
    assert!(!export.contains(SECRET));

    // A command off the allowlist is refused at apply, with the setting named.
    std::fs::write(&file, MACHINE.replace("command: sh", "command: bash")).unwrap();
    let (code, _, err) = run(u, &["apply", file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("`executors.exec.allow`"), "{err}");
    // Workers cannot claim the executors' queues.
    let (code, _, err) = run(u, &["worker", "--queue", "cairn.exec", "--", "cat"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("built-in executor"), "{err}");
    // `cairn config` names the secret and hides its value.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--json", "config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let d: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(d["secrets.token"]["value"], "(hidden)");
    assert_eq!(d["executors.exec.allow"]["value"][0], "sh");
    assert!(!text.contains(SECRET));
}

#[test]
fn exec_tasks_survive_a_server_killed_while_commands_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let data = tmp.path().join("data");
    let (s, url) = serve(&data, &cfg);
    let file = tmp.path().join("build.yaml");
    std::fs::write(&file, MACHINE).unwrap();
    ok(&url, &["apply", file.to_str().unwrap()]);
    // Each run counts itself in a file named by task id and attempt: the idempotency key.
    let marks = tmp.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let script = format!(
        r#"touch {}/"$CAIRN_TASK_ID-$CAIRN_TASK_ATTEMPT"; sleep 0.3; echo '{{"ok": true}}'"#,
        marks.display()
    );
    let n = 24;
    for i in 0..n {
        let input = serde_json::json!({"script": script, "target": i}).to_string();
        ok(
            &url,
            &[
                "start",
                "build",
                "--id",
                &format!("b{i}"),
                "--input",
                &input,
            ],
        );
    }
    // Kill the server while the first commands run (4 at a time by default).
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&marks).unwrap().count() < 2 {
        assert!(Instant::now() < deadline, "no command started");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(s);
    let (s, url) = serve(&data, &cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = ok(&url, &["ls", "--status", "running", "--limit", "1000"]);
        let running = list["instances"].as_array().map_or(usize::MAX, Vec::len);
        if running == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{running} still running");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(s);
    let engine = cairn_runtime::open_sqlite(
        &data,
        cairn_store_any::SqliteOptions::default(),
        cairn_engine::Config::default(),
    )
    .unwrap();
    let mut attempts = 0;
    for i in 0..n {
        let id = format!("b{i}");
        let inst = engine.get("default", &id).unwrap();
        assert_eq!(inst.status.as_str(), "completed", "{id}");
        let done = engine
            .history("default", &id)
            .unwrap()
            .iter()
            .filter(|h| h.kind == cairn_store::HistoryKind::Event && h.event == "task.done")
            .count();
        assert_eq!(done, 1, "{id}: task.done applied {done} times");
        let t = &engine.tasks("default", None, None, Some(&id)).unwrap()[0];
        attempts += cairn_store::Reader::attempts(engine.store(), &t.id)
            .unwrap()
            .len();
        let v = engine.verify("default", &id).unwrap();
        assert!(v.ok, "{id}: {:?}", v.problem);
    }
    let runs = std::fs::read_dir(&marks).unwrap().count();
    eprintln!("{n} instances, {attempts} attempts, {runs} command runs over one kill");
    assert!(attempts > n, "the kill interrupted no attempt");
}
