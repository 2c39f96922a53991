//! `/openapi.json` describes the API: real responses of a scenario touching every route
//! are validated against the schema the document gives for their operation and status,
//! and every request made must match a documented operation.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use cairn_engine::{Config, Engine, SystemClock};
use cairn_server::{Ctx, Settings, app};
use cairn_store_any::testing::Backend;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const FLOW: &str = r#"
machine: flow
initial: open
states:
  open: { on: { submit: review }, after: { 1h: open } }
  review: { approval: "ok?", on: { approve: work, reject: open } }
  work: { task: { queue: q, action: w }, on: { task.done: done } }
  done: { type: final }
"#;

/// The operation of `doc` matching a request, and the schema for its status.
fn schema_for(doc: &Value, method: &str, path: &str, status: u16) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (_, item) = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(template, item)| {
            let t: Vec<&str> = template.trim_matches('/').split('/').collect();
            t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(a, b)| a.starts_with('{') || a == b)
                && item.get(method.to_lowercase()).is_some()
        })?;
    let op = &item[method.to_lowercase()];
    let resp = op["responses"]
        .get(status.to_string())
        .unwrap_or(&op["responses"]["default"]);
    let content = resp.get("content")?;
    let (_, media) = content.as_object()?.iter().next()?;
    Some(media["schema"].clone())
}

struct T {
    app: axum::Router,
    doc: Value,
    checked: usize,
    _dir: Backend,
}

impl T {
    async fn call(&mut self, method: &str, uri: &str, body: Option<(&str, String)>) -> Value {
        let mut req = Request::builder().method(method).uri(uri);
        let b = match body {
            Some((ct, b)) => {
                req = req.header(header::CONTENT_TYPE, ct);
                Body::from(b)
            }
            None => Body::empty(),
        };
        let resp = self
            .app
            .clone()
            .oneshot(req.body(b).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let path = uri.split('?').next().unwrap();
        let documented = self.doc["paths"].as_object().unwrap().keys().any(|t| {
            let (a, b): (Vec<&str>, Vec<&str>) = (
                t.trim_matches('/').split('/').collect(),
                path.trim_matches('/').split('/').collect(),
            );
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.starts_with('{') || x == y)
        });
        assert!(documented, "{method} {path} is not in /openapi.json");
        if !ct.contains("json") || bytes.is_empty() {
            return Value::Null;
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let schema = schema_for(&self.doc, method, path, status)
            .unwrap_or_else(|| panic!("no schema for {method} {path} {status}"));
        let full = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "components": self.doc["components"], "allOf": [schema]});
        let v = jsonschema::validator_for(&full)
            .unwrap_or_else(|e| panic!("bad schema for {method} {path}: {e}"));
        let errors: Vec<String> = v
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {uri} -> {status} does not match /openapi.json: {errors:?}\n{body}"
        );
        self.checked += 1;
        body
    }

    async fn json(&mut self, method: &str, uri: &str, body: Value) -> Value {
        self.call(method, uri, Some(("application/json", body.to_string())))
            .await
    }
}

