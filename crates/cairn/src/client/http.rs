//! The one implementation of [`Client`]: every command is an HTTP request to the API,
//! either over the network to a running `cairn serve` (`--server URL` / `CAIRN_SERVER`,
//! with `--token` / `CAIRN_TOKEN`) or, embedded, to the server's own router in this
//! process (`Http::embedded`: the store of the data directory or `database`, as an
//! unrestricted local principal without the HTTP limits). Both modes share every piece
//! of logic; problems map to exit codes through `cairn_api::ProblemType`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::anyhow;
use cairn_api::{
    Applied, Approval, Checkpoint, Decided, Export, Instance, InstancePage, Machine, Sent,
    Transition, Verified,
};
use cairn_engine::{DecideRequest, ForkFrom, Retention, SendRequest, Stats};
use cairn_store::{ApprovalStatus, InstanceFilter, TaskStatus};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Client;
use crate::Failure;

pub struct Http {
    transport: Transport,
    namespace: String,
}

/// Where requests go.
enum Transport {
    /// A server over the network.
    Net {
        base: String,
        token: Option<String>,
        agent: ureq::Agent,
    },
    /// The server's router in this process; its runtime runs the handlers.
    Embedded {
        app: axum::Router,
        runtime: tokio::runtime::Runtime,
    },
}

/// An answer's body, read once.
enum Answer<'a> {
    Net(ureq::Body),
    Embedded(axum::body::Body, &'a tokio::runtime::Runtime),
}

impl Answer<'_> {
    /// The whole body, up to `limit` bytes over the network (in process, the embedded
    /// client has no HTTP limits: the whole body).
    fn bytes(self, limit: usize) -> Result<Vec<u8>, Failure> {
        match self {
            Answer::Net(mut b) => b
                .with_config()
                .limit(limit as u64)
                .read_to_vec()
                .map_err(|e| Failure::from(anyhow!("reading the response: {e}"))),
            Answer::Embedded(b, runtime) => runtime
                .block_on(axum::body::to_bytes(b, usize::MAX))
                .map(|b| b.to_vec())
                .map_err(|e| Failure::from(anyhow!("reading the response: {e}"))),
        }
    }

    /// Copies the body into `out` as it comes; the bytes copied.
    fn copy_to(self, out: &mut impl std::io::Write) -> std::io::Result<u64> {
        match self {
            Answer::Net(mut b) => std::io::copy(&mut b.as_reader(), out),
            Answer::Embedded(mut b, runtime) => {
                use http_body_util::BodyExt as _;
                let mut n = 0u64;
                while let Some(frame) = runtime.block_on(b.frame()) {
                    let frame = frame.map_err(std::io::Error::other)?;
                    if let Ok(data) = frame.into_data() {
                        out.write_all(&data)?;
                        n += data.len() as u64;
                    }
                }
                Ok(n)
            }
        }
    }
}

/// A path segment, percent-encoded (`a/b` stays one segment).
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A request body as JSON; the bodies are `cairn-api` types, as the server reads them.
fn body<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).expect("a cairn-api body serialises")
}

/// The body of a lifecycle change.
fn who(actor: &str, reason: &str) -> Value {
    body(cairn_api::Who {
        actor: actor.to_string(),
        reason: reason.to_string(),
        on_behalf_of: None,
    })
}

impl Http {
    /// A client of the server at `base`.
    pub fn new(base: &str, token: Option<String>, namespace: &str) -> Result<Http, Failure> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::usage(anyhow!(
                "`--server {base}` must be an http:// or https:// URL"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Http {
            transport: Transport::Net {
                base: base.trim_end_matches('/').to_string(),
                token,
                agent,
            },
            namespace: namespace.to_string(),
        })
    }

