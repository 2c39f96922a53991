//! Prometheus metrics, kept by hand with atomics: requests by status, request latency as
//! a histogram, open streams; the engine's counters (events applied and refused, unit
//! commit latency, task attempts); and the store's figures, which the units that change
//! what they count keep (instances by status, tasks and queue depth, timers, the outbox):
//! a scrape reads a few rows, never scans.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The HTTP layer's counters, rendered with the engine's and the store's at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    requests: [AtomicU64; 6],
    latency: [AtomicU64; 13],
    latency_sum_us: AtomicU64,
    /// Event streams open now.
    pub open_streams: AtomicU64,
    /// Requests refused by the access guard.
    pub refusals: AtomicU64,
}

impl Metrics {
    fn record(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        let i = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        if status == 409 || status == 422 {
            self.refusals.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition, with the engine's figures appended by the caller.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP cairn_http_requests_total HTTP requests by status class.\n# TYPE cairn_http_requests_total counter\n");
        for (i, class) in ["", "1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .enumerate()
            .skip(1)
        {
            let _ = writeln!(
                out,
                "cairn_http_requests_total{{class=\"{class}\"}} {}",
                self.requests[i].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP cairn_http_request_duration_seconds HTTP request latency.\n# TYPE cairn_http_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "cairn_http_request_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.latency[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "cairn_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "cairn_http_request_duration_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "cairn_http_request_duration_seconds_count {cumulative}"
        );
        out.push_str("# HELP cairn_refusals_total Requests refused (409, 422).\n# TYPE cairn_refusals_total counter\n");
        let _ = writeln!(
            out,
            "cairn_refusals_total {}",
            self.refusals.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP cairn_open_streams Open event streams.\n# TYPE cairn_open_streams gauge\n",
        );
        let _ = writeln!(
            out,
            "cairn_open_streams {}",
            self.open_streams.load(Ordering::Relaxed)
        );
        out
    }
}

/// A label value, escaped as the text format wants it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One series per key, with the help and type lines first.
fn family<K: Ord>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    series: std::collections::BTreeMap<K, i64>,
    labels: impl Fn(&K) -> String,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (k, v) in &series {
        let l = labels(k);
        if l.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
    }
}

/// The engine's counters and the store's figures, for the namespaces `allows` admits.
/// With `named` (a token scoped to `*`) series carry `namespace` and `machine` labels;
/// otherwise they are summed over the caller's namespaces and carry neither.
pub fn engine_text(
    counters: &cairn_engine::CountersSnapshot,
    figures: &[cairn_store::Figure],
    timers_due: &[(String, u64)],
    allows: impl Fn(&str) -> bool,
    named: bool,
) -> String {
    use std::collections::BTreeMap;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP cairn_transitions_total Events applied (starts included) and committed by this process.\n# TYPE cairn_transitions_total counter\ncairn_transitions_total {}",
        counters.transitions
    );
    let _ = writeln!(
        out,
        "# HELP cairn_transitions_refused_total Events this process refused: not accepted, a guard that failed, a limit.\n# TYPE cairn_transitions_refused_total counter\ncairn_transitions_refused_total {}",
        counters.refused
    );
    out.push_str("# HELP cairn_unit_commit_seconds Time from submitting a unit of work to its commit.\n# TYPE cairn_unit_commit_seconds histogram\n");
    for (i, b) in cairn_engine::COMMIT_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "cairn_unit_commit_seconds_bucket{{le=\"{b}\"}} {}",
            counters.commit_buckets[i]
        );
    }
    let total = counters.commit_buckets.last().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "cairn_unit_commit_seconds_bucket{{le=\"+Inf\"}} {total}\ncairn_unit_commit_seconds_sum {}\ncairn_unit_commit_seconds_count {total}",
        counters.commit_seconds
    );
    // (namespace, name, detail) with the namespace blank unless `named`.
    let key = |ns: &str, name: &str, detail: &str| {
        let ns = if named { ns.to_string() } else { String::new() };
        (ns, name.to_string(), detail.to_string())
    };
    let mut attempts = BTreeMap::new();
    for ((ns, queue, outcome), n) in &counters.attempts {
        if allows(ns) {
            *attempts.entry(key(ns, queue, outcome)).or_insert(0) += *n as i64;
        }
    }
    let mut by_kind: BTreeMap<&str, BTreeMap<(String, String, String), i64>> = BTreeMap::new();
    for f in figures.iter().filter(|f| allows(&f.namespace)) {
        let name = if f.kind == "instances" && !named {
            ""
        } else {
            f.name.as_str()
        };
        *by_kind
            .entry(f.kind.as_str())
            .or_default()
            .entry(key(&f.namespace, name, &f.detail))
            .or_insert(0) += f.value;
    }
    let mut due = BTreeMap::new();
    for (ns, n) in timers_due.iter().filter(|(ns, _)| allows(ns)) {
        *due.entry(key(ns, "", "")).or_insert(0) += *n as i64;
    }
    let mut fig = |kind: &str| by_kind.remove(kind).unwrap_or_default();
    let ns_label = |k: &(String, String, String)| {
        if named {
            format!("namespace=\"{}\"", label(&k.0))
        } else {
            String::new()
        }
    };
    let with = |base: String, more: String| match (base.is_empty(), more.is_empty()) {
        (true, _) => more,
        (_, true) => base,
        _ => format!("{base},{more}"),
    };
    family(
        &mut out,
        "cairn_task_attempts_total",
        "counter",
        "Task attempts this process ended, by queue and outcome.",
        attempts,
        |k| {
            with(
                ns_label(k),
                format!("queue=\"{}\",outcome=\"{}\"", label(&k.1), label(&k.2)),
            )
        },
    );
    family(
        &mut out,
        "cairn_instances",
        "gauge",
        "Instances stored, by status (and machine, for a token scoped to every namespace).",
        fig("instances"),
        |k| {
            let machine = if named {
                format!("machine=\"{}\",", label(&k.1))
            } else {
                String::new()
            };
            with(ns_label(k), format!("{machine}status=\"{}\"", label(&k.2)))
        },
    );
    let tasks = fig("tasks");
    let depth: BTreeMap<_, _> = tasks
        .iter()
        .filter(|(k, _)| k.2 == "pending")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    family(
        &mut out,
        "cairn_tasks",
        "gauge",
        "Tasks stored, by queue and status.",
        tasks,
        |k| {
            with(
                ns_label(k),
                format!("queue=\"{}\",status=\"{}\"", label(&k.1), label(&k.2)),
            )
        },
    );
    family(
        &mut out,
        "cairn_queue_depth",
        "gauge",
        "Tasks waiting to be claimed, by queue.",
        depth,
        |k| with(ns_label(k), format!("queue=\"{}\"", label(&k.1))),
    );
    family(
        &mut out,
        "cairn_timers",
        "gauge",
        "Timers set.",
        fig("timers"),
        ns_label,
    );
    family(
        &mut out,
        "cairn_timers_due",
        "gauge",
        "Timers due now and not fired yet (counted up to 100,000).",
        due,
        ns_label,
    );
    family(
        &mut out,
        "cairn_outbox_backlog",
        "gauge",
        "Events for other instances written and not delivered yet.",
        fig("outbox"),
        ns_label,
    );
    family(
        &mut out,
        "cairn_transitions_stored",
        "gauge",
        "History records of applied events (starts included) stored.",
        fig("transitions"),
        ns_label,
    );
    out
}

/// Middleware: counts and times every request, and logs it.
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    m.record(response.status().as_u16(), elapsed);
    tracing::info!(%method, %path, status = response.status().as_u16(), ms = elapsed * 1000.0, "request");
    response
}
