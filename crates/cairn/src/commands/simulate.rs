//! `cairn simulate FILE [EVENTS]`: run a machine in memory. Events are JSON lines
//! `{"event": "a", "payload": {...}, "actor": "...", "reason": "..."}` from a file or
//! stdin; reserved names are allowed, as the engine would deliver them. After the start
//! and after each event one JSON line is printed:
//! `{"step", "event", "configuration", "context", "status", "rejected"}`.

use std::io::{BufRead, BufReader, Write};

use anyhow::Context as _;
use cairn_core::{Env, Event, Snapshot, start, step};
use serde_json::{Value, json};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The machine file.
    file: String,
    /// A file of JSON lines, one event each; `-` or absent reads stdin.
    events: Option<String>,
    /// The start input (a JSON object), merged over the machine's context.
    #[arg(long)]
    input: Option<String>,
    /// Evaluate `now` at this RFC 3339 time instead of the clock, for repeatable runs.
    #[arg(long)]
    now: Option<String>,
}

fn line(step: usize, event: Option<&str>, snap: &Snapshot, rejected: Option<String>) -> Value {
    json!({
        "step": step,
        "event": event,
        "configuration": snap.configuration,
        "context": snap.context,
        "status": snap.status.as_str(),
        "rejected": rejected,
    })
}

pub fn run(args: Args) -> Result<(), Failure> {
    let m = super::load_machine(&args.file)?;
    let input: Value = match &args.input {
        Some(s) => serde_json::from_str(s)
            .map_err(|e| Failure::usage(anyhow::anyhow!("`--input` is not JSON: {e}")))?,
        None => Value::Null,
    };
    let now = match &args.now {
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| Failure::usage(anyhow::anyhow!("`--now` is not an RFC 3339 time: {e}")))?
            .to_utc(),
        None => chrono::Utc::now(),
    };
    let fixed_now = args.now.is_some();
    let env_at = |t| Env::at(t);
    let reader: Box<dyn BufRead> = match args.events.as_deref() {
        None | Some("-") => Box::new(BufReader::new(std::io::stdin())),
        Some(path) => {
            Box::new(BufReader::new(std::fs::File::open(path).map_err(|e| {
                Failure::usage(anyhow::anyhow!("cannot read `{path}`: {e}"))
            })?))
        }
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    let first = start(&m, &input, &env_at(now))
        .map_err(|e| Failure::refused(anyhow::anyhow!("start refused: {e}")))?;
    let mut snap = first.snapshot;
    writeln!(out, "{}", line(0, None, &snap, None)).context("writing output")?;
    let mut n = 0;
    for (i, l) in reader.lines().enumerate() {
        let l = l.context("reading events")?;
        if l.trim().is_empty() {
            continue;
        }
        let ev = parse_event(&l)
            .map_err(|e| Failure::usage(anyhow::anyhow!("event line {}: {e}", i + 1)))?;
        n += 1;
        let t = if fixed_now { now } else { chrono::Utc::now() };
        match step(&m, &snap, &ev, &env_at(t)) {
            Ok(o) => {
                snap = o.snapshot;
                writeln!(out, "{}", line(n, Some(&ev.name), &snap, None))
            }
            Err(r) => writeln!(
                out,
                "{}",
                line(n, Some(&ev.name), &snap, Some(r.to_string()))
            ),
        }
        .context("writing output")?;
    }
    Ok(())
}

fn parse_event(line: &str) -> anyhow::Result<Event> {
    let v: Value = serde_json::from_str(line).context("not JSON")?;
    let Value::Object(map) = v else {
        anyhow::bail!("an event is a JSON object like {{\"event\": \"go\", \"payload\": {{}}}}");
    };
    for k in map.keys() {
        if !matches!(k.as_str(), "event" | "payload" | "actor" | "reason" | "to") {
            anyhow::bail!("unknown field `{k}`; expected event, payload, actor, reason, to");
        }
    }
    let name = match map.get("event") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => anyhow::bail!("`event` must be a non-empty string"),
    };
    let text = |k: &str| -> anyhow::Result<String> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => anyhow::bail!("`{k}` must be a string"),
        }
    };
    Ok(Event {
        name,
        payload: match map.get("payload") {
            None | Some(Value::Null) => json!({}),
            Some(p) => p.clone(),
        },
        actor: text("actor")?,
        reason: text("reason")?,
        // An outcome addressed to the state that owns its work, as the engine addresses
        // `task.done`, `approve` or `child.done`.
        to: Some(text("to")?).filter(|s| !s.is_empty()),
    })
}