    /// The embedded client: the server's router in this process, on the store the
    /// settings name (which it opens, and locks when it is a data directory), as an
    /// unrestricted local principal, without body, page or time limits.
    /// The client a command uses: the server `--server` (or `CAIRN_SERVER`, or the
    /// `server` setting) names; else the data directory's store in process; else, when a
    /// `cairn serve` holds that directory, that server (said once on stderr).
    pub fn connect(
        g: &crate::Global,
        settings: &crate::config::Settings,
        config: cairn_engine::Config,
    ) -> Result<Http, Failure> {
        if let Some(url) = g.server.as_ref().or(settings.server.as_ref()) {
            return Http::new(url, g.token.clone(), &g.namespace);
        }
        match crate::store::engine(settings, config) {
            Ok(engine) => Http::embedded(engine, settings, &g.namespace),
            // Held: by a `cairn serve` whose record names it, that server answers.
            Err(cairn_engine::Error::Store(cairn_store::Error::Locked(why))) => {
                match settings
                    .database
                    .is_none()
                    .then(|| crate::held::server(&settings.data))
                    .flatten()
                {
                    Some((url, pid)) => {
                        eprintln!(
                            "cairn: {} is held by `cairn serve` (pid {pid}); talking to it at {url}",
                            settings.data.display()
                        );
                        Http::new(&url, g.token.clone(), &g.namespace)
                    }
                    None => Err(super::failure(cairn_engine::Error::Store(
                        cairn_store::Error::Locked(why),
                    ))),
                }
            }
            Err(e) => Err(super::failure(e)),
        }
    }

    /// The store of the data directory (or `database`), open in this process, with the
    /// server's own router: no network, no auth, no HTTP limits.
    fn embedded(
        engine: cairn_engine::Engine<cairn_store_any::AnyStore>,
        settings: &crate::config::Settings,
        namespace: &str,
    ) -> Result<Http, Failure> {
        let local = cairn_server::Settings {
            auth: false,
            max_body_bytes: usize::MAX,
            max_page: usize::MAX,
            request_timeout: std::time::Duration::from_secs(365 * 24 * 3600),
            max_claim_wait: std::time::Duration::from_secs(365 * 24 * 3600),
            ..cairn_server::Settings::default()
        };
        let ctx = crate::store::server_context(engine, local, settings);
        // This thread drives the router (and blocking handlers run on the runtime's pool).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::from(anyhow!("starting the async runtime: {e}")))?;
        Ok(Http {
            transport: Transport::Embedded {
                app: cairn_server::app(ctx),
                runtime,
            },
            namespace: namespace.to_string(),
        })
    }

    /// A path with its query, the namespace first.
    fn url(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("namespace", &self.namespace);
        for (k, v) in query {
            q.append_pair(k, v);
        }
        format!("{path}?{}", q.finish())
    }

    /// Sends a request; the answer's body, or the problem it carries as a failure.
    fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer<'_>, Failure> {
        // Every POST carries a JSON content type, even when empty: the server refuses a
        // state change without one (no cross-site form can send it).
        let body = match (body, method) {
            (Some(b), _) => Some(b),
            (None, "POST") => Some(("application/json", Vec::new())),
            (None, _) => None,
        };
        let (status, answer) = match &self.transport {
            Transport::Net { base, token, agent } => {
                let mut req = ureq::http::Request::builder()
                    .method(method)
                    .uri(format!("{base}{url}"));
                if let Some(t) = token {
                    req = req.header("Authorization", format!("Bearer {t}"));
                }
                let result = match body {
                    Some((ct, bytes)) => agent.run(
                        req.header("Content-Type", ct)
                            .body(bytes)
                            .map_err(|e| anyhow!("{e}"))?,
                    ),
                    None => agent.run(req.body(()).map_err(|e| anyhow!("{e}"))?),
                };
                let resp = result.map_err(|e| {
                    Failure::from(anyhow!("cannot reach the server at {base}: {e}"))
                })?;
                (resp.status().as_u16(), Answer::Net(resp.into_body()))
            }
            Transport::Embedded { app, runtime } => {
                use tower::ServiceExt as _;
                let mut req = axum::http::Request::builder().method(method).uri(url);
                let bytes = match body {
                    Some((ct, bytes)) => {
                        req = req.header("Content-Type", ct);
                        bytes
                    }
                    None => Vec::new(),
                };
                let req = req
                    .body(axum::body::Body::from(bytes))
                    .map_err(|e| anyhow!("{e}"))?;
                let resp = runtime
                    .block_on(app.clone().oneshot(req))
                    .map_err(|e| Failure::from(anyhow!("{e}")))?;
                let status = resp.status().as_u16();
                (status, Answer::Embedded(resp.into_body(), runtime))
            }
        };
        if status >= 400 {
            return Err(problem(status, &answer.bytes(1024 * 1024)?));
        }
        Ok(answer)
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Vec<u8>, Failure> {
        self.request(method, url, body)?.bytes(64 * 1024 * 1024)
    }
}

fn to_json<T: serde::Serialize>(body: &T) -> Result<Value, Failure> {
    serde_json::to_value(body).map_err(|e| Failure::from(anyhow!("{e}")))
}

