//! `GET /openapi.json`: the OpenAPI 3.1 description of the API. Schemas are derived from
//! the `cairn-api` wire types (schemars), so they cannot drift from what handlers send;
//! the operations are listed here, beside the routers, and a test checks real responses
//! against them.

use std::sync::OnceLock;

use cairn_api as api;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// One operation: method, path, summary, request body schema, and responses
/// (status, schema name or `None` for no JSON body).
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<Value>,
    ok: &'static [(u16, Option<&'static str>)],
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Every documented operation; a test keeps this list equal to the route table.
pub fn operations() -> Vec<(&'static str, &'static str)> {
    ops().iter().map(|o| (o.method, o.path)).collect()
}

fn ops() -> Vec<Op> {
    let who = r("Who");
    vec![
        Op {
            method: "post",
            path: "/v1/machines",
            summary: "Apply a definition (JSON, or YAML/TOML by content type)",
            body: Some(json!({"type": "object"})),
            ok: &[(201, Some("Applied")), (200, Some("Applied"))],
        },
        Op {
            method: "get",
            path: "/v1/machines",
            summary: "The latest version of every machine",
            body: None,
            ok: &[(200, Some("MachineList"))],
        },
        Op {
            method: "get",
            path: "/v1/machines/{name}",
            summary: "A machine's latest version, with its definition",
            body: None,
            ok: &[(200, Some("MachineDetail"))],
        },
        Op {
            method: "get",
            path: "/v1/machines/{name}/versions/{version}",
            summary: "One version of a machine",
            body: None,
            ok: &[(200, Some("MachineDetail"))],
        },
        Op {
            method: "delete",
            path: "/v1/machines/{name}/versions/{version}",
            summary: "Delete a version no instance runs on (its number is never given again)",
            body: None,
            ok: &[(204, None)],
        },
        Op {
            method: "get",
            path: "/v1/machines/{name}/diagram",
            summary: "A Mermaid or dot diagram (text)",
            body: None,
            ok: &[(200, None)],
        },
        Op {
            method: "post",
            path: "/v1/instances",
            summary: "Start an instance",
            body: Some(r("Start")),
            ok: &[(201, Some("Instance"))],
        },
        Op {
            method: "get",
            path: "/v1/instances",
            summary: "List instances (filters: machine, status, state, label=k=v; cursor pages)",
            body: None,
            ok: &[(200, Some("InstancePage"))],
        },
        Op {
            method: "get",
            path: "/v1/instances/{id}",
            summary: "An instance",
            body: None,
            ok: &[(200, Some("Instance"))],
        },
        Op {
            method: "delete",
            path: "/v1/instances/{id}",
            summary: "Delete an instance and everything recorded of it",
            body: None,
            ok: &[(204, None)],
        },
        Op {
            method: "post",
            path: "/v1/instances/{id}/events",
            summary: "Send an event (202 when queued for a paused instance)",
            body: Some(r("Send")),
            ok: &[(200, Some("Sent")), (202, Some("Sent"))],
        },
        Op {
            method: "get",
            path: "/v1/instances/{id}/accepts",
            summary: "The events the instance accepts now",
            body: None,
            ok: &[(200, Some("Strings"))],
        },
        Op {
            method: "get",
            path: "/v1/instances/{id}/waiting",
            summary: "What the instance waits for: pending approvals, timers, open tasks, children, queued events",
            body: None,
            ok: &[(200, Some("Waiting"))],
        },
        Op {
            method: "get",
            path: "/v1/instances/{id}/history",
            summary: "The history records, oldest first: all, or the newest `limit` (before `before`)",
            body: None,
            ok: &[(200, Some("History"))],
        },
        Op {
            method: "get",
            path: "/v1/instances/{id}/checkpoints",
            summary: "Checkpoints",
            body: None,
            ok: &[(200, Some("Checkpoints"))],
        },
        Op {
            method: "post",
            path: "/v1/instances/{id}/checkpoints",
            summary: "Take a named checkpoint",
            body: Some(r("CheckpointRequest")),
            ok: &[(201, Some("Checkpoint"))],
        },
        Op {
            method: "post",
            path: "/v1/instances/{id}/fork",
            summary: "Fork from a version or checkpoint",
            body: Some(r("Fork")),
            ok: &[(201, Some("Instance"))],
        },
        Op {
            method: "post",
            path: "/v1/instances/{id}/pause",
            summary: "Pause",
            body: Some(who.clone()),
            ok: &[(200, Some("Instance"))],
        },
        Op {
            method: "post",
            path: "/v1/instances/{id}/resume",
            summary: "Resume: apply queued events, then due timers",
            body: Some(who.clone()),
            ok: &[(200, Some("Instance"))],
        },
        Op {
            method: "post",
            path: "/v1/instances/{id}/cancel",
            summary: "Cancel",
            body: Some(who),
            ok: &[(200, Some("Instance"))],
        },
        Op {
            method: "get",
            path: "/v1/instances/{id}/export",
            summary: "Export (format=json|markdown|jsonl)",
            body: None,
            ok: &[(200, Some("Export"))],
        },
        Op {
            method: "post",
            path: "/v1/verify",
            summary: "Replay history and compare (one instance, or all)",
            body: Some(r("VerifyRequest")),
            ok: &[(200, Some("VerifyReport"))],
        },
        Op {
            method: "get",
            path: "/v1/approvals",
            summary: "Approvals (pending by default)",
            body: None,
            ok: &[(200, Some("Approvals"))],
        },
        Op {
            method: "post",
            path: "/v1/approvals/{aid}/approve",
            summary: "Approve",
            body: Some(r("Decide")),
            ok: &[(200, Some("Decided"))],
        },
        Op {
            method: "post",
            path: "/v1/approvals/{aid}/reject",
            summary: "Reject (reason required)",
            body: Some(json!({"allOf": [r("Decide")], "required": ["reason"]})),
            ok: &[(200, Some("Decided"))],
        },
        Op {
            method: "get",
            path: "/v1/tasks",
            summary: "Tasks",
            body: None,
            ok: &[(200, Some("Tasks"))],
        },
        Op {
            method: "post",
            path: "/v1/tasks/claim",
            summary: "Claim tasks (a long poll up to wait_ms)",
            body: Some(r("ClaimRequest")),
            ok: &[(200, Some("ClaimedList"))],
        },
        Op {
            method: "post",
            path: "/v1/tasks/report",
            summary: "Report outcomes of many attempts and claim the next tasks, in one unit of work",
            body: Some(r("ReportRequest")),
            ok: &[(200, Some("Reported"))],
        },
        Op {
            method: "post",
            path: "/v1/tasks/{id}/heartbeat",
            summary: "Renew a lease",
            body: Some(r("HeartbeatRequest")),
            ok: &[(200, Some("Heartbeat"))],
        },
        Op {
            method: "post",
            path: "/v1/tasks/{id}/complete",
            summary: "Complete an attempt",
            body: Some(r("CompleteRequest")),
            ok: &[(200, Some("Task"))],
        },
        Op {
            method: "post",
            path: "/v1/tasks/{id}/fail",
            summary: "Fail an attempt",
            body: Some(r("FailRequest")),
            ok: &[(200, Some("Failed"))],
        },
        Op {
            method: "get",
            path: "/v1/stats",
            summary: "Statistics",
            body: None,
            ok: &[(200, Some("Stats"))],
        },
        Op {
            method: "post",
            path: "/v1/tick",
            summary: "Fire due timers and schedules, reclaim leases, deliver the outbox, apply retention now",
            body: Some(r("TickRequest")),
            ok: &[(200, Some("Ticked"))],
        },
        Op {
            method: "post",
            path: "/v1/backup",
            summary: "An online backup of every namespace, streamed (a SQLite database file; a token scoped to `*`)",
            body: Some(r("Empty")),
            ok: &[(200, None)],
        },
        Op {
            method: "post",
            path: "/v1/repair",
            summary: "Find stored machine versions that cannot be read back and delete those no instance runs on (a token scoped to `*`)",
            body: Some(r("RepairRequest")),
            ok: &[(200, Some("Repair"))],
        },
        Op {
            method: "post",
            path: "/v1/vacuum",
            summary: "Give the space deletions freed back, in bounded steps that never stall writers; the space before and after (a token scoped to `*`)",
            body: Some(r("Empty")),
            ok: &[(200, Some("Vacuum"))],
        },
        Op {
            method: "post",
            path: "/v1/tokens",
            summary: "Create a token no stronger and no wider than the caller's; the answer holds its secret",
            body: Some(r("NewToken")),
            ok: &[(201, Some("CreatedToken"))],
        },
        Op {
            method: "get",
            path: "/v1/tokens",
            summary: "The tokens within the caller's namespaces (never their secrets)",
            body: None,
            ok: &[(200, Some("TokenList"))],
        },
        Op {
            method: "delete",
            path: "/v1/tokens/{id}",
            summary: "Revoke a token within the caller's namespaces",
            body: None,
            ok: &[(204, None)],
        },
        Op {
            method: "post",
            path: "/v1/triggers",
            summary: "Add a trigger: when an instance of a machine enters a state or ends with a status and a condition holds, start an instance or send an event",
            body: Some(r("Trigger")),
            ok: &[(201, Some("Trigger"))],
        },
        Op {
            method: "get",
            path: "/v1/triggers",
            summary: "The namespace's triggers",
            body: None,
            ok: &[(200, Some("Triggers"))],
        },
        Op {
            method: "delete",
            path: "/v1/triggers/{name}",
            summary: "Remove a trigger",
            body: None,
            ok: &[(204, None)],
        },
        Op {
            method: "post",
            path: "/v1/schedules",
            summary: "Add a cron schedule that starts instances of a machine",
            body: Some(r("Schedule")),
            ok: &[(201, Some("Schedule"))],
        },
        Op {
            method: "get",
            path: "/v1/schedules",
            summary: "The namespace's schedules, with their next and last ticks",
            body: None,
            ok: &[(200, Some("Schedules"))],
        },
        Op {
            method: "delete",
            path: "/v1/schedules/{name}",
            summary: "Remove a schedule",
            body: None,
            ok: &[(204, None)],
        },
        Op {
            method: "get",
            path: "/v1/events",
            summary: "Server-Sent Events of the commit-ordered log; Last-Event-ID resumes",
            body: None,
            ok: &[(200, None)],
        },
        Op {
            method: "get",
            path: "/healthz",
            summary: "Health",
            body: None,
            ok: &[(200, Some("Health"))],
        },
        Op {
            method: "get",
            path: "/openapi.json",
            summary: "This document",
            body: None,
            ok: &[(200, None)],
        },
        Op {
            method: "get",
            path: "/metrics",
            summary: "Prometheus metrics (text)",
            body: None,
            ok: &[(200, None)],
        },
        Op {
            method: "get",
            path: "/",
            summary: "A page linking what this server serves (HTML)",
            body: None,
            ok: &[(200, None)],
        },
    ]
}

