//! `cairn bench memory`: a burst of `--n` instances (default 100,000), each leaving a task
//! queued and a timer pending, started over HTTP against a `cairn serve` child process on
//! a fresh SQLite data directory. Its resident memory (VmRSS from /proc) is sampled before,
//! during and after the burst, and after claims and stats over the full queue. One JSON
//! line; exits non-zero when the peak passes the limit (200 MB).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde_json::json;

use super::bench::{Args, Driver, Http, bench_dir, round};
use super::w5::{apply_yaml, node};
use crate::Failure;

const LIMIT_MB: f64 = 200.0;

const MACHINE: &str = r#"
machine: mem
description: waits for its task, or an hour
initial: waiting
states:
  waiting:
    task: { queue: mem, action: work, input: "{'n': 1}" }
    after: { 1h: late }
    on: { task.done: done }
  late: { type: final, status: failed }
  done: { type: final }
"#;

/// VmRSS of process `pid`, in MB.
pub(crate) fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(a: &Args) -> Result<(), Failure> {
    let n = a.n.unwrap_or(100_000);
    let (dir, _tmp) = bench_dir(None, "memory");
    let (server, url) = node(&["--data".to_string(), dir.display().to_string()])?;
    let pid = server.pid();
    apply_yaml(&url, MACHINE)?;
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_mb(pid).ok_or_else(|| anyhow!("cannot read the server's memory"))?;
    // Sample while the burst runs.
    let peak = Arc::new(AtomicU64::new(idle.to_bits()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(m) = rss_mb(pid) {
                    let _ = peak.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                        (m > f64::from_bits(p)).then_some(m.to_bits())
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..a.concurrency())
        .map(|_| {
            let (next, url) = (Arc::clone(&next), url.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let http = Http::new(&url);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    http.start("mem", &format!("m{i}"))?;
                }
            })
        })
        .collect();
    for c in clients {
        c.join()
            .map_err(|_| anyhow!("a client panicked"))?
            .map_err(|e| anyhow!("{e}"))?;
    }
    let burst_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let after_burst = rss_mb(pid).unwrap_or(0.0);
    // The queue full: stats, metrics, and claims from its head.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for path in ["/v1/stats?namespace=bench", "/metrics"] {
        let _ = agent.get(format!("{url}{path}")).call();
    }
    let http = Http::new(&url);
    let mut claimed = 0;
    for _ in 0..20 {
        let v = http
            .claim_raw("mem", 100)
            .map_err(|e| anyhow!("claiming: {e}"))?;
        claimed += v;
    }
    std::thread::sleep(Duration::from_millis(500));
    let after_claims = rss_mb(pid).unwrap_or(0.0);
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let peak = f64::from_bits(peak.load(Ordering::Relaxed)).max(after_claims);
    drop(server);
    let line = json!({
        "peer": "cairn",
        "workload": "memory",
        "tasks_queued": n,
        "timers_pending": n,
        "burst_seconds": round(burst_s, 1),
        "starts_per_s": round(n as f64 / burst_s, 1),
        "claimed_after": claimed,
        "rss_idle_mb": round(idle, 1),
        "rss_after_burst_mb": round(after_burst, 1),
        "rss_after_claims_mb": round(after_claims, 1),
        "rss_peak_mb": round(peak, 1),
        "limit_mb": LIMIT_MB,
    });
    println!("{line}");
    if peak > LIMIT_MB {
        return Err(anyhow!(
            "the server's resident memory peaked at {peak:.1} MB, over {LIMIT_MB} MB"
        )
        .into());
    }
    Ok(())
}