/// The failure a problem response stands for.
fn problem(status: u16, bytes: &[u8]) -> Failure {
    {
        {
            let problem: Value = serde_json::from_slice(bytes)
                .unwrap_or_else(|_| json!({"detail": String::from_utf8_lossy(bytes)}));
            let kind = problem["type"].as_str().unwrap_or("");
            let detail = problem["detail"]
                .as_str()
                .unwrap_or("the server refused the request")
                .to_string();
            Failure {
                code: cairn_api::ProblemType::exit_code_for(kind, status),
                error: anyhow!("{detail}"),
            }
        }
    }
}

/// One Server-Sent Event: its id (the log position), its event name and its data.
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

/// Parses an event stream as it arrives and hands each complete event on.
struct SseLines<F: FnMut(SseEvent) -> std::io::Result<()>> {
    line: Vec<u8>,
    event: SseEvent,
    each: F,
}

impl<F: FnMut(SseEvent) -> std::io::Result<()>> std::io::Write for SseLines<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_string();
            self.line.clear();
            if line.is_empty() {
                // A blank line ends an event (a keep-alive comment leaves nothing to send).
                let done = std::mem::replace(
                    &mut self.event,
                    SseEvent {
                        id: None,
                        event: String::new(),
                        data: String::new(),
                    },
                );
                if !done.data.is_empty() {
                    (self.each)(done)?;
                }
            } else if let Some(v) = line.strip_prefix("id:") {
                self.event.id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                self.event.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.event.data.is_empty() {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Http {
    /// Whether requests go to a server over the network (not the router in process).
    pub fn is_remote(&self) -> bool {
        matches!(self.transport, Transport::Net { .. })
    }

    /// Reads `GET /v1/events` with `query` until the stream ends or breaks, handing each
    /// event to `each` as it arrives. `Ok` when the stream ended (the server went away);
    /// an error from `each` stops it.
    pub fn events(
        &self,
        query: &[(&str, String)],
        each: impl FnMut(SseEvent) -> std::io::Result<()>,
    ) -> Result<(), Failure> {
        let url = self.url("/v1/events", query);
        let answer = self.request("GET", &url, None)?;
        let mut sink = SseLines {
            line: Vec::new(),
            event: SseEvent {
                id: None,
                event: String::new(),
                data: String::new(),
            },
            each,
        };
        answer
            .copy_to(&mut sink)
            .map(|_| ())
            .map_err(|e| Failure::from(anyhow!("the event stream broke: {e}")))
    }

    /// A raw call for commands without a `Client` method (tokens); `Null` for no content.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let url = self.url(path, &[]);
        let bytes = self.send(
            method,
            &url,
            body.map(|b| ("application/json", b.to_string().into_bytes())),
        )?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::from(anyhow!("unexpected answer from the server: {e}")))
    }

    fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<T, Failure> {
        let url = self.url(path, query);
        let bytes = self.send(
            method,
            &url,
            body.map(|b| ("application/json", b.to_string().into_bytes())),
        )?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::from(anyhow!("unexpected answer from the server: {e}")))
    }
}

impl Client for Http {
    fn apply(&self, text: &str, file: &str) -> Result<Applied, Failure> {
        let ct = match cairn_core::Format::from_path(file)
            .unwrap_or_else(|| cairn_core::Format::sniff(text))
        {
            cairn_core::Format::Json => "application/json",
            cairn_core::Format::Yaml => "application/yaml",
            cairn_core::Format::Toml => "application/toml",
        };
        let url = self.url("/v1/machines", &[]);
        let bytes = self.send("POST", &url, Some((ct, text.as_bytes().to_vec())))?;
        serde_json::from_slice(&bytes).map_err(|e| Failure::from(anyhow!("unexpected answer: {e}")))
    }

    fn machines(&self) -> Result<Vec<Machine>, Failure> {
        self.json("GET", "/v1/machines", &[], None)
    }

    fn delete_machine(&self, name: &str, version: u32) -> Result<(), Failure> {
        let url = self.url(
            &format!("/v1/machines/{}/versions/{version}", enc(name)),
            &[],
        );
        self.send("DELETE", &url, None).map(|_| ())
    }

    fn repair(&self, dry_run: bool) -> Result<cairn_api::Repair, Failure> {
        self.json(
            "POST",
            "/v1/repair",
            &[],
            Some(body(cairn_api::RepairRequest { dry_run })),
        )
    }

    fn vacuum(&self) -> Result<cairn_api::Vacuum, Failure> {
        self.json("POST", "/v1/vacuum", &[], Some(body(cairn_api::Empty {})))
    }

