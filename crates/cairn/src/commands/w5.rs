//! `cairn bench W5`: W1-tasks over HTTP against one PostgreSQL database with 1, 2 and 3
//! `cairn serve` nodes (child processes of this one), clients and workers spread over the
//! nodes; then the same with one node on SQLite, for the single-node comparison. One JSON
//! line: each run's figures, the throughput ratio of 2 and 3 nodes to 1, and single-node
//! PostgreSQL against single-node SQLite.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::anyhow;
use serde_json::{Value, json};

use super::bench::{Args, Driver, Http, TempDir, W1_TASKS, round, w1_tasks};
use crate::Failure;

/// A node, killed when the run ends.
pub(crate) struct Node(Child);

impl Node {
    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cairn serve` with `store` arguments on a free port; its URL.
pub(crate) fn node(store: &[String]) -> Result<(Node, String), Failure> {
    let exe = std::env::current_exe().map_err(|e| anyhow!("{e}"))?;
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(store)
        .env("CAIRN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow!("starting a node: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let node = Node(child);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .ok_or_else(|| anyhow!("a node did not start: {line}"))?
        .to_string();
    Ok((node, url))
}

/// Calls spread over nodes: a workflow's start and events go to the node its id hashes
/// to, a worker reports and claims on the node its number picks.
struct Spread(Vec<Http>);

impl Spread {
    fn by(&self, key: &str) -> &Http {
        let h = key
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        &self.0[(h % self.0.len() as u64) as usize]
    }
}

impl Driver for Spread {
    fn idle(&self) {}
    fn report(
        &self,
        worker: &str,
        done: &[(String, u32)],
        claim: usize,
    ) -> Result<Vec<super::bench::Task>, String> {
        let n: usize = worker
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        self.0[n % self.0.len()].report(worker, done, claim)
    }
    fn start(&self, machine: &str, id: &str) -> Result<u64, String> {
        self.by(id).start(machine, id)
    }
    fn send(&self, id: &str, event: &str, key: &str) -> Result<u64, String> {
        self.by(id).send(id, event, key)
    }
    fn approve(&self, id: &str) -> Result<String, String> {
        self.by(id).approve(id)
    }
}

fn apply(url: &str) -> Result<(), Failure> {
    apply_yaml(url, W1_TASKS)
}

/// Applies the YAML definition `yaml` in namespace `bench` of the server at `url`.
pub(crate) fn apply_yaml(url: &str, yaml: &str) -> Result<(), Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(format!("{url}/v1/machines?namespace=bench"))
        .header("Content-Type", "application/yaml")
        .send(yaml)
        .map_err(|e| anyhow!("applying the machine: {e}"))?;
    if r.status().as_u16() >= 400 {
        let body = r.body_mut().read_to_string().unwrap_or_default();
        return Err(anyhow!("applying the machine: {body}").into());
    }
    Ok(())
}

/// One W1-tasks run against `nodes` nodes started with `store` arguments.
fn run_on(store: &[String], nodes: usize, a: &Args) -> Result<Value, Failure> {
    let mut running = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..nodes {
        let (n, url) = node(store)?;
        running.push(n);
        urls.push(url);
    }
    apply(&urls[0])?;
    let before: f64 = urls.iter().map(|u| counter(u, STATEMENTS)).sum();
    let trips_before: f64 = urls.iter().map(|u| counter(u, ROUND_TRIPS)).sum();
    let driver: Arc<dyn Driver> = Arc::new(Spread(urls.iter().map(|u| Http::new(u)).collect()));
    let mut line = w1_tasks(driver, a, 4 * nodes)?;
    line["nodes"] = json!(nodes);
    // Round trips to PostgreSQL per durable step (a start or a task's step), from the
    // nodes' own count (`cairn_store_statements_total`).
    // Several statements may share a round trip (a unit's writes ride with its next
    // read or its commit): both counts.
    let sent: f64 = urls.iter().map(|u| counter(u, STATEMENTS)).sum::<f64>() - before;
    let trips: f64 = urls.iter().map(|u| counter(u, ROUND_TRIPS)).sum::<f64>() - trips_before;
    if sent > 0.0
        && let Some(n) = line["n"].as_f64()
    {
        line["statements_per_step"] = json!(round(sent / (n * 6.0), 1));
        line["round_trips_per_step"] = json!(round(trips / (n * 6.0), 1));
    }
    drop(running);
    Ok(line)
}

const STATEMENTS: &str = "cairn_store_statements_total ";
const ROUND_TRIPS: &str = "cairn_store_round_trips_total ";

/// The counter `name` (with its trailing space) of the node at `url` (0 when it has none:
/// SQLite).
fn counter(url: &str, name: &str) -> f64 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(format!("{url}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// The node counts of `--nodes` (`1,2,3`): distinct, ascending, each 1 to 16.
fn node_counts(text: &str) -> Result<Vec<usize>, Failure> {
    let mut counts = Vec::new();
    for part in text.split(',') {
        let n: usize = part
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .ok_or_else(|| {
                Failure::usage(anyhow!(
                    "--nodes: `{part}` is not a node count from 1 to 16 (give a list such as 1,2,3)"
                ))
            })?;
        counts.push(n);
    }
    counts.sort_unstable();
    counts.dedup();
    Ok(counts)
}

pub fn run(database: Option<String>, a: &Args) -> Result<(), Failure> {
    let url = database.ok_or_else(|| {
        Failure::usage(anyhow!(
            "W5 runs on PostgreSQL: give `--database postgres://USER@HOST:PORT/DB` (an empty database the bench may fill)"
        ))
    })?;
    let counts = node_counts(&a.nodes)?;
    let pg = vec!["--database".to_string(), url.clone()];
    let mut runs = Vec::new();
    for &nodes in &counts {
        let mut r = run_on(&pg, nodes, a)?;
        r["backend"] = json!("postgres");
        runs.push(r);
    }
    let dir = std::env::temp_dir().join(format!("cairn-w5-{}", std::process::id()));
    let _tmp = TempDir(dir.clone());
    let sqlite = vec!["--data".to_string(), dir.display().to_string()];
    let mut s = run_on(&sqlite, 1, a)?;
    s["backend"] = json!("sqlite");
    let wf = |r: &Value| r["workflows_per_s"].as_f64().unwrap_or(0.0);
    // Scaling is against the smallest PostgreSQL run (one node by default).
    let one = wf(&runs[0]).max(f64::MIN_POSITIVE);
    let scaling: serde_json::Map<String, Value> = counts
        .iter()
        .zip(&runs)
        .skip(1)
        .map(|(n, r)| (n.to_string(), json!(round(wf(r) / one, 2))))
        .collect();
    runs.push(s.clone());
    let line = json!({
        "peer": "cairn",
        "workload": "W5",
        "database": cairn_store_any::redact(&url),
        "concurrency": a.concurrency(),
        "runs": runs,
        "scaling": scaling,
        "postgres_vs_sqlite_1_node": round(one / wf(&s).max(f64::MIN_POSITIVE), 2),
    });
    println!("{line}");
    Ok(())
}
