//! Auth on every route: no token is 401; a token for namespace A can neither read nor
//! change namespace B (403, or 404 for tasks addressed by id); a viewer cannot write;
//! claims and the event stream never leak another namespace's work.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cairn_engine::{Config, Engine, Role, SendRequest, StartRequest, SystemClock};
use cairn_server::{Ctx, Settings, app};
use cairn_store_any::AnyStore;
use cairn_store_any::testing::Backend;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const FLOW: &str = r#"
machine: flow
initial: open
states:
  open: { on: { submit: review } }
  review: { approval: "ok?", on: { approve: work, reject: open } }
  work: { task: { queue: q, action: w }, on: { task.done: done } }
  done: { type: final }
"#;

struct World {
    app: axum::Router,
    engine: Engine<AnyStore>,
    admin_a: String,
    viewer_a: String,
    worker_a: String,
    b_approval: String,
    b_task: String,
    _dir: Backend,
}

/// Engine calls made straight from a test body: the store may block (PostgreSQL's driver
/// runs its own runtime), which an async task must not do in place.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn world() -> World {
    let dir = Backend::new();
    let engine = Engine::new(dir.open(), Arc::new(SystemClock), Config::default());
    for ns in ["a", "b"] {
        engine.apply(ns, FLOW, None, None).unwrap();
        for id in ["i1", "i2"] {
            engine
                .start(
                    ns,
                    StartRequest {
                        machine: "flow".into(),
                        id: Some(id.into()),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        engine
            .send(
                ns,
                "i2",
                SendRequest {
                    event: "submit".into(),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    // b/i3 waits for a worker.
    engine
        .start(
            "b",
            StartRequest {
                machine: "flow".into(),
                id: Some("i3".into()),
                ..Default::default()
            },
        )
        .unwrap();
    engine
        .send(
            "b",
            "i3",
            SendRequest {
                event: "submit".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let aid = engine.approvals("b", None, Some("i3")).unwrap()[0]
        .id
        .clone();
    engine
        .decide("b", "i3", cairn_engine::DecideRequest::approve("x", ""))
        .unwrap();
    let b_task = engine.tasks("b", None, None, Some("i3")).unwrap()[0]
        .id
        .clone();
    let b_approval = engine
        .approvals("b", Some(cairn_store::ApprovalStatus::Pending), Some("i2"))
        .unwrap()[0]
        .id
        .clone();
    let _ = aid;
    let (_, admin_a) = engine
        .create_token("admin-a", Role::Admin, vec!["a".into()])
        .unwrap();
    let (_, viewer_a) = engine
        .create_token("viewer-a", Role::Viewer, vec!["a".into()])
        .unwrap();
    let (_, worker_a) = engine
        .create_token("worker-a", Role::Worker, vec!["a".into()])
        .unwrap();
    let ctx = Ctx::new(
        engine.clone(),
        Settings {
            auth: true,
            ..Settings::default()
        },
    );
    World {
        app: app(ctx),
        engine,
        admin_a,
        viewer_a,
        worker_a,
        b_approval,
        b_task,
        _dir: dir,
    }
}

async fn call(
    w: &World,
    token: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) if uri.starts_with("/v1/machines") && method == "POST" => {
            req = req.header(header::CONTENT_TYPE, "application/yaml");
            let _ = b;
            Body::from(FLOW)
        }
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = w
        .app
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Every route, addressed to namespace `ns`: (method, uri, body, writes).
fn routes(
    ns: &str,
    approval: &str,
    task: &str,
) -> Vec<(&'static str, String, Option<Value>, bool)> {
    let q = format!("?namespace={ns}");
    vec![
        ("GET", format!("/v1/machines{q}"), None, false),
        ("GET", format!("/v1/machines/flow{q}"), None, false),
        (
            "GET",
            format!("/v1/machines/flow/versions/1{q}"),
            None,
            false,
        ),
        ("GET", format!("/v1/machines/flow/diagram{q}"), None, false),
        ("POST", format!("/v1/machines{q}"), Some(json!({})), true),
        (
            "POST",
            format!("/v1/instances{q}"),
            Some(json!({"machine": "flow", "id": "new"})),
            true,
        ),
        ("GET", format!("/v1/instances{q}"), None, false),
        ("GET", format!("/v1/instances/i1{q}"), None, false),
        (
            "POST",
            format!("/v1/instances/i1/events{q}"),
            Some(json!({"event": "submit"})),
            true,
        ),
        ("GET", format!("/v1/instances/i1/accepts{q}"), None, false),
        ("GET", format!("/v1/instances/i1/waiting{q}"), None, false),
        ("GET", format!("/v1/instances/i1/history{q}"), None, false),
        (
            "GET",
            format!("/v1/instances/i1/checkpoints{q}"),
            None,
            false,
        ),
        (
            "POST",
            format!("/v1/instances/i1/checkpoints{q}"),
            Some(json!({"name": "k"})),
            true,
        ),
        (
            "POST",
            format!("/v1/instances/i1/fork{q}"),
            Some(json!({"from": 1, "id": "forked"})),
            true,
        ),
        (
            "POST",
            format!("/v1/instances/i1/pause{q}"),
            Some(json!({})),
            true,
        ),
        (
            "POST",
            format!("/v1/instances/i1/resume{q}"),
            Some(json!({})),
            true,
        ),
        (
            "POST",
            format!("/v1/instances/i1/cancel{q}"),
            Some(json!({})),
            true,
        ),
        ("GET", format!("/v1/instances/i1/export{q}"), None, false),
        ("POST", format!("/v1/verify{q}"), Some(json!({})), true),
        ("GET", format!("/v1/approvals{q}"), None, false),
        (
            "POST",
            format!("/v1/approvals/{approval}/approve{q}"),
            Some(json!({})),
            true,
        ),
        (
            "POST",
            format!("/v1/approvals/{approval}/reject{q}"),
            Some(json!({"reason": "no"})),
            true,
        ),
        ("GET", format!("/v1/tasks{q}"), None, false),
        (
            "POST",
            format!("/v1/tasks/{task}/heartbeat"),
            Some(json!({"attempt": 1})),
            true,
        ),
        (
            "POST",
            format!("/v1/tasks/{task}/complete"),
            Some(json!({"attempt": 1, "output": {}})),
            true,
        ),
        (
            "POST",
            format!("/v1/tasks/{task}/fail"),
            Some(json!({"attempt": 1, "error": "x"})),
            true,
        ),
        ("GET", format!("/v1/stats{q}"), None, false),
        ("POST", format!("/v1/tick{q}"), Some(json!({})), true),
        (
            "POST",
            format!("/v1/backup{q}"),
            Some(json!({"file": "/nonexistent/x.db"})),
            true,
        ),
        ("DELETE", format!("/v1/instances/i1{q}"), None, true),
    ]
}

fn snapshot(e: &Engine<AnyStore>) -> Vec<(String, u64, u64, String)> {
    ["i1", "i2", "i3"]
        .iter()
        .map(|id| {
            let i = e.get("b", id).unwrap();
            (
                i.id,
                i.version,
                i.history_seq,
                i.status.as_str().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_namespace_can_neither_read_nor_change_another() {
    let w = blocking(world);
    // The task of b must be leased for heartbeat/complete/fail to mean anything.
    let claimed = blocking(|| {
        w.engine
            .claim(&["q".into()], "b-worker", 1, Duration::from_secs(60))
            .unwrap()
    });
    assert_eq!(claimed.len(), 1);
    let before = blocking(|| snapshot(&w.engine));
    for (method, uri, body, _) in routes("b", &w.b_approval, &w.b_task) {
        let (s, p) = call(&w, Some(&w.admin_a), method, &uri, body.clone()).await;
        let expected = if uri.starts_with("/v1/tasks/") && !uri.starts_with("/v1/tasks?") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(s, expected, "{method} {uri} with a token for `a`: {p}");
        let (s, _) = call(&w, None, method, &uri, body).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} without a token"
        );
    }
    assert_eq!(
        blocking(|| snapshot(&w.engine)),
        before,
        "namespace b changed"
    );
    assert_eq!(
        blocking(|| w.engine.tasks("b", None, None, Some("i3")).unwrap()[0].attempt),
        1
    );
    let (s, _) = call(
        &w,
        Some("cairn_not_a_real_token"),
        "GET",
        "/v1/instances?namespace=a",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&w, None, "GET", "/healthz", None).await;
    assert_eq!(s, StatusCode::OK, "health is open");
}

/// `/metrics` as text.
async fn scrape(w: &World, token: &str) -> String {
    let req = Request::get("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = w.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The value of one series (the line that starts with `series` and a space).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// After a known workload, `/metrics` has the figures the units kept and the engine's
/// counters, by namespace and machine for a token scoped to `*`, and for any other token
/// only summed over its own namespaces, with no label naming a namespace or machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_and_name_namespaces_only_to_a_global_token() {
    let w = blocking(world);
    // b/i3's task is claimed and its attempt fails (no retries: the task fails, and the
    // instance with it), then an event i1 does not accept.
    let claimed = blocking(|| {
        w.engine
            .claim(&["q".to_string()], "w1", 1, Duration::from_secs(60))
            .unwrap()
    });
    assert_eq!(claimed.len(), 1);
    let (id, attempt) = (claimed[0].id.clone(), claimed[0].attempt);
    blocking(|| {
        w.engine
            .fail(&id, attempt, "boom", true, Default::default())
            .unwrap()
    });
    let refused = blocking(|| {
        w.engine.send(
            "a",
            "i1",
            SendRequest {
                event: "nope".into(),
                ..Default::default()
            },
        )
    });
    assert!(refused.is_err());
    let (_, all) = blocking(|| {
        w.engine
            .create_token("ops", Role::Admin, vec!["*".into()])
            .unwrap()
    });
    let text = scrape(&w, &all).await;
    // Five starts, three submits and an approval, applied by this engine.
    for (series, value) in [
        ("cairn_transitions_total", 9.0),
        (
            "cairn_instances{namespace=\"a\",machine=\"flow\",status=\"running\"}",
            2.0,
        ),
        (
            "cairn_instances{namespace=\"b\",machine=\"flow\",status=\"running\"}",
            2.0,
        ),
        (
            "cairn_instances{namespace=\"b\",machine=\"flow\",status=\"failed\"}",
            1.0,
        ),
        (
            "cairn_tasks{namespace=\"b\",queue=\"q\",status=\"failed\"}",
            1.0,
        ),
        ("cairn_queue_depth{namespace=\"b\",queue=\"q\"}", f64::NAN),
        (
            "cairn_task_attempts_total{namespace=\"b\",queue=\"q\",outcome=\"failed\"}",
            1.0,
        ),
        ("cairn_transitions_stored{namespace=\"a\"}", 3.0),
        ("cairn_transitions_stored{namespace=\"b\"}", 6.0),
        ("cairn_timers_due{namespace=\"a\"}", f64::NAN),
        ("cairn_outbox_backlog{namespace=\"b\"}", f64::NAN),
        ("cairn_open_streams", 0.0),
    ] {
        let got = sample(&text, series);
        if value.is_nan() {
            assert_eq!(got, None, "{series} should be absent (zero):\n{text}");
        } else {
            assert_eq!(got, Some(value), "{series}:\n{text}");
        }
    }
    assert_eq!(sample(&text, "cairn_transitions_refused_total"), Some(1.0));
    assert!(sample(&text, "cairn_unit_commit_seconds_count").unwrap() >= 10.0);
    for name in [
        "cairn_unit_commit_seconds histogram",
        "cairn_instances gauge",
        "cairn_tasks gauge",
        "cairn_queue_depth gauge",
        "cairn_timers gauge",
        "cairn_timers_due gauge",
        "cairn_outbox_backlog gauge",
        "cairn_task_attempts_total counter",
        "cairn_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(&format!("# TYPE {name}")), "{name}:\n{text}");
    }
    // A token of namespace a: its own figures, summed, with no namespace or machine.
    let text = scrape(&w, &w.viewer_a).await;
    assert!(
        !text.contains("namespace=") && !text.contains("machine="),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cairn_instances{status=\"running\"}"),
        Some(2.0)
    );
    assert_eq!(sample(&text, "cairn_transitions_stored"), Some(3.0));
    assert_eq!(sample(&text, "cairn_queue_depth{queue=\"q\"}"), None);
    assert!(!text.contains("cairn_task_attempts_total{"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_but_cannot_write_and_roles_rank() {
    let w = blocking(world);
    let a_approval = blocking(|| w.engine.approvals("a", None, Some("i2")).unwrap())[0]
        .id
        .clone();
    let before: Vec<u64> = ["i1", "i2"]
        .iter()
        .map(|id| blocking(|| w.engine.get("a", id).unwrap().version))
        .collect();
    for (method, uri, body, writes) in routes("a", &a_approval, "no-task") {
        let (s, p) = call(&w, Some(&w.viewer_a), method, &uri, body).await;
        if writes {
            assert_eq!(s, StatusCode::FORBIDDEN, "viewer {method} {uri}: {p}");
            assert!(p["detail"].as_str().unwrap().contains("role"), "{p}");
        } else {
            assert!(s.is_success(), "viewer {method} {uri}: {s} {p}");
        }
    }
    let after: Vec<u64> = ["i1", "i2"]
        .iter()
        .map(|id| blocking(|| w.engine.get("a", id).unwrap().version))
        .collect();
    assert_eq!(before, after);
    // A worker claims, but cannot start instances; an admin of `a` can.
    let (s, _) = call(
        &w,
        Some(&w.worker_a),
        "POST",
        "/v1/instances?namespace=a",
        Some(json!({"machine": "flow"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &w,
        Some(&w.admin_a),
        "POST",
        "/v1/instances?namespace=a",
        Some(json!({"machine": "flow", "id": "ok"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_streams_stay_within_the_tokens_namespaces() {
    let w = blocking(world);
    // Only b has a claimable task: a's worker gets nothing.
    let (s, claimed) = call(
        &w,
        Some(&w.worker_a),
        "POST",
        "/v1/tasks/claim",
        Some(json!({"queues": ["q"], "worker": "wa"})),
    )
    .await;
    assert_eq!((s, claimed), (StatusCode::OK, json!([])));
    // Nor through a report: b's task is unknown to it, and its claim skips b.
    let bt = blocking(|| {
        w.engine.tasks("b", None, None, Some("i3")).unwrap()[0]
            .id
            .clone()
    });
    let (s, r) = call(
        &w,
        Some(&w.worker_a),
        "POST",
        "/v1/tasks/report",
        Some(json!({
            "outcomes": [{"task": bt, "attempt": 0, "outcome": "completed"}],
            "claim": {"queues": ["q"], "worker": "wa"},
        })),
    )
    .await;
    assert_eq!(
        (
            s,
            r["outcomes"][0]["problem"]["type"].as_str(),
            r["claimed"].clone()
        ),
        (StatusCode::OK, Some("/problems/not-found"), json!([]))
    );
    assert_eq!(
        blocking(|| w.engine.tasks("b", None, None, Some("i3")).unwrap()[0].attempt),
        0,
        "b's task untouched"
    );
    // The stream without a namespace shows only a's entries.
    let req = Request::get("/v1/events")
        .header(header::AUTHORIZATION, format!("Bearer {}", w.viewer_a))
        .body(Body::empty())
        .unwrap();
    let resp = w.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // a has five entries: machine, two starts, a transition, an approval requested.
    while text.matches("\n\n").count() < 5 {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("a's events arrive")
            .unwrap()
            .unwrap();
        if let Ok(d) = frame.into_data() {
            text.push_str(std::str::from_utf8(&d).unwrap());
        }
    }
    assert!(!text.contains("\"namespace\":\"b\""), "{text}");
    assert!(text.contains("\"namespace\":\"a\""), "{text}");
    let (s, _) = call(&w, Some(&w.viewer_a), "GET", "/v1/events?namespace=b", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

// The authorization matrix, built from the route table itself: every route, with a token
// of each role scoped to `mine`, asked for `mine`, for `theirs`, for both at once, for a
// percent-encoded `theirs`, for no namespace at all, for objects of `theirs` by id, and
// without a token. The expected status follows from the route's declared access; no
// answer to a scoped token carries a byte of `theirs`, and `theirs` is unchanged after.

/// What only `theirs` holds: in contexts, labels, task inputs, token names, definitions.
const MARK: &str = "THEIRS-MARK";

fn matrix_flow(description: &str) -> String {
    format!(
        r#"
machine: flow
description: "{description}"
context: {{ note: "" }}
initial: open
states:
  open: {{ on: {{ submit: review }} }}
  review: {{ approval: "ok?", on: {{ approve: work, reject: open }} }}
  work:
    task: {{ queue: q, action: w, input: "{{'note': context.note}}" }}
    on: {{ task.done: done, task.failed: done }}
  done: {{ type: final }}
"#
    )
}

/// An instance of `ns` brought to a stage, and what the stage has (approval, task).
struct Fixture {
    id: String,
    approval: Option<String>,
    task: Option<String>,
}

struct Matrix {
    app: axum::Router,
    engine: Engine<AnyStore>,
    tokens: Vec<(Role, String)>,
    root: String,
    n: std::sync::atomic::AtomicU64,
    shared: std::collections::HashMap<String, SharedFixtures>,
    _dir: Backend,
}

struct SharedFixtures {
    open: Fixture,
    review: Fixture,
    leased: Fixture,
    token: String,
    trigger: String,
    schedule: String,
}

impl Matrix {
    fn unique(&self, prefix: &str) -> String {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}{n}")
    }

    fn note(ns: &str) -> String {
        if ns == "theirs" {
            format!("{MARK}-note")
        } else {
            "mine-note".into()
        }
    }

    /// A fresh instance of `ns` at `stage`: `open`, `paused`, `review` or `leased`.
    fn fixture(&self, ns: &str, stage: &str) -> Fixture {
        let e = &self.engine;
        let id = self.unique("i");
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("tag".to_string(), Self::note(ns));
        e.start(
            ns,
            StartRequest {
                machine: "flow".into(),
                id: Some(id.clone()),
                input: json!({"note": Self::note(ns)}),
                labels,
                ..Default::default()
            },
        )
        .unwrap();
        let mut f = Fixture {
            id: id.clone(),
            approval: None,
            task: None,
        };
        if stage == "paused" {
            e.pause(ns, &id, "setup", "").unwrap();
        }
        if matches!(stage, "review" | "work" | "leased") {
            e.send(
                ns,
                &id,
                SendRequest {
                    event: "submit".into(),
                    ..Default::default()
                },
            )
            .unwrap();
            f.approval = Some(e.approvals(ns, None, Some(&id)).unwrap()[0].id.clone());
        }
        if matches!(stage, "work" | "leased") {
            e.decide(ns, &id, cairn_engine::DecideRequest::approve("setup", ""))
                .unwrap();
        }
        if stage == "leased" {
            let task = e.tasks(ns, None, None, Some(&id)).unwrap()[0].id.clone();
            // Claimed by a worker of that namespace, so an outcome has a lease to end.
            let claimed = e
                .claim_in(
                    &["q".into()],
                    Some(vec![ns.to_string()]),
                    "setup-worker",
                    100,
                    Duration::from_secs(600),
                )
                .unwrap();
            assert!(claimed.iter().any(|c| c.id == task), "{task} claimed");
            f.task = Some(task);
        }
        f
    }

    fn token(&self, ns: &str) -> String {
        let (t, _) = self
            .engine
            .create_token(
                &format!(
                    "{}{}",
                    if ns == "theirs" { MARK } else { "mine" },
                    self.unique("-t")
                ),
                Role::Viewer,
                vec![ns.to_string()],
            )
            .unwrap();
        t.id
    }

    fn trigger(&self, ns: &str) -> String {
        // The name is in paths (where a caller could echo it): the mark is in the condition.
        let name = self.unique("trig");
        let when = format!("context.note != '{}'", Self::note(ns));
        self.engine
            .add_trigger(
                ns,
                serde_json::from_value(json!({"name": name, "machine": "flow", "on_state": "done", "when": when, "start": {"machine": "flow"}}))
                    .unwrap(),
            )
            .unwrap();
        name
    }

    fn schedule(&self, ns: &str) -> String {
        let name = self.unique("sched");
        self.engine
            .add_schedule(
                ns,
                serde_json::from_value(json!({"name": name, "cron": "0 0 1 1 *", "machine": "flow", "input": {"note": Self::note(ns)}}))
                    .unwrap(),
            )
            .unwrap();
        name
    }
}

fn matrix() -> Matrix {
    let dir = Backend::new();
    let engine = Engine::new(dir.open(), Arc::new(SystemClock), Config::default());
    engine
        .apply("mine", &matrix_flow("mine's flow"), None, None)
        .unwrap();
    engine
        .apply("theirs", &matrix_flow(&format!("{MARK} flow")), None, None)
        .unwrap();
    let mut tokens = Vec::new();
    for role in [Role::Viewer, Role::Worker, Role::Operator, Role::Admin] {
        let (_, secret) = engine
            .create_token(
                &format!("mine-{}", role.as_str()),
                role,
                vec!["mine".into()],
            )
            .unwrap();
        tokens.push((role, secret));
    }
    let (_, root) = engine
        .create_token("root-admin", Role::Admin, vec!["*".into()])
        .unwrap();
    let ctx = {
        let store = engine.store().clone();
        let write: cairn_server::BackupFn = Arc::new(move |f: &std::path::Path| store.backup(f));
        Ctx::with_backup(
            engine.clone(),
            Settings {
                auth: true,
                ..Settings::default()
            },
            store_backup(write, dir.path()),
        )
    };
    let mut m = Matrix {
        app: app(ctx),
        engine,
        tokens,
        root,
        n: std::sync::atomic::AtomicU64::new(0),
        shared: Default::default(),
        _dir: dir,
    };
    for ns in ["mine", "theirs"] {
        let shared = SharedFixtures {
            open: m.fixture(ns, "open"),
            review: m.fixture(ns, "review"),
            leased: m.fixture(ns, "leased"),
            token: m.token(ns),
            trigger: m.trigger(ns),
            schedule: m.schedule(ns),
        };
        m.engine.checkpoint(ns, &shared.open.id, "k").unwrap();
        // A task waiting for any worker: a claim must never hand out `theirs`'s.
        m.fixture(ns, "work");
        m.shared.insert(ns.to_string(), shared);
    }
    m
}

/// The backup hook on SQLite; PostgreSQL has none (the route answers 501 there).
fn store_backup(
    write: cairn_server::BackupFn,
    dir: &std::path::Path,
) -> Option<(cairn_server::BackupFn, std::path::PathBuf)> {
    (std::env::var("CAIRN_TEST_BACKEND").as_deref() != Ok("postgres"))
        .then(|| (write, dir.to_path_buf()))
}

/// A request of one row: path (ids filled in), body, and the statuses of success.
struct Req {
    path: String,
    body: Option<Value>,
    ok: &'static [u16],
}

/// The matrix row of a route: how to address it in `ns` (fresh objects when `fresh`, else
/// the namespace's shared ones), and whether its path names an object by id.
fn row(m: &Matrix, method: &str, path: &str, ns: &str, fresh: bool) -> Option<(Req, bool)> {
    let s = &m.shared[ns];
    let inst = |stage: &str| -> Fixture {
        if fresh {
            m.fixture(ns, stage)
        } else {
            let f = match stage {
                "review" => &s.review,
                "leased" => &s.leased,
                _ => &s.open,
            };
            Fixture {
                id: f.id.clone(),
                approval: f.approval.clone(),
                task: f.task.clone(),
            }
        }
    };
    let req = |path: String, body: Option<Value>, ok: &'static [u16]| Req { path, body, ok };
    let task_path = |verb: &str| {
        let f = inst("leased");
        format!("/v1/tasks/{}/{verb}", f.task.unwrap())
    };
    Some(match (method, path) {
        ("GET", "/v1/machines") => (req("/v1/machines".into(), None, &[200]), false),
        ("POST", "/v1/machines") => (
            req(
                "/v1/machines".into(),
                Some(json!(matrix_flow(&m.unique("v")))),
                &[201],
            ),
            false,
        ),
        // Machines are named within a namespace: `flow` of `mine` is `mine`'s.
        ("GET", "/v1/machines/{name}") => (req("/v1/machines/flow".into(), None, &[200]), false),
        ("GET", "/v1/machines/{name}/versions/{version}") => (
            req("/v1/machines/flow/versions/1".into(), None, &[200]),
            false,
        ),
        ("GET", "/v1/machines/{name}/diagram") => {
            (req("/v1/machines/flow/diagram".into(), None, &[200]), false)
        }
        ("DELETE", "/v1/machines/{name}/versions/{version}") => {
            let name = if fresh {
                let name = m.unique("gone");
                let text = matrix_flow("x").replace("machine: flow", &format!("machine: {name}"));
                m.engine.apply(ns, &text, None, None).unwrap();
                name
            } else {
                "flow".to_string()
            };
            (
                req(format!("/v1/machines/{name}/versions/1"), None, &[204]),
                false,
            )
        }
        ("POST", "/v1/instances") => (
            req(
                "/v1/instances".into(),
                Some(json!({"machine": "flow", "id": m.unique("new")})),
                &[201],
            ),
            false,
        ),
        ("GET", "/v1/instances") => (req("/v1/instances".into(), None, &[200]), false),
        ("GET", "/v1/instances/{id}") => (
            req(format!("/v1/instances/{}", inst("open").id), None, &[200]),
            true,
        ),
        ("DELETE", "/v1/instances/{id}") => (
            req(format!("/v1/instances/{}", inst("open").id), None, &[204]),
            true,
        ),
        ("POST", "/v1/instances/{id}/events") => (
            req(
                format!("/v1/instances/{}/events", inst("open").id),
                Some(json!({"event": "submit"})),
                &[200],
            ),
            true,
        ),
        ("GET", "/v1/instances/{id}/accepts")
        | ("GET", "/v1/instances/{id}/waiting")
        | ("GET", "/v1/instances/{id}/history")
        | ("GET", "/v1/instances/{id}/checkpoints")
        | ("GET", "/v1/instances/{id}/export") => {
            (req(path.replace("{id}", &s.open.id), None, &[200]), true)
        }
        ("POST", "/v1/instances/{id}/checkpoints") => (
            req(
                format!("/v1/instances/{}/checkpoints", inst("open").id),
                Some(json!({"name": m.unique("k")})),
                &[201],
            ),
            true,
        ),
        ("POST", "/v1/instances/{id}/fork") => (
            req(
                format!("/v1/instances/{}/fork", inst("open").id),
                Some(json!({"from": 1})),
                &[201],
            ),
            true,
        ),
        ("POST", "/v1/instances/{id}/pause") | ("POST", "/v1/instances/{id}/cancel") => (
            req(
                path.replace("{id}", &inst("open").id),
                Some(json!({})),
                &[200],
            ),
            true,
        ),
        ("POST", "/v1/instances/{id}/resume") => {
            let id = if fresh {
                m.fixture(ns, "paused").id
            } else {
                s.open.id.clone()
            };
            (
                req(path.replace("{id}", &id), Some(json!({})), &[200]),
                true,
            )
        }
        ("POST", "/v1/verify") => (req("/v1/verify".into(), Some(json!({})), &[200]), false),
        ("GET", "/v1/approvals") => (req("/v1/approvals".into(), None, &[200]), false),
        ("POST", "/v1/approvals/{aid}/approve") | ("POST", "/v1/approvals/{aid}/reject") => (
            req(
                path.replace("{aid}", &inst("review").approval.unwrap()),
                Some(json!({"reason": "matrix"})),
                &[200],
            ),
            true,
        ),
        ("GET", "/v1/tasks") => (req("/v1/tasks".into(), None, &[200]), false),
        ("POST", "/v1/tasks/claim") => (
            req(
                "/v1/tasks/claim".into(),
                Some(json!({"queues": ["q"], "worker": "matrix"})),
                &[200],
            ),
            false,
        ),
        ("POST", "/v1/tasks/report") => (
            req(
                "/v1/tasks/report".into(),
                Some(json!({"outcomes": [], "claim": {"queues": ["q"], "worker": "matrix"}})),
                &[200],
            ),
            false,
        ),
        ("POST", "/v1/tasks/{id}/heartbeat") => (
            req(task_path("heartbeat"), Some(json!({"attempt": 1})), &[200]),
            true,
        ),
        ("POST", "/v1/tasks/{id}/complete") => (
            req(
                task_path("complete"),
                Some(json!({"attempt": 1, "output": {}})),
                &[200],
            ),
            true,
        ),
        ("POST", "/v1/tasks/{id}/fail") => (
            req(
                task_path("fail"),
                Some(json!({"attempt": 1, "error": "x", "retryable": false})),
                &[200],
            ),
            true,
        ),
        ("POST", "/v1/triggers") => (
            req(
                "/v1/triggers".into(),
                Some(
                    json!({"name": m.unique("t"), "machine": "flow", "on_state": "done", "start": {"machine": "flow"}}),
                ),
                &[201],
            ),
            false,
        ),
        ("GET", "/v1/triggers") => (req("/v1/triggers".into(), None, &[200]), false),
        ("DELETE", "/v1/triggers/{name}") => {
            let name = if fresh {
                m.trigger(ns)
            } else {
                s.trigger.clone()
            };
            (req(format!("/v1/triggers/{name}"), None, &[204]), true)
        }
        ("POST", "/v1/schedules") => (
            req(
                "/v1/schedules".into(),
                Some(json!({"name": m.unique("s"), "cron": "0 0 1 1 *", "machine": "flow"})),
                &[201],
            ),
            false,
        ),
        ("GET", "/v1/schedules") => (req("/v1/schedules".into(), None, &[200]), false),
        ("DELETE", "/v1/schedules/{name}") => {
            let name = if fresh {
                m.schedule(ns)
            } else {
                s.schedule.clone()
            };
            (req(format!("/v1/schedules/{name}"), None, &[204]), true)
        }
        ("GET", "/v1/stats") => (req("/v1/stats".into(), None, &[200]), false),
        ("POST", "/v1/tick") => (req("/v1/tick".into(), Some(json!({})), &[200]), false),
        ("POST", "/v1/backup") => (
            req(
                "/v1/backup".into(),
                Some(json!({})),
                if std::env::var("CAIRN_TEST_BACKEND").as_deref() == Ok("postgres") {
                    &[501]
                } else {
                    &[200]
                },
            ),
            false,
        ),
        ("POST", "/v1/repair") => (
            req("/v1/repair".into(), Some(json!({"dry_run": true})), &[200]),
            false,
        ),
        ("POST", "/v1/vacuum") => (req("/v1/vacuum".into(), Some(json!({})), &[200]), false),
        ("POST", "/v1/tokens") => (
            req(
                "/v1/tokens".into(),
                Some(json!({"role": "viewer", "namespaces": [ns]})),
                &[201],
            ),
            false,
        ),
        ("GET", "/v1/tokens") => (req("/v1/tokens".into(), None, &[200]), false),
        ("DELETE", "/v1/tokens/{id}") => {
            let id = if fresh { m.token(ns) } else { s.token.clone() };
            (req(format!("/v1/tokens/{id}"), None, &[204]), true)
        }
        ("GET", "/v1/events") => (req("/v1/events".into(), None, &[200]), false),
        ("GET", "/metrics") => (req("/metrics".into(), None, &[200]), false),
        ("GET", "/healthz") => (req("/healthz".into(), None, &[200]), false),
        ("GET", "/openapi.json") => (req("/openapi.json".into(), None, &[200]), false),
        ("GET", "/") => (req("/".into(), None, &[200]), false),
        _ => return None,
    })
}

/// The role and scope docs/http.md gives each route, written apart from the route table
/// so that a declaration that drifts from the documentation fails here.
fn documented(method: &str, path: &str) -> (Role, &'static str) {
    let read = !matches!(method, "POST" | "DELETE");
    match (method, path) {
        ("GET", "/healthz") | ("GET", "/openapi.json") | ("GET", "/") => (Role::Viewer, "open"),
        ("GET", "/v1/events") | ("GET", "/metrics") => (Role::Viewer, "set"),
        ("POST", "/v1/tasks/claim") => (Role::Worker, "set"),
        ("POST", p) if p.starts_with("/v1/tasks/") => (Role::Worker, "set"),
        (_, p) if p.starts_with("/v1/tokens") => (Role::Admin, "set"),
        ("POST", "/v1/backup") | ("POST", "/v1/repair") | ("POST", "/v1/vacuum") => {
            (Role::Admin, "global")
        }
        ("POST", "/v1/machines")
        | ("DELETE", "/v1/machines/{name}/versions/{version}")
        | ("DELETE", "/v1/instances/{id}")
        | ("POST", "/v1/tick") => (Role::Admin, "one"),
        _ if read => (Role::Viewer, "one"),
        _ => (Role::Operator, "one"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// `?namespace=mine`, objects of `mine`.
    Right,
    /// No `namespace`: `default` for one-namespace routes, the token's set otherwise.
    Unnarrowed,
    /// `?namespace=theirs`, objects of `theirs`.
    Other,
    /// `?namespace=%74heirs`.
    Encoded,
    /// `?namespace=mine&namespace=theirs`.
    Repeated,
    /// `?namespace=mine`, objects of `theirs` by id.
    ForeignId,
    /// `?namespace=mine` without a token.
    NoToken,
}

/// Reads a response body; a stream is read for a moment, then dropped.
async fn read_body(resp: axum::response::Response, long: bool) -> String {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(if long { 300 } else { 10_000 });
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Ok(_) => break,
            Err(_) if long => break,
            Err(_) => panic!("a response did not end"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn send_raw(
    m: &Matrix,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
    route_path: &str,
) -> (u16, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(Value::String(def)) if route_path == "/v1/machines" => {
            req = req.header(header::CONTENT_TYPE, "application/yaml");
            Body::from(def)
        }
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None if method == "POST" => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::empty()
        }
        None => Body::empty(),
    };
    let resp = m
        .app
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let long = route_path == "/v1/events" && status == 200;
    (status, read_body(resp, long).await)
}

/// What `theirs` holds, to show it unchanged.
fn theirs_state(m: &Matrix) -> Value {
    let e = &m.engine;
    let page = e
        .list(&cairn_store::InstanceFilter {
            namespace: "theirs".into(),
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    let instances: Vec<Value> = page
        .items
        .iter()
        .map(|i| json!([i.id, i.version, i.history_seq, i.status.as_str()]))
        .collect();
    let approvals: Vec<Value> = e
        .approvals("theirs", None, None)
        .unwrap()
        .iter()
        .map(|a| json!([a.id, a.status.as_str(), a.decisions.len()]))
        .collect();
    let tasks: Vec<Value> = e
        .tasks("theirs", None, None, None)
        .unwrap()
        .iter()
        .map(|t| json!([t.id, t.status.as_str(), t.attempt, t.lease_expires_at]))
        .collect();
    let tokens: Vec<Value> = e
        .tokens()
        .unwrap()
        .iter()
        .filter(|t| t.namespaces != ["mine"])
        .map(|t| json!([t.id, t.revoked_at]))
        .collect();
    let checkpoints = e
        .checkpoints("theirs", &m.shared["theirs"].open.id)
        .unwrap()
        .len();
    json!({
        "instances": instances, "approvals": approvals, "tasks": tasks, "tokens": tokens,
        "machines": e.machines("theirs").unwrap().iter().map(|m| m.version).collect::<Vec<_>>(),
        "triggers": e.triggers("theirs").unwrap().len(),
        "schedules": e.schedules("theirs").unwrap().len(),
        "checkpoints": checkpoints,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_holds_for_every_route_of_the_table() {
    use cairn_server::auth::Scope;
    let m = blocking(matrix);
    let before = blocking(|| theirs_state(&m));
    let mut checked = 0;
    for route in cairn_server::routes::ROUTES {
        let (method, path) = (route.method, route.path);
        assert!(
            blocking(|| row(&m, method, path, "mine", false)).is_some(),
            "{method} {path} has no row in the authorization matrix"
        );
        let (role, scope) = documented(method, path);
        assert_eq!(
            (
                route.access.role,
                format!("{:?}", route.access.scope).to_lowercase()
            ),
            (role, scope.to_string()),
            "{method} {path} is declared otherwise than documented"
        );
        for (role, secret) in &m.tokens {
            for case in [
                Case::Right,
                Case::Unnarrowed,
                Case::Other,
                Case::Encoded,
                Case::Repeated,
                Case::ForeignId,
                Case::NoToken,
            ] {
                let sufficient = *role >= route.access.role;
                let expected: Vec<u16> = match route.access.scope {
                    Scope::Open => vec![200],
                    _ if case == Case::NoToken => vec![401],
                    _ if !sufficient => vec![403],
                    _ if case == Case::Repeated => vec![400],
                    _ if matches!(case, Case::Other | Case::Encoded) => vec![403],
                    Scope::Global => vec![403],
                    Scope::One if case == Case::Unnarrowed => vec![403],
                    _ => vec![],
                };
                // Objects of `theirs` are addressed only where that is the point; only a
                // request that may succeed gets objects of its own.
                let (_, by_id) = blocking(|| row(&m, method, path, "mine", false)).unwrap();
                let foreign = case == Case::ForeignId && by_id;
                let target = if matches!(case, Case::Other | Case::Encoded) || foreign {
                    "theirs"
                } else {
                    "mine"
                };
                let expected = if expected.is_empty() && foreign {
                    vec![404]
                } else {
                    expected
                };
                let fresh = expected.is_empty();
                let (req, _) = blocking(|| row(&m, method, path, target, fresh)).expect("a row");
                let expected = if expected.is_empty() {
                    req.ok.to_vec()
                } else {
                    expected
                };
                let query = match case {
                    Case::Right | Case::ForeignId | Case::NoToken => "namespace=mine",
                    Case::Unnarrowed => "",
                    Case::Other => "namespace=theirs",
                    Case::Encoded => "namespace=%74heirs",
                    Case::Repeated => "namespace=mine&namespace=theirs",
                };
                let uri = match (req.path.contains('?'), query.is_empty()) {
                    (_, true) => req.path.clone(),
                    (true, false) => format!("{}&{query}", req.path),
                    (false, false) => format!("{}?{query}", req.path),
                };
                let token = (case != Case::NoToken).then_some(secret.as_str());
                let (status, body) = send_raw(&m, method, &uri, token, req.body, path).await;
                assert!(
                    expected.contains(&status),
                    "{method} {uri} by a {} token of `mine` ({case:?}): {status}, expected {expected:?}\n{body}",
                    role.as_str()
                );
                assert!(
                    !body.contains(MARK),
                    "{method} {uri} by a {} token of `mine` ({case:?}) leaked `theirs`: {body}",
                    role.as_str()
                );
                checked += 1;
            }
        }
        // A token scoped to `*` reaches the route too (the backup above all).
        let (req, _) = blocking(|| row(&m, method, path, "mine", true)).unwrap();
        let uri = if route.access.scope == Scope::Open {
            req.path.clone()
        } else {
            format!(
                "{}{}namespace=mine",
                req.path,
                if req.path.contains('?') { "&" } else { "?" }
            )
        };
        let (status, body) = send_raw(&m, method, &uri, Some(&m.root), req.body, path).await;
        assert!(
            req.ok.contains(&status),
            "{method} {uri} by the `*` admin: {status}, expected {:?}\n{}",
            req.ok,
            &body[..body.len().min(500)]
        );
    }
    assert!(checked > 1000, "only {checked} requests were checked");
    assert_eq!(blocking(|| theirs_state(&m)), before, "`theirs` changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_admin_administers_its_own_namespaces_only() {
    let m = blocking(matrix);
    let admin = &m.tokens[3].1;
    let call = |method: &'static str, uri: String, body: Option<Value>| {
        let m = &m;
        async move { send_raw(m, method, &uri, Some(admin), body, "").await }
    };
    for (body, why) in [
        (
            json!({"role": "admin", "namespaces": ["*"]}),
            "every namespace",
        ),
        (
            json!({"role": "viewer", "namespaces": ["theirs"]}),
            "another namespace",
        ),
        (
            json!({"role": "viewer", "namespaces": ["mine", "theirs"]}),
            "a wider set",
        ),
    ] {
        let (s, b) = call("POST", "/v1/tokens?namespace=mine".into(), Some(body)).await;
        assert_eq!(s, 403, "a token for {why}: {b}");
    }
    let (s, b) = call(
        "POST",
        "/v1/tokens".into(),
        Some(json!({"role": "admin", "namespaces": ["mine"], "name": "deputy"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let made: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (made["subject"].as_str(), made["role"].as_str()),
        (Some("deputy"), Some("admin"))
    );
    // It lists only tokens within its namespaces: not the root token, not theirs.
    let (s, b) = call("GET", "/v1/tokens".into(), None).await;
    assert_eq!(s, 200);
    let listed: Vec<Value> = serde_json::from_str(&b).unwrap();
    assert!(
        listed.iter().all(|t| t["namespaces"] == json!(["mine"])),
        "{b}"
    );
    assert!(listed.iter().any(|t| t["subject"] == "deputy"));
    assert!(!b.contains(MARK) && !b.contains("\"*\""), "{b}");
    // It cannot revoke the root token (not found for it), which keeps working.
    let root_id = blocking(|| {
        m.engine
            .tokens()
            .unwrap()
            .into_iter()
            .find(|t| t.namespaces == ["*"])
            .unwrap()
            .id
    });
    let (s, _) = call("DELETE", format!("/v1/tokens/{root_id}"), None).await;
    assert_eq!(s, 404);
    let (s, _) = send_raw(
        &m,
        "GET",
        "/v1/instances?namespace=theirs",
        Some(&m.root),
        None,
        "",
    )
    .await;
    assert_eq!(s, 200, "the root token still works");
    // Backups need `*`.
    let (s, _) = call("POST", "/v1/backup".into(), Some(json!({}))).await;
    assert_eq!(s, 403);
    // A reserved or malformed subject is refused.
    for name in [
        "cairn",
        "timer",
        "trigger:x",
        "instance:y",
        "cairn:z",
        "token:abc",
        " padded",
    ] {
        let (s, b) = call(
            "POST",
            "/v1/tokens".into(),
            Some(json!({"role": "viewer", "namespaces": ["mine"], "name": name})),
        )
        .await;
        assert_eq!(s, 400, "name `{name}`: {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_is_the_tokens_subject_and_approvers_match_subjects() {
    let (dir, engine, (ann_token, ann), bob, (worker_token, worker)) = blocking(|| {
        let dir = Backend::new();
        let engine = Engine::new(dir.open(), Arc::new(SystemClock), Config::default());
        engine
            .apply(
                "default",
                r#"
machine: gate
initial: review
states:
  review:
    approval: { prompt: "ok?", approvers: [ann] }
    on: { approve: work, reject: done }
  work: { task: { queue: q, action: w }, on: { task.done: done } }
  done: { type: final }
"#,
                None,
                None,
            )
            .unwrap();
        let ann = engine
            .create_token("ann", Role::Operator, vec!["default".into()])
            .unwrap();
        let (_, bob) = engine
            .create_token("bob", Role::Operator, vec!["default".into()])
            .unwrap();
        let worker = engine
            .create_token("", Role::Worker, vec!["default".into()])
            .unwrap();
        (dir, engine, ann, bob, worker)
    });
    assert_eq!(worker_token.subject, format!("token:{}", worker_token.id));
    let on = app(Ctx::new(
        engine.clone(),
        Settings {
            auth: true,
            ..Settings::default()
        },
    ));
    let send = |token: &str, method: &str, uri: &str, body: Value| {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            // The scheme is case-insensitive (RFC 7235).
            .header(header::AUTHORIZATION, format!("bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let app = on.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (s, _) = send(
        &bob,
        "POST",
        "/v1/instances",
        json!({"machine": "gate", "id": "g", "actor": "ann"}),
    )
    .await;
    assert_eq!(s, 201);
    let aid = blocking(|| {
        engine.approvals("default", None, Some("g")).unwrap()[0]
            .id
            .clone()
    });
    // Bob says he is ann: he is still bob, and bob is no approver.
    let (s, p) = send(
        &bob,
        "POST",
        &format!("/v1/approvals/{aid}/approve"),
        json!({"actor": "ann"}),
    )
    .await;
    assert_eq!(s, 403, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("`bob` may not decide"),
        "{p}"
    );
    // Ann approves on behalf of her team lead.
    let (s, d) = send(
        &ann,
        "POST",
        &format!("/v1/approvals/{aid}/approve"),
        json!({"actor": "someone-else", "on_behalf_of": "lead"}),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    let decision = &d["approval"]["decisions"][0];
    assert_eq!(
        (
            decision["actor"].as_str(),
            decision["token"].as_str(),
            decision["on_behalf_of"].as_str()
        ),
        (Some("ann"), Some(ann_token.id.as_str()), Some("lead"))
    );
    assert_eq!(d["transition"]["actor"], "ann");
    assert_eq!(d["transition"]["token"], ann_token.id.as_str());
    // The worker completes the task: the outcome is the token's, the attempt the worker's.
    let (s, claimed) = send(
        &worker,
        "POST",
        "/v1/tasks/claim",
        json!({"queues": ["q"], "worker": "w-1"}),
    )
    .await;
    assert_eq!(s, 200);
    let tid = claimed[0]["id"].as_str().unwrap().to_string();
    let (s, _) = send(
        &worker,
        "POST",
        &format!("/v1/tasks/{tid}/complete"),
        json!({"attempt": 1, "output": {}}),
    )
    .await;
    assert_eq!(s, 200);
    let history = blocking(|| engine.history("default", "g").unwrap());
    let who: Vec<(&str, &str, Option<&str>, Option<&str>)> = history
        .iter()
        .map(|h| {
            (
                h.kind.as_str(),
                h.actor.as_str(),
                h.token_id.as_deref(),
                h.on_behalf_of.as_deref(),
            )
        })
        .collect();
    let bob_id = blocking(|| {
        engine
            .tokens()
            .unwrap()
            .into_iter()
            .find(|t| t.subject == "bob")
            .unwrap()
            .id
    });
    assert_eq!(
        who,
        vec![
            ("start", "bob", Some(bob_id.as_str()), Some("ann")),
            ("event", "ann", Some(ann_token.id.as_str()), Some("lead")),
            (
                "attempt",
                worker_token.subject.as_str(),
                Some(worker_token.id.as_str()),
                None
            ),
            (
                "event",
                worker_token.subject.as_str(),
                Some(worker_token.id.as_str()),
                None
            ),
        ]
    );
    let attempts = blocking(|| engine.export("default", "g").unwrap()).tasks[0]
        .attempts
        .clone();
    assert_eq!(
        attempts[0].worker, "w-1",
        "the worker's name stays on the attempt"
    );
    assert!(blocking(|| engine.verify("default", "g").unwrap()).ok);
    // With auth off, the body's actor stands (and approvers match it).
    let off = app(Ctx::new(engine.clone(), Settings::default()));
    let req = Request::post("/v1/instances/g/cancel")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"actor": "carol", "reason": "done"}).to_string(),
        ))
        .unwrap();
    let resp = off.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT, "finished already");
    // ... but no client passes itself off as one of Cairn's own actors.
    for actor in ["timer", "trigger:t", "cairn"] {
        let req = Request::post("/v1/instances")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"machine": "gate", "actor": actor}).to_string(),
            ))
            .unwrap();
        let resp = off.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "actor {actor}");
    }
    let req = Request::post("/v1/instances")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"machine": "gate", "id": "carols", "actor": "carol"}).to_string(),
        ))
        .unwrap();
    assert_eq!(
        off.clone().oneshot(req).await.unwrap().status(),
        StatusCode::CREATED
    );
    let h = blocking(|| engine.history("default", "carols").unwrap());
    assert_eq!(
        (h[0].actor.as_str(), h[0].token_id.as_deref()),
        ("carol", None)
    );
    // Two Authorization headers are refused, not resolved first-wins.
    let req = Request::get("/v1/instances")
        .header(header::AUTHORIZATION, format!("Bearer {bob}"))
        .header(header::AUTHORIZATION, format!("Bearer {ann}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        on.clone().oneshot(req).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    blocking(move || drop((engine, dir)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_drive_the_server_auth_on_or_off() {
    let (dir, engine) = blocking(|| {
        let dir = Backend::new();
        let engine = Engine::new(dir.open(), Arc::new(SystemClock), Config::default());
        engine.apply("default", FLOW, None, None).unwrap();
        engine
            .start(
                "default",
                StartRequest {
                    machine: "flow".into(),
                    id: Some("x".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        (dir, engine)
    });
    let settings = Settings {
        listen: Some("127.0.0.1:7878".parse().unwrap()),
        allowed_hosts: vec!["cairn.internal".into()],
        ..Settings::default()
    };
    let off = app(Ctx::new(engine.clone(), settings.clone()));
    let call = |app: axum::Router, req: Request<Body>| async move {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let cors = resp.headers().get("access-control-allow-origin").cloned();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, cors, String::from_utf8_lossy(&bytes).into_owned())
    };
    // A form or a text/plain body (what a page can send without asking) changes nothing.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let mut req = Request::post("/v1/instances/x/cancel");
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let (s, _, b) = call(
            off.clone(),
            req.body(Body::from(r#"{"actor":"page"}"#)).unwrap(),
        )
        .await;
        assert_eq!(s, 415, "{ct:?}: {b}");
    }
    let mut req = Request::post("/v1/machines");
    req = req.header(header::CONTENT_TYPE, "text/plain");
    let (s, _, _) = call(off.clone(), req.body(Body::from(FLOW)).unwrap()).await;
    assert_eq!(s, 415, "a definition as text/plain");
    assert_eq!(
        blocking(|| engine.get("default", "x").unwrap())
            .status
            .as_str(),
        "running"
    );
    // DNS rebinding: a foreign Host is refused, reads included.
    for (host, ok) in [
        ("evil.example:7878", false),
        ("localhost:7878", true),
        ("127.0.0.1:7878", true),
        ("[::1]:7878", true),
        ("cairn.internal", true),
        ("10.1.2.3:7878", false),
    ] {
        let req = Request::get("/v1/instances/x")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let (s, _, b) = call(off.clone(), req).await;
        assert_eq!(s == 200, ok, "Host {host}: {s} {b}");
    }
    // A foreign Origin cannot change anything, even with a JSON body; no CORS headers.
    let req = Request::post("/v1/instances/x/pause")
        .header(header::HOST, "127.0.0.1:7878")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (s, cors, _) = call(off.clone(), req).await;
    assert_eq!((s, cors), (403, None));
    let req = Request::get("/v1/instances/x")
        .header(header::ORIGIN, "https://evil.example")
        .body(Body::empty())
        .unwrap();
    let (s, cors, _) = call(off.clone(), req).await;
    assert_eq!((s, cors), (200, None), "no CORS header unless allowed");
    // The same origin may; an allowlisted origin gets CORS headers.
    let req = Request::post("/v1/instances/x/pause")
        .header(header::HOST, "127.0.0.1:7878")
        .header(header::ORIGIN, "http://127.0.0.1:7878")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(call(off.clone(), req).await.0, 200);
    let allowed = app(Ctx::new(
        engine.clone(),
        Settings {
            cors_origins: vec!["https://app.example".into()],
            ..settings
        },
    ));
    let req = Request::post("/v1/instances/x/resume")
        .header(header::ORIGIN, "https://app.example")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (s, cors, b) = call(allowed.clone(), req).await;
    assert_eq!(
        (s, cors.as_ref().map(|v| v.to_str().unwrap())),
        (200, Some("https://app.example")),
        "{b}"
    );
    let req = Request::builder()
        .method("OPTIONS")
        .uri("/v1/instances/x/cancel")
        .header(header::ORIGIN, "https://app.example")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let (_, cors, _) = call(allowed, req).await;
    assert!(
        cors.is_some(),
        "a preflight from an allowed origin is answered"
    );
    blocking(move || drop((engine, dir)));
}