    fn start(
        &self,
        machine: &str,
        id: Option<String>,
        input: Value,
        labels: BTreeMap<String, String>,
    ) -> Result<Instance, Failure> {
        let body = cairn_api::Start {
            machine: machine.to_string(),
            id,
            input,
            labels,
            ..Default::default()
        };
        self.json("POST", "/v1/instances", &[], Some(to_json(&body)?))
    }

    fn send(&self, id: &str, r: SendRequest) -> Result<Sent, Failure> {
        let body = cairn_api::Send {
            event: r.event,
            payload: r.payload,
            key: r.key,
            expected_version: r.expected_version,
            actor: r.actor.name,
            reason: r.reason,
            on_behalf_of: r.actor.on_behalf_of,
        };
        self.json(
            "POST",
            &format!("/v1/instances/{}/events", enc(id)),
            &[],
            Some(to_json(&body)?),
        )
    }

    fn get(&self, id: &str) -> Result<Instance, Failure> {
        self.json("GET", &format!("/v1/instances/{}", enc(id)), &[], None)
    }

    fn list(&self, f: InstanceFilter) -> Result<InstancePage, Failure> {
        let mut q = vec![("limit", f.limit.to_string())];
        if let Some(m) = f.machine {
            q.push(("machine", m));
        }
        if let Some(s) = f.status {
            q.push(("status", s.as_str().to_string()));
        }
        if let Some(s) = f.state {
            q.push(("state", s));
        }
        for (k, v) in f.labels {
            q.push(("label", format!("{k}={v}")));
        }
        if let Some(p) = f.parent {
            q.push(("parent", p));
        }
        if let Some(a) = f.after {
            q.push(("after", a));
        }
        self.json("GET", "/v1/instances", &q, None)
    }

