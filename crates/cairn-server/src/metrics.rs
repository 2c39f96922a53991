//! Prometheus metrics, kept by hand with atomics: requests by status, request latency as
//! a histogram, open streams, and the engine's figures read at scrape time.

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

#[derive(Default)]
pub struct Metrics {
    requests: [AtomicU64; 6],
    latency: [AtomicU64; 13],
    latency_sum_us: AtomicU64,
    pub open_streams: AtomicU64,
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
