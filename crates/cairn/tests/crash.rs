//! Crash test of the write path: a child process (`cairn bench W1-events --acks`) sends
//! events to many instances at full speed and prints each acknowledgement; it is
//! SIGKILLed at random moments and restarted on the same data, again and again. After
//! that, every acknowledged event must be in the history exactly once, no transition may
//! be half-written, and `verify` must pass for every instance.

#[path = "it/common.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_engine::Config;
use cairn_store::Reader;
use cairn_store_any::SqliteOptions as Options;
use serde_json::Value;

const ROUNDS: usize = 24;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed: {seed}");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    // (instance, version) -> key, for every acknowledged event.
    let mut acked: BTreeMap<(String, u64), String> = BTreeMap::new();
    let mut slowest_start = Duration::ZERO;
    for round in 0..ROUNDS {
        // Every other round bounds the WAL tightly, so the writer's checkpoints run (and
        // are killed) under load; every third deletes and vacuums meanwhile.
        let wal_limit = if round % 2 == 0 { "65536" } else { "0" };
        let churn: &[&str] = if round % 3 == 1 { &["--churn"] } else { &[] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args([
                "bench",
                "W1-events",
                "--n",
                "0",
                "--concurrency",
                "8",
                "--acks",
                "--wal-limit",
                wal_limit,
                "--data",
            ])
            .arg(dir.path())
            .args(churn)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map(common::Killed)
            .expect("cairn starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        // Kill it mid-load: 0-400 ms after its first acknowledgement.
        let launched = std::time::Instant::now();
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("round {round}: no acknowledgement within 60 s"));
        slowest_start = slowest_start.max(launched.elapsed());
        std::thread::sleep(Duration::from_millis(rng.next() % 400));
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the child was not killed");
        reader.join().unwrap();
        let lines: Vec<String> = std::iter::once(first).chain(rx.try_iter()).collect();
        let before = acked.len();
        for l in lines {
            // The line being written at the kill may be cut short: it was never complete,
            // so it was never an acknowledgement the caller saw.
            let Ok(v) = serde_json::from_str::<Value>(&l) else {
                continue;
            };
            let (Some(id), Some(version)) = (v["ack"].as_str(), v["version"].as_u64()) else {
                continue;
            };
            let key = v["key"].as_str().unwrap_or_default().to_string();
            assert!(
                acked.insert((id.to_string(), version), key).is_none(),
                "round {round}: {id} v{version} acknowledged twice"
            );
        }
        assert!(
            acked.len() > before,
            "round {round}: the child acknowledged nothing before it was killed"
        );
    }

    let engine =
        cairn_runtime::open_sqlite(dir.path(), Options::default(), Config::default()).unwrap();
    let store = engine.store();
    let ids = store.instance_ids(Some("bench")).unwrap();
    assert!(ids.len() > ROUNDS * 8, "only {} instances", ids.len());
    let mut histories: HashMap<String, Vec<cairn_store::HistoryRecord>> = HashMap::new();
    for (_, id) in &ids {
        let h = engine.history("bench", id).unwrap();
        let inst = engine.get("bench", id).unwrap();
        // No half-written transition: the row, the history and the log agree.
        assert_eq!(
            inst.version,
            h.len() as u64,
            "{id}: version {} with {} history rows",
            inst.version,
            h.len()
        );
        let v = engine.verify("bench", id).unwrap();
        assert!(v.ok, "{id}: {:?}", v.problem);
        histories.insert(id.clone(), h);
    }
    for ((id, version), key) in &acked {
        let h = histories
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged instance {id} is missing"));
        let rec = h
            .iter()
            .find(|r| r.version == *version)
            .unwrap_or_else(|| panic!("{id} lost acknowledged version {version}"));
        if !key.is_empty() {
            assert_eq!(
                rec.idempotency_key.as_deref(),
                Some(key.as_str()),
                "{id} v{version}"
            );
            let n = h
                .iter()
                .filter(|r| r.idempotency_key.as_deref() == Some(key.as_str()))
                .count();
            assert_eq!(n, 1, "{id}: event {key} applied {n} times");
        }
    }
    // Every history row has exactly one log entry, in commit order.
    let mut log_count: HashMap<String, u64> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.log(after, 10_000).unwrap();
        if page.is_empty() {
            break;
        }
        for e in &page {
            if e.entry.namespace == "bench" && !e.entry.instance_id.is_empty() {
                *log_count.entry(e.entry.instance_id.clone()).or_default() += 1;
            }
            assert!(e.position > after);
            after = e.position;
        }
    }
    for (id, h) in &histories {
        assert_eq!(
            log_count.get(id).copied().unwrap_or(0),
            h.len() as u64,
            "{id}: log and history disagree"
        );
    }
    // The figures the units kept (by trigger and by the engine) count what is stored.
    let mut running = 0u64;
    let mut completed = 0u64;
    for (_, id) in &ids {
        match engine.get("bench", id).unwrap().status {
            cairn_core::Status::Running => running += 1,
            cairn_core::Status::Completed => completed += 1,
            s => panic!("{id}: {s:?}"),
        }
    }
    let stats = engine.stats("bench").unwrap();
    let by_status = &stats.instances["w1-chain"];
    assert_eq!(by_status.get("running").copied().unwrap_or(0), running);
    assert_eq!(by_status.get("completed").copied().unwrap_or(0), completed);
    let stored: u64 = histories.values().map(|h| h.len() as u64).sum();
    assert_eq!(stats.transitions, stored);
    eprintln!(
        "{} acknowledged events over {ROUNDS} kills, {} instances verified; slowest start to first ack: {slowest_start:?}",
        acked.len(),
        ids.len()
    );
}