    fn history(
        &self,
        id: &str,
        before: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<Transition>, Failure> {
        let path = format!("/v1/instances/{}/history", enc(id));
        let Some(mut left) = limit else {
            let q: Vec<(&str, String)> = before
                .map(|b| ("before", b.to_string()))
                .into_iter()
                .collect();
            return self.json("GET", &path, &q, None);
        };
        // Pages of at most 1,000 (the server's default page limit), back from the end.
        let mut out: Vec<Transition> = Vec::new();
        let mut before = before;
        while left > 0 {
            let n = left.min(1000);
            let mut q = vec![("limit", n.to_string())];
            if let Some(b) = before {
                q.push(("before", b.to_string()));
            }
            let mut page: Vec<Transition> = self.json("GET", &path, &q, None)?;
            let got = page.len();
            before = page.first().map(|t| t.seq);
            page.append(&mut out);
            out = page;
            if got < n || before.is_none_or(|b| b <= 1) {
                break;
            }
            left -= got;
        }
        Ok(out)
    }

    fn accepts(&self, id: &str) -> Result<Vec<String>, Failure> {
        self.json(
            "GET",
            &format!("/v1/instances/{}/accepts", enc(id)),
            &[],
            None,
        )
    }

    fn diagram(
        &self,
        machine: &str,
        format: &str,
        instance: Option<&str>,
    ) -> Result<String, Failure> {
        let mut query = vec![("format", format.to_string())];
        if let Some(i) = instance {
            query.push(("instance", i.to_string()));
        }
        let url = self.url(&format!("/v1/machines/{}/diagram", enc(machine)), &query);
        let bytes = self.send("GET", &url, None)?;
        String::from_utf8(bytes).map_err(|e| Failure::from(anyhow!("the diagram is not text: {e}")))
    }

    fn waiting(&self, id: &str) -> Result<cairn_api::Waiting, Failure> {
        self.json(
            "GET",
            &format!("/v1/instances/{}/waiting", enc(id)),
            &[],
            None,
        )
    }

    fn verify(&self, id: &str) -> Result<Verified, Failure> {
        let req = cairn_api::VerifyRequest {
            id: Some(id.to_string()),
        };
        let report: cairn_api::VerifyReport =
            self.json("POST", "/v1/verify", &[], Some(body(req)))?;
        report
            .instances
            .into_iter()
            .next()
            .ok_or_else(|| Failure::from(anyhow!("unexpected answer: no instance verified")))
    }

    fn ids(&self) -> Result<Vec<String>, Failure> {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = self.list(InstanceFilter {
                limit: 1000,
                after: after.clone(),
                ..Default::default()
            })?;
            ids.extend(page.instances.into_iter().map(|i| i.id));
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(ids),
            }
        }
    }

    fn tick(&self, r: &Retention) -> Result<cairn_api::Ticked, Failure> {
        let req = cairn_api::TickRequest {
            retain_finished_ms: r.finished_after.map(|d| d.num_milliseconds()),
            max_history: r.max_history,
        };
        self.json("POST", "/v1/tick", &[], Some(body(req)))
    }

    fn checkpoint(&self, id: &str, name: &str) -> Result<Checkpoint, Failure> {
        self.json(
            "POST",
            &format!("/v1/instances/{}/checkpoints", enc(id)),
            &[],
            Some(body(cairn_api::CheckpointRequest {
                name: name.to_string(),
            })),
        )
    }

    fn fork(
        &self,
        id: &str,
        from: ForkFrom,
        new_id: Option<String>,
        patch: Option<Value>,
    ) -> Result<Instance, Failure> {
        let from = match from {
            ForkFrom::Version(v) => json!(v),
            ForkFrom::Checkpoint(c) => json!(c),
        };
        self.json(
            "POST",
            &format!("/v1/instances/{}/fork", enc(id)),
            &[],
            Some(body(cairn_api::Fork {
                from,
                id: new_id,
                patch,
                ..Default::default()
            })),
        )
    }

    fn pause(&self, id: &str, actor: &str, reason: &str) -> Result<Instance, Failure> {
        self.json(
            "POST",
            &format!("/v1/instances/{}/pause", enc(id)),
            &[],
            Some(who(actor, reason)),
        )
    }

    fn resume(&self, id: &str, actor: &str, reason: &str) -> Result<Instance, Failure> {
        self.json(
            "POST",
            &format!("/v1/instances/{}/resume", enc(id)),
            &[],
            Some(who(actor, reason)),
        )
    }

    fn cancel(&self, id: &str, actor: &str, reason: &str) -> Result<Instance, Failure> {
        self.json(
            "POST",
            &format!("/v1/instances/{}/cancel", enc(id)),
            &[],
            Some(who(actor, reason)),
        )
    }

    fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        instance: Option<&str>,
    ) -> Result<Vec<Approval>, Failure> {
        let mut q = vec![(
            "status",
            status.map_or("all".to_string(), |s| s.as_str().to_string()),
        )];
        if let Some(i) = instance {
            q.push(("instance", i.to_string()));
        }
        self.json("GET", "/v1/approvals", &q, None)
    }

    fn decide(&self, id: &str, r: DecideRequest) -> Result<Decided, Failure> {
        let aid = match r.approval {
            Some(a) => a,
            None => {
                let pending = self.approvals(Some(ApprovalStatus::Pending), Some(id))?;
                match pending.len() {
                    0 => {
                        return Err(Failure {
                            code: 4,
                            error: anyhow!("instance `{id}` has no pending approval"),
                        });
                    }
                    1 => pending[0].id.clone(),
                    n => {
                        let list: Vec<String> = pending
                            .iter()
                            .map(|a| format!("{} (state {})", a.id, a.state))
                            .collect();
                        return Err(Failure::usage(anyhow!(
                            "instance `{id}` has {n} pending approvals: {}; choose one with --approval",
                            list.join(", ")
                        )));
                    }
                }
            }
        };
        let verb = if r.approve { "approve" } else { "reject" };
        let d: Decided = self.json(
            "POST",
            &format!("/v1/approvals/{}/{verb}", enc(&aid)),
            &[],
            Some(to_json(&cairn_api::Decide {
                actor: r.actor.name,
                reason: r.reason,
                payload: r.payload,
                on_behalf_of: r.actor.on_behalf_of,
            })?),
        )?;
        if d.instance.id != id {
            return Err(Failure::usage(anyhow!(
                "approval `{aid}` belongs to instance `{}`, not `{id}`",
                d.instance.id
            )));
        }
        Ok(d)
    }

    fn delete(&self, id: &str) -> Result<(), Failure> {
        let url = self.url(&format!("/v1/instances/{}", enc(id)), &[]);
        self.send("DELETE", &url, None).map(|_| ())
    }

    fn add_trigger(&self, t: cairn_api::Trigger) -> Result<cairn_api::Trigger, Failure> {
        let body = serde_json::to_value(&t).map_err(|e| Failure::from(anyhow!("{e}")))?;
        self.json("POST", "/v1/triggers", &[], Some(body))
    }

    fn triggers(&self) -> Result<Vec<cairn_api::Trigger>, Failure> {
        self.json("GET", "/v1/triggers", &[], None)
    }

    fn remove_trigger(&self, name: &str) -> Result<(), Failure> {
        let url = self.url(&format!("/v1/triggers/{}", enc(name)), &[]);
        self.send("DELETE", &url, None).map(|_| ())
    }

    fn add_schedule(&self, s: cairn_api::Schedule) -> Result<cairn_api::Schedule, Failure> {
        let body = serde_json::to_value(&s).map_err(|e| Failure::from(anyhow!("{e}")))?;
        self.json("POST", "/v1/schedules", &[], Some(body))
    }

    fn schedules(&self) -> Result<Vec<cairn_api::Schedule>, Failure> {
        self.json("GET", "/v1/schedules", &[], None)
    }

    fn remove_schedule(&self, name: &str) -> Result<(), Failure> {
        let url = self.url(&format!("/v1/schedules/{}", enc(name)), &[]);
        self.send("DELETE", &url, None).map(|_| ())
    }

    fn finished_before(&self, age: chrono::Duration) -> Result<Vec<String>, Failure> {
        let cutoff = chrono::Utc::now() - age;
        let mut out = Vec::new();
        for status in [
            cairn_core::Status::Completed,
            cairn_core::Status::Failed,
            cairn_core::Status::Cancelled,
        ] {
            let mut after = None;
            loop {
                let page = self.list(InstanceFilter {
                    status: Some(status),
                    limit: 1000,
                    after: after.clone(),
                    ..Default::default()
                })?;
                out.extend(
                    page.instances
                        .into_iter()
                        .filter(|i| i.updated_at < cutoff)
                        .map(|i| i.id),
                );
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    fn export(&self, id: &str) -> Result<Export, Failure> {
        self.json(
            "GET",
            &format!("/v1/instances/{}/export", enc(id)),
            &[("format", "json".into())],
            None,
        )
    }

    fn stats(&self) -> Result<Stats, Failure> {
        self.json("GET", "/v1/stats", &[], None)
    }

    /// Downloads the server's backup into `file` on this machine (through a `.partial`
    /// file, renamed once complete).
    fn backup(&self, file: &Path) -> Result<u64, Failure> {
        if file.exists() {
            return Err(Failure {
                code: 4,
                error: anyhow!("{} exists; choose a new file", file.display()),
            });
        }
        let url = self.url("/v1/backup", &[]);
        let answer = self.request("POST", &url, None)?;
        let mut partial = file.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let copied = (|| -> std::io::Result<u64> {
            let mut out = std::fs::File::create(&partial)?;
            let n = answer.copy_to(&mut out)?;
            out.sync_all()?;
            std::fs::rename(&partial, file)?;
            Ok(n)
        })();
        copied.map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            Failure::from(anyhow!("writing the backup to {}: {e}", file.display()))
        })
    }

    fn tasks(
        &self,
        queue: Option<&str>,
        status: Option<TaskStatus>,
        instance: Option<&str>,
    ) -> Result<Vec<cairn_api::Task>, Failure> {
        let mut q = Vec::new();
        if let Some(x) = queue {
            q.push(("queue", x.to_string()));
        }
        if let Some(s) = status {
            q.push(("status", s.as_str().to_string()));
        }
        if let Some(i) = instance {
            q.push(("instance", i.to_string()));
        }
        self.json("GET", "/v1/tasks", &q, None)
    }

    fn claim(
        &self,
        queues: &[String],
        worker: &str,
        batch: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<cairn_api::Claimed>, Failure> {
        self.json(
            "POST",
            "/v1/tasks/claim",
            &[],
            Some(body(cairn_api::ClaimRequest {
                queues: queues.to_vec(),
                worker: worker.to_string(),
                batch,
                wait_ms: 2000,
                lease_ms: Some(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)),
            })),
        )
    }

    fn heartbeat(
        &self,
        task: &str,
        attempt: u32,
        lease: std::time::Duration,
    ) -> Result<(), Failure> {
        self.json::<Value>(
            "POST",
            &format!("/v1/tasks/{}/heartbeat", enc(task)),
            &[],
            Some(body(cairn_api::HeartbeatRequest {
                attempt,
                lease_ms: Some(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)),
            })),
        )
        .map(|_| ())
    }

    fn report(&self, report: cairn_api::ReportRequest) -> Result<cairn_api::Reported, Failure> {
        self.json("POST", "/v1/tasks/report", &[], Some(body(report)))
    }
}
