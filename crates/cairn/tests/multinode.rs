//! Three `cairn serve` nodes on one PostgreSQL database, with workers and clients spread
//! over them, while node 2 is SIGKILLed and restarted again and again. Afterwards:
//! every acknowledged event applied exactly once, the dead node's leased `exec` tasks
//! reclaimed by the others after their lease, no timer and no schedule tick fired
//! twice, a trigger added on one node firing on all of them, the event stream read across
//! nodes delivering the whole log in order, `verify` passing for every instance.

#[path = "it/common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_store_any::testing::TestDb;
use common::{Killed, free_port, ok_at, serve_with};
use serde_json::{Value, json};

const JOB: &str = r#"
machine: job
context: { bumps: 0 }
initial: working
states:
  working:
    task:
      exec: { command: sh, args: "['-c', 'cat > /dev/null; sleep 1; echo {}']" }
      timeout: 2s
      retry: { max_attempts: 100, initial: 50ms, max: 200ms }
    on:
      task.done: waiting
      task.failed: failed
      bump: { assign: { bumps: "context.bumps + 1" } }
  waiting:
    after: { 1s: reviewing }
    on:
      bump: { assign: { bumps: "context.bumps + 1" } }
  reviewing:
    task: { queue: review, timeout: 2s, retry: { max_attempts: 100, initial: 50ms, max: 200ms } }
    on:
      task.done: done
      bump: { assign: { bumps: "context.bumps + 1" } }
  done: { type: final }
  failed: { type: final, status: failed }
"#;

const TICK: &str = "machine: tick\ninitial: t\nstates:\n  t: { type: final }\n";

fn node(dir: &Path, db: &str, cfg: &Path, port: u16) -> Killed {
    serve_with(
        dir,
        port,
        &["--database", db, "--config", cfg.to_str().unwrap()],
    )
}

/// POSTs JSON; the status and body, or None when the node could not be reached.
fn post(url: &str, body: &Value) -> Option<(u16, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent.post(url).send_json(body).ok()?;
    let status = r.status().as_u16();
    let v = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
    Some((status, v))
}

/// Follows the event stream, moving to the next node every 150 entries and whenever a
/// node fails, resuming with `Last-Event-ID`; every position delivered, in order.
fn follow(ports: Vec<u16>, stop: Arc<AtomicBool>, until: Arc<Mutex<Option<i64>>>) -> Vec<i64> {
    use std::io::BufRead;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_recv_body(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut seen: Vec<i64> = Vec::new();
    let mut at = 0usize;
    loop {
        let done = stop.load(Ordering::Relaxed)
            && until
                .lock()
                .unwrap()
                .is_some_and(|u| seen.last().is_some_and(|l| *l >= u));
        if done {
            return seen;
        }
        let url = format!("http://127.0.0.1:{}/v1/events", ports[at % 3]);
        let mut req = agent.get(&url);
        if let Some(last) = seen.last() {
            req = req.header("Last-Event-ID", &last.to_string());
        }
        if let Ok(mut r) = req.call() {
            let reader = std::io::BufReader::new(r.body_mut().as_reader());
            let mut here = 0;
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line
                    .strip_prefix("id: ")
                    .or_else(|| line.strip_prefix("id:"))
                {
                    let p: i64 = id.trim().parse().unwrap();
                    assert!(
                        seen.last().is_none_or(|l| p > *l),
                        "position {p} after {:?}",
                        seen.last()
                    );
                    seen.push(p);
                    here += 1;
                    if here >= 150 {
                        break;
                    }
                }
            }
        }
        at += 1;
    }
}

