//! `cairn watch [ID] [--machine M] [--after POS]`: follows the server's event stream
//! (`GET /v1/events`), one readable line per entry (`--json`: the entries as they come),
//! and picks it up again after a disconnect from the last position it printed.

use std::time::Duration;

use crate::client::http::{Http, SseEvent};
use crate::{Failure, Global};

#[derive(clap::Args)]
pub struct Args {
    /// Only this instance's entries.
    id: Option<String>,
    /// Only entries of this machine's instances.
    #[arg(long)]
    machine: Option<String>,
    /// Start after this log position (0, the default, is the whole retained log).
    #[arg(long, default_value_t = 0)]
    after: u64,
}

pub fn run(g: &Global, http: &Http, a: Args) -> Result<(), Failure> {
    if !http.is_remote() {
        return Err(Failure::usage(anyhow::anyhow!(
            "`cairn watch` follows a server: start `cairn serve` on this data directory \
             (commands on it then reach the server), or give `--server URL`"
        )));
    }
    let mut after = a.after;
    let mut failures = 0u32;
    loop {
        let mut query = vec![("after", after.to_string())];
        if let Some(id) = &a.id {
            query.push(("instance", id.clone()));
        }
        if let Some(m) = &a.machine {
            query.push(("machine", m.clone()));
        }
        let streamed = http.events(&query, |e| {
            if let Some(id) = e.id {
                after = after.max(id);
            }
            failures = 0;
            print_event(g.json, &e);
            Ok(())
        });
        match streamed {
            // A refusal (a bad filter, a token without the role) is not worth retrying.
            Err(f) if f.code != 1 => return Err(f),
            _ => {
                failures += 1;
                // The server went away or the connection broke: back off, then resume.
                let wait = Duration::from_millis(250 * u64::from(failures.min(20)));
                eprintln!(
                    "cairn: the event stream ended; resuming after position {after} in {:.1}s",
                    wait.as_secs_f64()
                );
                std::thread::sleep(wait);
            }
        }
    }
}

fn print_event(json: bool, e: &SseEvent) {
    if json {
        println!("{}", e.data);
        return;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.data) else {
        println!("{}", e.data);
        return;
    };
    let d = &v["data"];
    let text = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let list = |k: &str| {
        d[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let what = match v["kind"].as_str().unwrap_or("") {
        "transition" => format!(
            "{}: {} -> {}  {}",
            text("event"),
            list("from"),
            list("to"),
            text("status")
        ),
        "started" => format!("started {}: {}", text("machine"), list("configuration")),
        kind => format!("{kind} {d}"),
    };
    println!(
        "{:>6}  {}  {}  v{}  {what}",
        v["position"],
        v["at"].as_str().unwrap_or(""),
        v["instance"].as_str().unwrap_or(""),
        v["version"]
    );
}
