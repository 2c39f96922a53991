//! The built-in executors (the runtime's `ExecutorService`) on a real store (SQLite or PostgreSQL), real processes and a stub HTTP server on
//! 127.0.0.1: `exec` output, exit status, retries, timeout, cancellation killing the
//! command, the allowlist and admin checks at apply; `http` requests built from CEL with
//! secrets filled in, responses as output, retryable and final failures. Secrets never
//! reach the stored task, history or export.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::Status;
use cairn_engine::{Config, Engine, Error, Executors, Role, Secrets, StartRequest, SystemClock};
use cairn_runtime::{ExecutorService, Running};
use cairn_store::Reader;
use cairn_store_any::AnyStore;
use cairn_store_any::testing::Backend;
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-7c1d";

struct W {
    e: Engine<AnyStore>,
    _svc: Running,
    _dir: Backend,
}

fn world(allow: &[&str]) -> W {
    let dir = Backend::new();
    let mut secrets = BTreeMap::new();
    secrets.insert("token".to_string(), SECRET.to_string());
    let e = Engine::new(
        dir.open(),
        Arc::new(SystemClock),
        Config {
            executors: Executors {
                exec_allow: allow.iter().map(|s| s.to_string()).collect(),
                exec_output: 4096,
                secrets: Secrets(secrets),
                ..Executors::default()
            },
            ..Config::default()
        },
    );
    let svc = Running::spawn(ExecutorService::new(e.clone())).unwrap();
    W {
        e,
        _svc: svc,
        _dir: dir,
    }
}

fn exec_machine(timeout: &str, attempts: u32) -> String {
    format!(
        r#"
machine: runner
initial: run
states:
  run:
    task:
      exec:
        command: sh
        args: "['-c', context.script]"
        env: {{ TOKEN: "'{{{{secret.token}}}}'", NAME: "context.name" }}
      input: "{{'n': 1}}"
      timeout: {timeout}
      retry: {{ max_attempts: {attempts}, initial: 10ms, jitter: 0 }}
    on:
      task.done: {{ target: done, assign: {{ out: "event.payload" }} }}
      task.failed: {{ target: failed, assign: {{ err: "event.payload" }} }}
  done: {{ type: final }}
  failed: {{ type: final, status: failed }}
"#
    )
}

fn start(e: &Engine<AnyStore>, id: &str, context: Value) {
    e.start(
        "default",
        StartRequest {
            machine: "runner".into(),
            id: Some(id.into()),
            input: context,
            ..Default::default()
        },
    )
    .unwrap();
}