#[test]
fn three_nodes_one_database_a_node_killed_and_restarted() {
    let db = TestDb::create().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("cairn.toml");
    std::fs::write(&cfg, "[executors.exec]\nallow = [\"sh\"]\n").unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let dirs: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("node{i}")))
        .collect();
    let mut nodes: Vec<Killed> = (0..3)
        .map(|i| node(&dirs[i], &db.url, &cfg, ports[i]))
        .collect();
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);

    let apply = |i: usize, text: &str| {
        let f = tmp.path().join(format!("m{i}.yaml"));
        std::fs::write(&f, text).unwrap();
        ok_at(&url(i), &["apply", f.to_str().unwrap()]);
    };
    apply(0, JOB);
    apply(1, TICK);
    ok_at(
        &url(2),
        &[
            "schedule",
            "add",
            "every-second",
            "--cron",
            "* * * * * *",
            "--machine",
            "tick",
        ],
    );

    // Workers for `review`, one per node, riding out its restarts.
    let _workers: Vec<Killed> = (0..3)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_cairn"))
                .args([
                    "worker",
                    "--queue",
                    "review",
                    "--lease",
                    "1s",
                    "--",
                    "sh",
                    "-c",
                    "cat > /dev/null; sleep 0.1; echo '{}'",
                ])
                .env("CAIRN_SERVER", url(i))
                .env("CAIRN_DATA", "/nonexistent/never-opened")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(Killed)
                .unwrap()
        })
        .collect();

    // A client follows the event stream, hopping between nodes.
    let until: Arc<Mutex<Option<i64>>> = Arc::default();
    let stream_stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (ports, stop, until) = (ports.clone(), stream_stop.clone(), until.clone());
        std::thread::spawn(move || follow(ports, stop, until))
    };

    // 30 instances, started through every node.
    let n = 30;
    for k in 0..n {
        let (s, v) = post(
            &format!("{}/v1/instances", url(k % 3)),
            &json!({"machine": "job", "id": format!("j{k}")}),
        )
        .expect("the nodes are up");
        assert_eq!(s, 201, "{v}");
    }

    // A trigger added through node 1 once every node has its triggers cached: the other
    // nodes pick it up (their caches are reloaded every second) and it fires for every
    // job, whichever node completes it, exactly once.
    std::thread::sleep(Duration::from_millis(300));
    ok_at(
        &url(0),
        &[
            "trigger",
            "add",
            "followup",
            "--machine",
            "job",
            "--on-status",
            "completed",
            "--start",
            "tick",
            "--id",
            "'after-' + instance.id",
        ],
    );

    // Clients bump instances through every node, retrying each keyed event (on the next
    // node) until it is acknowledged or the instance has finished.
    let attempted: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let acked: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (attempted, acked, stop) = (attempted.clone(), acked.clone(), stop.clone());
            let ports = ports.clone();
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let id = format!("j{}", (i * 7 + c) % n);
                    let key = format!("c{c}-{i}");
                    attempted
                        .lock()
                        .unwrap()
                        .entry(id.clone())
                        .or_default()
                        .insert(key.clone());
                    for t in 0.. {
                        let port = ports[(c + t) % 3];
                        let u = format!("http://127.0.0.1:{port}/v1/instances/{id}/events");
                        match post(&u, &json!({"event": "bump", "key": key})) {
                            Some((200, _)) => {
                                acked
                                    .lock()
                                    .unwrap()
                                    .entry(id.clone())
                                    .or_default()
                                    .insert(key.clone());
                                break;
                            }
                            Some((409, _)) | Some((422, _)) => break, // finished: not applied
                            _ => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();

    // Node 2 dies and comes back three times, the first time while it runs exec tasks.
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(if round == 0 { 600 } else { 1500 }));
        nodes[1].kill().unwrap();
        nodes[1].wait().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        nodes[1] = node(&dirs[1], &db.url, &cfg, ports[1]);
    }

    // Everything finishes, served by whichever nodes are up.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let page = ok_at(
            &url(0),
            &[
                "ls",
                "--machine",
                "job",
                "--status",
                "completed",
                "--limit",
                "100",
            ],
        );
        let done = page["instances"].as_array().map_or(0, |a| a.len());
        if done == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} instances completed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // Every job's follow-up started once.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let after = ok_at(&url(1), &["ls", "--machine", "tick", "--limit", "1000"])["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["id"].as_str().unwrap().starts_with("after-"))
            .count();
        if after == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{after} of {n} follow-ups started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The schedule stops, so the log comes to rest.
    ok_at(&url(0), &["schedule", "rm", "every-second"]);
    std::thread::sleep(Duration::from_millis(1200));

    let mut pg = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    // Every acknowledged event applied exactly once; nothing applied that was not sent.
    let mut applied: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in pg
        .query(
            "SELECT instance_id, idempotency_key FROM history WHERE event = 'bump' AND kind = 'event'",
            &[],
        )
        .unwrap()
    {
        applied.entry(r.get(0)).or_default().push(r.get(1));
    }
    let (attempted, acked) = (attempted.lock().unwrap(), acked.lock().unwrap());
    let total_acked: usize = acked.values().map(|k| k.len()).sum();
    assert!(
        total_acked > 30,
        "the clients got only {total_acked} acknowledgements"
    );
    for (id, keys) in &applied {
        let unique: BTreeSet<_> = keys.iter().cloned().collect();
        assert_eq!(unique.len(), keys.len(), "{id}: a key applied twice");
        assert!(
            unique.is_subset(attempted.get(id).unwrap()),
            "{id}: applied what nobody sent"
        );
    }
    for (id, keys) in acked.iter() {
        let got: BTreeSet<String> = applied
            .get(id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        assert!(keys.is_subset(&got), "{id}: acknowledged events missing");
        let inst = ok_at(&url(2), &["show", id]);
        assert_eq!(
            inst["context"]["bumps"].as_u64().unwrap() as usize,
            got.len(),
            "{id}"
        );
    }
    // Each instance's timer fired once.
    for r in pg
        .query(
            "SELECT instance_id, COUNT(*) FROM history WHERE event LIKE 'timer.%' GROUP BY instance_id",
            &[],
        )
        .unwrap()
    {
        let c: i64 = r.get(1);
        assert_eq!(c, 1, "the timer of {} fired {c} times", r.get::<_, String>(0));
    }
    assert_eq!(
        pg.query_one(
            "SELECT COUNT(DISTINCT instance_id) FROM history WHERE event LIKE 'timer.%'",
            &[]
        )
        .unwrap()
        .get::<_, i64>(0),
        n as i64
    );
    // Each schedule tick ran once, and the ticks started their instances.
    let ticks = pg
        .query(
            "SELECT data->>'tick', COUNT(*) FROM log WHERE kind = 'schedule_ticked' GROUP BY 1",
            &[],
        )
        .unwrap();
    assert!(
        ticks.len() >= 3,
        "the schedule ticked {} times",
        ticks.len()
    );
    for r in &ticks {
        assert_eq!(
            r.get::<_, i64>(1),
            1,
            "tick {} ran twice",
            r.get::<_, String>(0)
        );
    }
    // The exec tasks node 2 was running when it died were reclaimed after their lease.
    let expired: i64 = pg
        .query_one(
            "SELECT COUNT(*) FROM task_attempts WHERE outcome = 'expired'",
            &[],
        )
        .unwrap()
        .get(0);
    let open: i64 = pg
        .query_one(
            "SELECT COUNT(*) FROM tasks WHERE status IN ('pending', 'leased')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(open, 0);
    assert!(expired >= 1, "no attempt of the dead node was reclaimed");
    eprintln!("{total_acked} events acknowledged, {expired} attempts reclaimed after a lease");
    // The stream, read across nodes and their restarts, delivered the whole log in
    // position order: nothing skipped, nothing twice.
    let all = || -> Vec<i64> {
        let mut pg = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
        pg.query("SELECT position FROM log ORDER BY position", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = all();
    while log.len() < 2 || Instant::now() < deadline && log != all() {
        std::thread::sleep(Duration::from_millis(200));
        log = all();
    }
    *until.lock().unwrap() = log.last().copied();
    stream_stop.store(true, Ordering::Relaxed);
    let streamed = follower.join().unwrap();
    let streamed: Vec<i64> = streamed
        .into_iter()
        .filter(|p| p <= log.last().unwrap())
        .collect();
    assert_eq!(
        streamed.len(),
        log.len(),
        "the stream missed or repeated entries"
    );
    assert_eq!(streamed, log);
    // History replays to the stored state everywhere.
    let v = ok_at(&url(1), &["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["failed"], 0);
    drop(nodes);
}

/// `cairn bench W5` runs end to end (tiny, for function, not for figures) and says what
/// it needs when it has no database.
#[test]
fn bench_w5_reports_scaling_over_nodes() {
    let db = TestDb::create().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "bench",
            "W5",
            "--n",
            "40",
            "--concurrency",
            "8",
            "--database",
            &db.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = line["runs"].as_array().unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| (
                r["nodes"].as_u64().unwrap(),
                r["backend"].as_str().unwrap().to_string()
            ))
            .collect::<Vec<_>>(),
        [
            (1, "postgres".into()),
            (2, "postgres".into()),
            (3, "postgres".into()),
            (1, "sqlite".into())
        ]
    );
    for r in runs {
        assert_eq!(r["n"], 40, "{r}");
        assert!(r["workflows_per_s"].as_f64().unwrap() > 0.0);
    }
    // On PostgreSQL the line says how many statements and round trips a step took; the
    // writes of a unit ride with its reads and its commit, so fewer trips than statements.
    for r in runs.iter().filter(|r| r["backend"] == "postgres") {
        let (statements, trips) = (
            r["statements_per_step"].as_f64().unwrap(),
            r["round_trips_per_step"].as_f64().unwrap(),
        );
        assert!(trips > 0.0 && trips < statements, "{r}");
    }
    assert!(line["scaling"]["3"].as_f64().unwrap() > 0.0);
    assert!(line["postgres_vs_sqlite_1_node"].as_f64().unwrap() > 0.0);
    assert!(!line["database"].as_str().unwrap().is_empty());

    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["bench", "W5"])
        .env_remove("CAIRN_DATABASE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--database"));
}

/// `cairn bench W4 --database`: the copies of the engine's templates go into PostgreSQL by
/// its bulk import, replay under `verify`, a node serves them, and W1 runs with the data
/// present and on a scratch empty database.
#[test]
fn bench_w4_loads_and_serves_on_postgres() {
    let db = TestDb::create().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "bench",
            "W4",
            "--instances",
            "1000",
            "--n",
            "40",
            "--concurrency",
            "4",
            "--database",
            &db.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["backend"], "postgres", "{line}");
    common::assert_w4_line(&line);
}
