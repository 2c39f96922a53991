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