fn finished(e: &Engine<AnyStore>, id: &str) -> cairn_store::InstanceRecord {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let i = e.get("default", id).unwrap();
        if i.status.is_finished() {
            let v = e.verify("default", id).unwrap();
            assert!(v.ok, "{id}: {:?}", v.problem);
            return i;
        }
        assert!(Instant::now() < deadline, "{id} did not finish: {i:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nothing durable about the instance holds the secret's value.
fn no_secret_stored(e: &Engine<AnyStore>, id: &str) {
    let export = serde_json::to_string(&e.export("default", id).unwrap()).unwrap();
    assert!(
        !export.contains(SECRET),
        "the export holds the secret: {export}"
    );
    let history = serde_json::to_string(&e.history("default", id).unwrap()).unwrap();
    assert!(!history.contains(SECRET), "history holds the secret");
    let tasks = serde_json::to_string(&e.tasks("default", None, None, Some(id)).unwrap()).unwrap();
    assert!(!tasks.contains(SECRET), "a task holds the secret");
    assert!(tasks.contains("{{secret.token}}"), "{tasks}");
}

#[test]
fn exec_runs_an_allowed_command_and_its_output_reaches_the_instance() {
    let w = world(&["sh"]);
    w.e.apply("default", &exec_machine("10s", 1), None, Some("r.yaml"))
        .unwrap();
    let script = r#"printf '{"in": %s, "name": "%s", "tok": "%s", "task": "%s"}' "$(cat)" "$NAME" "$TOKEN" "$CAIRN_TASK_ATTEMPT"; echo warn >&2"#;
    start(&w.e, "ok", json!({"script": script, "name": "ada"}));
    let i = finished(&w.e, "ok");
    assert_eq!(i.status, Status::Completed, "{:?}", i.context);
    let out = &i.context["out"];
    assert_eq!(out["exit_code"], 0);
    assert_eq!(
        out["json"]["in"],
        json!({"n": 1}),
        "stdin is the task input"
    );
    assert_eq!(out["json"]["name"], "ada");
    assert_eq!(out["json"]["task"], "1");
    // The command saw the secret; what came back has it masked.
    assert_eq!(out["json"]["tok"], "{{secret.token}}");
    assert_eq!(out["stderr"], "warn\n");
    assert_eq!(out["stdout_truncated"], false);
    assert_eq!(out["task"]["action"], "run");
    no_secret_stored(&w.e, "ok");
    // The server's own environment does not leak into the command.
    let tasks = w.e.tasks("default", None, None, Some("ok")).unwrap();
    assert_eq!(tasks[0].queue, "cairn.exec");
    let attempts = w.e.store().attempts(&tasks[0].id).unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].worker, "cairn:exec");
    assert_eq!(attempts[0].outcome.as_deref(), Some("completed"));
}

#[test]
fn exec_failures_are_retried_then_reach_the_instance_with_the_exit_status() {
    let w = world(&["sh"]);
    w.e.apply("default", &exec_machine("10s", 2), None, Some("r.yaml"))
        .unwrap();
    start(
        &w.e,
        "bad",
        json!({"script": "echo partial; echo boom >&2; exit 3", "name": "x"}),
    );
    let i = finished(&w.e, "bad");
    assert_eq!(i.status, Status::Failed);
    let err = &i.context["err"];
    assert_eq!(err["exit_code"], 3);
    assert_eq!(err["attempts"], 2);
    assert_eq!(err["stdout"], "partial\n");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("exited with status 3: boom"),
        "{err}"
    );
    let t = &w.e.tasks("default", None, None, Some("bad")).unwrap()[0];
    let attempts = w.e.store().attempts(&t.id).unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .all(|a| a.outcome.as_deref() == Some("failed"))
    );

    // Output past the limit is cut and marked.
    start(
        &w.e,
        "big",
        json!({"script": "head -c 10000 /dev/zero | tr '\\0' x", "name": "x"}),
    );
    let i = finished(&w.e, "big");
    assert_eq!(i.status, Status::Completed);
    assert_eq!(i.context["out"]["stdout"].as_str().unwrap().len(), 4096);
    assert_eq!(i.context["out"]["stdout_truncated"], true);
    assert!(i.context["out"].get("json").is_none());
}