fn schema_is_list(s: &Value) -> bool {
    s["type"] == "array"
}

/// The query parameters of an operation besides `namespace`: name, schema, meaning. The
/// server refuses any other (400), so this list is what each route takes.
pub fn query_params(method: &str, path: &str) -> Vec<(&'static str, Value, &'static str)> {
    let text = json!({"type": "string", "minLength": 1});
    let status = |values: &[&str]| json!({"type": "string", "enum": values});
    match (method.to_ascii_lowercase().as_str(), path) {
        ("get", "/v1/instances") => vec![
            ("machine", text.clone(), "Only instances of this machine"),
            (
                "status",
                status(&["running", "paused", "completed", "failed", "cancelled"]),
                "Only instances in this status",
            ),
            (
                "state",
                text.clone(),
                "Only instances in this state (a dotted path) or one of its descendants",
            ),
            (
                "parent",
                text.clone(),
                "Only the children this instance spawned",
            ),
            (
                "label",
                json!({"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}}),
                "`key=value`; repeat for several, all must match",
            ),
            (
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 1000}),
                "Page size (100 by default; at most `http.max_page`)",
            ),
            (
                "after",
                json!({"type": "string", "pattern": "^[0-9]+$"}),
                "The cursor of the next page (a page's `next`)",
            ),
        ],
        ("get", "/v1/instances/{id}/export") => vec![(
            "format",
            status(&["json", "markdown", "jsonl"]),
            "json (default), a Markdown report, or a JSONL trace",
        )],
        ("get", "/v1/machines/{name}/diagram") => vec![
            (
                "format",
                status(&["mermaid", "dot"]),
                "mermaid (default) or Graphviz dot",
            ),
            (
                "version",
                json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
                "A version; the latest by default",
            ),
            (
                "instance",
                text.clone(),
                "Highlight this instance's active states",
            ),
        ],
        ("get", "/v1/instances/{id}/history") => vec![
            (
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 1000}),
                "Only the newest this many records (at most `http.max_page`); all by default",
            ),
            (
                "before",
                json!({"type": "integer", "minimum": 1}),
                "Only records with a `seq` below this (page back with the first `seq` of a page)",
            ),
        ],
        ("get", "/v1/approvals") => vec![
            (
                "status",
                status(&["pending", "approved", "rejected", "cancelled", "all"]),
                "pending (default), or another status, or all",
            ),
            ("instance", text.clone(), "Only this instance's approvals"),
        ],
        ("get", "/v1/tasks") => vec![
            ("queue", text.clone(), "Only tasks of this queue"),
            (
                "status",
                status(&["pending", "leased", "completed", "failed", "cancelled"]),
                "Only tasks in this status",
            ),
            ("instance", text.clone(), "Only this instance's tasks"),
        ],
        ("get", "/v1/events") => vec![
            (
                "machine",
                text.clone(),
                "Only entries of this machine's instances",
            ),
            ("instance", text, "Only this instance's entries"),
            (
                "after",
                json!({"type": "integer", "minimum": 0}),
                "Resume after this log position (as `Last-Event-ID`)",
            ),
        ],
        _ => Vec::new(),
    }
}