#[tokio::test]
async fn real_responses_match_the_openapi_document() {
    let dir = Backend::new();
    let engine = Engine::new(dir.open(), Arc::new(SystemClock), Config::default());
    let store = engine.store().clone();
    let write: cairn_server::BackupFn = Arc::new(move |f: &std::path::Path| store.backup(f));
    let ctx = Ctx::with_backup(
        engine,
        Settings::default(),
        Some((write, dir.path().to_path_buf())),
    );
    let mut t = T {
        app: app(ctx),
        doc: Value::Null,
        checked: 0,
        _dir: dir,
    };
    let resp = t
        .app
        .clone()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    t.doc = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(t.doc["openapi"], "3.1.0");

    t.call(
        "POST",
        "/v1/machines",
        Some(("application/yaml", FLOW.into())),
    )
    .await;
    t.call(
        "POST",
        "/v1/machines",
        Some((
            "application/yaml",
            "machine: x\ninitial: nope\nstates: {a: {}}".into(),
        )),
    )
    .await;
    t.call("GET", "/v1/machines", None).await;
    t.call("GET", "/v1/machines/flow", None).await;
    t.call("GET", "/v1/machines/flow/versions/1", None).await;
    t.call("GET", "/v1/machines/flow/diagram", None).await;
    t.json(
        "POST",
        "/v1/instances",
        json!({"machine": "flow", "id": "a", "labels": {"k": "v"}}),
    )
    .await;
    t.json(
        "POST",
        "/v1/instances",
        json!({"machine": "flow", "id": "a"}),
    )
    .await;
    t.json(
        "POST",
        "/v1/instances",
        json!({"machine": "flow", "id": "b"}),
    )
    .await;
    t.call("GET", "/v1/instances?limit=1", None).await;
    t.call("GET", "/v1/instances/a", None).await;
    t.call("GET", "/v1/instances/missing", None).await;
    t.json("POST", "/v1/instances/a/events", json!({"event": "nope"}))
        .await;
    t.json("POST", "/v1/instances/a/checkpoints", json!({"name": "k"}))
        .await;
    t.call("GET", "/v1/instances/a/checkpoints", None).await;
    t.json("POST", "/v1/instances/a/pause", json!({})).await;
    t.json(
        "POST",
        "/v1/instances/a/events",
        json!({"event": "submit", "key": "k1"}),
    )
    .await;
    t.json("POST", "/v1/instances/a/resume", json!({})).await;
    t.json(
        "POST",
        "/v1/instances/a/events",
        json!({"event": "submit", "key": "k1"}),
    )
    .await;
    t.json(
        "POST",
        "/v1/instances/a/events",
        json!({"event": "submit", "expected_version": 1}),
    )
    .await;
    t.call("GET", "/v1/instances/a/accepts", None).await;
    t.call("GET", "/v1/instances/a/history", None).await;
    let approvals = t.call("GET", "/v1/approvals", None).await;
    let aid = approvals[0]["id"].as_str().unwrap().to_string();
    t.json(
        "POST",
        &format!("/v1/approvals/{aid}/approve"),
        json!({"actor": "ann"}),
    )
    .await;
    t.json(
        "POST",
        &format!("/v1/approvals/{aid}/reject"),
        json!({"reason": "late"}),
    )
    .await;
    t.call("GET", "/v1/tasks", None).await;
    let claimed = t
        .json(
            "POST",
            "/v1/tasks/claim",
            json!({"queues": ["q"], "worker": "w"}),
        )
        .await;
    let tid = claimed[0]["id"].as_str().unwrap().to_string();
    t.json(
        "POST",
        &format!("/v1/tasks/{tid}/heartbeat"),
        json!({"attempt": 1}),
    )
    .await;
    t.json(
        "POST",
        &format!("/v1/tasks/{tid}/fail"),
        json!({"attempt": 1, "error": "flaky", "retryable": false}),
    )
    .await;
    t.json(
        "POST",
        &format!("/v1/tasks/{tid}/complete"),
        json!({"attempt": 1, "output": {}}),
    )
    .await;
    t.json(
        "POST",
        "/v1/instances/b/fork",
        json!({"from": 1, "id": "c"}),
    )
    .await;
    t.json("POST", "/v1/instances/c/cancel", json!({"reason": "x"}))
        .await;
    t.call("GET", "/v1/instances/a/export?format=json", None)
        .await;
    t.call("GET", "/v1/instances/a/export?format=markdown", None)
        .await;
    t.json("POST", "/v1/verify", json!({})).await;
    t.call("GET", "/v1/stats", None).await;
    t.json("POST", "/v1/tick", json!({})).await;
    t.json("POST", "/v1/backup", json!({})).await;
    let tok = t
        .json(
            "POST",
            "/v1/tokens",
            json!({"role": "viewer", "namespaces": ["default"]}),
        )
        .await;
    t.call("GET", "/v1/tokens", None).await;
    t.call(
        "DELETE",
        &format!("/v1/tokens/{}", tok["id"].as_str().unwrap()),
        None,
    )
    .await;
    t.call("DELETE", "/v1/instances/c", None).await;
    t.call("GET", "/healthz", None).await;
    t.call("GET", "/metrics", None).await;
    t.call(
        "POST",
        "/v1/instances",
        Some(("application/json", "{broken".into())),
    )
    .await;
    assert!(
        t.checked >= 35,
        "only {} JSON responses were checked",
        t.checked
    );
    // Every documented operation names a summary and a problem response.
    for (path, item) in t.doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path}");
            assert!(op["responses"]["default"].is_object(), "{method} {path}");
        }
    }
}

/// The check above can fail: bodies that break the document are caught.
#[test]
fn the_document_rejects_wrong_bodies() {
    let doc = cairn_server::openapi::document();
    let check = |schema: Value, body: Value| {
        let full = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "components": doc["components"], "allOf": [schema]});
        jsonschema::validator_for(&full).unwrap().is_valid(&body)
    };
    let instance = schema_for(doc, "GET", "/v1/instances/x", 200).unwrap();
    assert!(
        !check(instance.clone(), json!({"id": 5})),
        "a malformed instance passed"
    );
    assert!(!check(instance, json!({})), "an empty instance passed");
    let problem = schema_for(doc, "GET", "/v1/instances/x", 404).unwrap();
    assert!(
        !check(problem.clone(), json!({"detail": "x"})),
        "a problem without type passed"
    );
    assert!(check(
        problem,
        json!({"type": "/problems/not-found", "title": "Not Found", "status": 404, "detail": "x"})
    ));
    let page = schema_for(doc, "GET", "/v1/instances", 200).unwrap();
    assert!(
        !check(page, json!({"instances": [{"id": "a"}], "next": null})),
        "a page of broken instances passed"
    );
}

/// The document and the route table list the same operations, so no route escapes the
/// document (or the sweeps built on it), and open routes are marked open.
#[test]
fn the_document_lists_exactly_the_routed_operations() {
    let mut documented: Vec<(String, String)> = cairn_server::openapi::operations()
        .into_iter()
        .map(|(m, p)| (m.to_uppercase(), p.to_string()))
        .collect();
    let mut routed: Vec<(String, String)> = cairn_server::routes::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
    let doc = cairn_server::openapi::document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let open = op["x-cairn-access"]["scope"] == "open";
            assert_eq!(
                op.get("security") == Some(&json!([])),
                open,
                "{method} {path}: open routes, and only they, need no token"
            );
        }
    }
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
    assert_eq!(doc["paths"]["/openapi.json"]["get"]["security"], json!([]));
    assert_eq!(
        doc["paths"]["/v1/backup"]["post"]["x-cairn-access"]["scope"],
        "global"
    );
}

#[test]
fn the_document_lists_every_problem_type() {
    let doc = cairn_server::openapi::document();
    let listed: Vec<&str> = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
        .as_array()
        .expect("Problem.type is an enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: Vec<String> = cairn_api::ProblemType::ALL
        .iter()
        .map(|p| p.uri())
        .collect();
    assert_eq!(listed, all);
}