#[test]
fn exec_is_killed_at_its_timeout_and_when_its_state_is_left() {
    let w = world(&["sh"]);
    w.e.apply("default", &exec_machine("300ms", 1), None, Some("r.yaml"))
        .unwrap();
    start(&w.e, "slow", json!({"script": "sleep 30", "name": "x"}));
    let began = Instant::now();
    let i = finished(&w.e, "slow");
    assert!(began.elapsed() < Duration::from_secs(20));
    assert_eq!(i.status, Status::Failed);
    assert_eq!(i.context["err"]["timed_out"], true);
    assert!(
        i.context["err"]["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 300 ms")
    );

    // Cancelling the instance cancels the task; the running command is killed.
    w.e.apply("default", &exec_machine("1m", 1), None, Some("r.yaml"))
        .unwrap();
    let pidfile = w._dir.path().join("pid");
    let script = format!("echo $$ > {}; sleep 30", pidfile.display());
    start(&w.e, "gone", json!({"script": script, "name": "x"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Ok(p) = std::fs::read_to_string(&pidfile)
            && !p.trim().is_empty()
        {
            break p.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    w.e.cancel("default", "gone", "ops", "no longer needed")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the command outlived its cancelled task"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = &w.e.tasks("default", None, None, Some("gone")).unwrap()[0];
    assert_eq!(t.status, cairn_store::TaskStatus::Cancelled);
}

#[test]
fn exec_needs_an_admin_and_an_allowed_command_and_known_secrets() {
    let w = world(&["sh"]);
    let m = exec_machine("10s", 1);
    let e =
        w.e.apply_as("default", &m, None, Some("r.yaml"), Role::Operator)
            .unwrap_err();
    assert!(matches!(e, Error::NotAllowed(_)), "{e}");
    assert!(e.to_string().contains("only an admin"), "{e}");

    let other = m.replace("command: sh", "command: bash");
    let e = w.e.apply("default", &other, None, None).unwrap_err();
    assert!(matches!(e, Error::NotAllowed(_)), "{e}");
    assert!(
        e.to_string()
            .contains("state `run` runs `bash`, which is not on the server's exec allowlist"),
        "{e}"
    );
    let unknown = m.replace("secret.token", "secret.missing");
    let e = w.e.apply("default", &unknown, None, None).unwrap_err();
    assert!(e.to_string().contains("secret `missing`"), "{e}");
    assert!(w.e.machines("default").unwrap().is_empty());

    // Nothing reaches the reserved queues but the executors.
    let e =
        w.e.claim(&["cairn.exec".into()], "w", 1, Duration::from_secs(5))
            .unwrap_err();
    assert!(e.to_string().contains("built-in executor"), "{e}");
    let sneaky = "machine: s\ninitial: a\nstates:\n  a: { task: { queue: cairn.exec, input: \"{'command': 'sh'}\" } }\n";
    let e = w.e.apply("default", sneaky, None, None).unwrap_err();
    assert!(
        e.to_string().contains("queue `cairn.exec` is reserved"),
        "{e}"
    );

    // An empty allowlist refuses every command.
    let none = world(&[]);
    let e = none.e.apply("default", &m, None, None).unwrap_err();
    assert!(e.to_string().contains("which is empty"), "{e}");
}

/// A request the stub saw: `METHOD /path`, headers (lower-case names), body.
type Seen = (String, BTreeMap<String, String>, String);

/// A stub HTTP server: answers by path, records every request.
struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn stub() -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut flaky = 0;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let method = line.split_whitespace().next().unwrap_or("").to_string();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim().split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            log.lock()
                .unwrap()
                .push((format!("{method} {target}"), headers.clone(), body.clone()));
            let (status, reply) = match target.as_str() {
                "/flaky" if flaky == 0 => {
                    flaky += 1;
                    (503, json!({"error": "try later"}))
                }
                "/ok" | "/flaky" => (
                    200,
                    json!({"auth": headers.get("authorization"), "got": serde_json::from_str::<Value>(&body).ok()}),
                ),
                _ => (404, json!({"error": "no such thing"})),
            };
            let reply = reply.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    Stub { url, seen }
}

const HTTP_MACHINE: &str = r#"
machine: runner
initial: call
states:
  call:
    task:
      http:
        method: post
        url: "context.base + context.path"
        headers: { Authorization: "'Bearer {{secret.token}}'", X-Item: "string(context.item)" }
        body: "{'item': context.item, 'note': 'from cairn'}"
      timeout: 10s
      retry: { max_attempts: 3, initial: 10ms, jitter: 0 }
    on:
      task.done: { target: done, assign: { out: "event.payload" } }
      task.failed: { target: failed, assign: { err: "event.payload" } }
  done: { type: final }
  failed: { type: final, status: failed }
"#;

#[test]
fn http_requests_are_built_from_cel_with_secrets_and_answered_as_output() {
    let w = world(&[]);
    let s = stub();
    w.e.apply("default", HTTP_MACHINE, None, Some("h.yaml"))
        .unwrap();
    start(
        &w.e,
        "call",
        json!({"base": s.url, "path": "/ok", "item": 7}),
    );
    let i = finished(&w.e, "call");
    assert_eq!(i.status, Status::Completed, "{:?}", i.context);
    let out = &i.context["out"];
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"]["got"], json!({"item": 7, "note": "from cairn"}));
    // The server got the secret; the echo of it came back masked.
    assert_eq!(out["body"]["auth"], "Bearer {{secret.token}}");
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, "POST /ok");
    assert_eq!(seen[0].1["authorization"], format!("Bearer {SECRET}"));
    assert_eq!(seen[0].1["x-item"], "7");
    assert_eq!(seen[0].1["content-type"], "application/json");
    no_secret_stored(&w.e, "call");

    // A 503 is retried; the second attempt succeeds.
    start(
        &w.e,
        "flaky",
        json!({"base": s.url, "path": "/flaky", "item": 1}),
    );
    let i = finished(&w.e, "flaky");
    assert_eq!(i.status, Status::Completed);
    assert_eq!(i.context["out"]["task"]["attempt"], 2);

    // A 404 is final: no retry, the status and body reach the instance.
    start(
        &w.e,
        "missing",
        json!({"base": s.url, "path": "/missing", "item": 1}),
    );
    let i = finished(&w.e, "missing");
    assert_eq!(i.status, Status::Failed);
    assert_eq!(i.context["err"]["status"], 404);
    assert_eq!(i.context["err"]["attempts"], 1);
    assert_eq!(i.context["err"]["retryable"], false);
    assert_eq!(i.context["err"]["body"]["error"], "no such thing");

    // Nobody listening: retried, then failed with the transport error.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    start(
        &w.e,
        "dead",
        json!({"base": dead, "path": "/ok", "item": 1}),
    );
    let i = finished(&w.e, "dead");
    assert_eq!(i.status, Status::Failed);
    assert_eq!(i.context["err"]["attempts"], 3);
    assert!(
        i.context["err"]["error"]
            .as_str()
            .unwrap()
            .contains("the request failed")
    );
}

#[test]
fn executor_definitions_are_checked_when_applied() {
    let w = world(&["sh"]);
    let cases = [
        (
            "task: { queue: q, exec: { command: sh } }",
            "takes no `queue`",
        ),
        (
            "task: { exec: { command: sh }, http: { url: \"'http://x'\" } }",
            "`exec` or `http`, not both",
        ),
        (
            "task: { exec: { args: [] } }",
            "`task.exec` needs `command`",
        ),
        (
            "task: { http: { url: \"'http://x'\", method: FETCH } }",
            "unknown HTTP method `FETCH`",
        ),
        (
            "task: { http: { url: \"'http://x' +\" } }",
            "`task.http.url` `'http://x' +`: Syntax error",
        ),
        (
            "task: { http: { url: \"'http://x'\" }, input: \"{}\" }",
            "takes no `input`",
        ),
        (
            "task: { exec: { command: sh, env: { \"A B\": \"'x'\" } } }",
            "must be letters, digits",
        ),
        (
            "task: { exec: { command: sh, args: [\"-c\", \"echo {{secret.token}}\"] } }",
            "`task.exec.args` names secret `token`",
        ),
    ];
    for (task, want) in cases {
        let text = format!("machine: m\ninitial: a\nstates:\n  a: {{ {task} }}\n");
        let e =
            w.e.apply("default", &text, None, Some("m.yaml"))
                .unwrap_err();
        assert!(
            matches!(e, Error::Definition(_)),
            "{task}: expected a definition error, got {e}"
        );
        assert!(e.to_string().contains(want), "{task}: {e}");
    }
}