/// The whole document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut g = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut named = Map::new();
    macro_rules! named {
        ($($name:literal => $t:ty),* $(,)?) => {
            $( named.insert($name.into(), g.subschema_for::<$t>().to_value()); )*
        };
    }
    named!(
        "Instance" => api::Instance, "Transition" => api::Transition, "Machine" => api::Machine,
        "Applied" => api::Applied, "Sent" => api::Sent, "InstancePage" => api::InstancePage,
        "Verified" => api::Verified, "Approval" => api::Approval, "Decided" => api::Decided,
        "Checkpoint" => api::Checkpoint, "Timer" => api::Timer, "Export" => api::Export,
        "Task" => api::Task, "Claimed" => api::Claimed, "Stats" => api::Stats, "Problem" => api::Problem,
        "Trigger" => api::Trigger, "Schedule" => api::Schedule, "Token" => api::Token,
        "CreatedToken" => api::CreatedToken, "NewToken" => api::NewToken, "Start" => api::Start,
        "Send" => api::Send, "Who" => api::Who, "Decide" => api::Decide, "Fork" => api::Fork,
        "Repair" => api::Repair,
        "Vacuum" => api::Vacuum,
        "CheckpointRequest" => api::CheckpointRequest, "VerifyRequest" => api::VerifyRequest,
        "VerifyReport" => api::VerifyReport, "TickRequest" => api::TickRequest,
        "Ticked" => api::Ticked, "RepairRequest" => api::RepairRequest, "Empty" => api::Empty,
        "ClaimRequest" => api::ClaimRequest, "HeartbeatRequest" => api::HeartbeatRequest,
        "Heartbeat" => api::Heartbeat, "CompleteRequest" => api::CompleteRequest,
        "FailRequest" => api::FailRequest, "Failed" => api::Failed, "Health" => api::Health,
        "MachineDetail" => api::MachineDetail, "LogEvent" => api::LogEvent,
        "Waiting" => api::Waiting, "ReportRequest" => api::ReportRequest,
        "Reported" => api::Reported,
    );
    let mut schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    for (k, v) in named {
        // Types schemars inlined (no $ref) are registered under their name here.
        let referenced = format!("#/components/schemas/{k}");
        if v.get("$ref").and_then(Value::as_str) != Some(referenced.as_str()) {
            schemas.insert(k, v);
        }
    }
    let list = |item: &str| json!({"type": "array", "items": r(item)});
    let extra = [
        ("MachineList", list("Machine")),
        (
            "Strings",
            json!({"type": "array", "items": {"type": "string"}}),
        ),
        ("History", list("Transition")),
        ("Checkpoints", list("Checkpoint")),
        ("Approvals", list("Approval")),
        ("Tasks", list("Task")),
        ("Triggers", list("Trigger")),
        ("Schedules", list("Schedule")),
        ("ClaimedList", list("Claimed")),
        ("TokenList", list("Token")),
    ];
    for (k, v) in extra {
        schemas.insert(k.into(), v);
    }
    let mut paths = Map::new();
    for op in ops() {
        let mut responses = Map::new();
        for (status, schema) in op.ok {
            let mut resp = json!({"description": "success"});
            if let Some(s) = schema {
                resp["content"] = json!({"application/json": {"schema": r(s)}});
            }
            responses.insert(status.to_string(), resp);
        }
        responses.insert("default".into(), json!({"description": "a problem", "content": {"application/problem+json": {"schema": r("Problem")}}}));
        let route = crate::routes::route(op.method, op.path)
            .unwrap_or_else(|| panic!("{} {} is documented but not routed", op.method, op.path));
        let mut operation = json!({
            "summary": op.summary,
            "responses": responses,
            "x-cairn-access": {
                "role": route.access.role.as_str(),
                "scope": format!("{:?}", route.access.scope).to_lowercase(),
            },
        });
        if route.access.scope == crate::auth::Scope::Open {
            operation["security"] = json!([]);
            operation["x-cairn-access"] = json!({"scope": "open"});
        }
        if let Some(b) = op.body {
            // Lifecycle changes, decisions and operations take an empty body too.
            let optional = matches!(
                op.path.rsplit('/').next(),
                Some(
                    "pause"
                        | "resume"
                        | "cancel"
                        | "approve"
                        | "reject"
                        | "verify"
                        | "tick"
                        | "backup"
                        | "repair"
                        | "vacuum"
                )
            );
            let media = if route.access.definition {
                json!({
                    "application/json": {"schema": b},
                    "application/yaml": {"schema": {"type": "string"}},
                    "application/toml": {"schema": {"type": "string"}},
                })
            } else {
                json!({"application/json": {"schema": b}})
            };
            operation["requestBody"] = json!({"required": !optional, "content": media});
        }
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = if name == "version" {
                    json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
                } else {
                    json!({"type": "string", "minLength": 1})
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .chain(query_params(op.method, op.path).into_iter().map(|(name, schema, about)| {
                let mut p = json!({"name": name, "in": "query", "description": about, "schema": schema});
                if schema_is_list(&p["schema"]) {
                    p["style"] = json!("form");
                    p["explode"] = json!(true);
                }
                p
            }))
            .chain(match route.access.scope {
                crate::auth::Scope::Open => None,
                crate::auth::Scope::One => Some(json!({"name": "namespace", "in": "query", "description": "The namespace (given once)", "schema": {"type": "string", "default": "default"}})),
                _ => Some(json!({"name": "namespace", "in": "query", "description": "Narrows the request to one of the token's namespaces (given once)", "schema": {"type": "string"}})),
            })
            .collect();
        operation["parameters"] = Value::Array(params);
        paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}))[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Cairn", "version": env!("CARGO_PKG_VERSION"), "description": "Durable statecharts for AI-agent workflows."},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}
