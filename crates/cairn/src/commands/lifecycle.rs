//! Lifecycle commands: `tick`, `checkpoint`, `fork`, `pause`, `resume`, `cancel`,
//! `approvals`, `approve`, `reject`, `rm`, `export`, `backup`, `restore`, `stats`.
//! Long work (bulk delete, backup, restore) shows a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use cairn_engine::{DecideRequest, ForkFrom, Retention};
use cairn_store::ApprovalStatus;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::client::Client;
use crate::{Failure, Global};

fn print_json(v: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("wire types serialise")
    );
}

/// A progress bar on a terminal (stderr), nothing otherwise.
pub fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Parses `30s`, `10m`, `2h`, `7d`, `1h 30m`.
pub fn parse_duration(flag: &str, s: &str) -> Result<chrono::Duration, Failure> {
    humantime_like(s).ok_or_else(|| {
        Failure::usage(anyhow!(
            "`{flag} {s}` is not a duration (e.g. 30s, 10m, 2h, 7d)"
        ))
    })
}

fn humantime_like(s: &str) -> Option<chrono::Duration> {
    let mut total = 0i64;
    let mut num = String::new();
    let mut any = false;
    let s = s.replace(' ', "");
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        let ms = match unit.as_str() {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(ms)?)?;
        any = true;
    }
    (any && num.is_empty()).then(|| chrono::Duration::milliseconds(total))
}

fn print_instance(g: &Global, i: &cairn_api::Instance, what: &str) {
    if g.json {
        print_json(i);
    } else {
        crate::commands::print_change(what, None, i);
    }
}

#[derive(clap::Args)]
pub struct Tick {
    /// Also remove finished instances last updated longer ago than this (e.g. 30d).
    #[arg(long, env = "CAIRN_RETAIN_FINISHED")]
    retain_finished: Option<String>,
    /// Also fold all but this many of each instance's newest history records.
    #[arg(long, env = "CAIRN_MAX_HISTORY")]
    max_history: Option<usize>,
}

pub fn tick(g: &Global, c: &dyn Client, a: Tick) -> Result<(), Failure> {
    let retention = Retention {
        finished_after: a
            .retain_finished
            .as_deref()
            .map(|s| parse_duration("--retain-finished", s))
            .transpose()?,
        max_history: a.max_history,
    };
    let t = c.tick(&retention)?;
    if g.json {
        print_json(&t);
    } else {
        println!(
            "{} timer event(s) applied, {} finished instance(s) removed, {} history record(s) folded",
            t.timers_fired, t.instances_removed, t.history_folded
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct CheckpointArgs {
    /// The instance.
    id: String,
    /// The checkpoint's name, unique per instance.
    name: String,
}

pub fn checkpoint(g: &Global, c: &dyn Client, a: CheckpointArgs) -> Result<(), Failure> {
    let k = c.checkpoint(&a.id, &a.name)?;
    if g.json {
        print_json(&k);
    } else {
        println!(
            "checkpoint `{}` of {} at version {} [{}]",
            k.name,
            k.instance,
            k.version,
            k.configuration.join(", ")
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Fork {
    /// The instance to fork.
    #[arg(value_name = "ID")]
    instance: String,
    /// A version of its history, or the name of one of its checkpoints.
    #[arg(long)]
    from: String,
    /// The new instance's id; generated when absent.
    #[arg(long)]
    id: Option<String>,
    /// A JSON merge patch applied to the context.
    #[arg(long)]
    patch: Option<String>,
}

pub fn fork(g: &Global, c: &dyn Client, a: Fork) -> Result<(), Failure> {
    let patch = match &a.patch {
        Some(p) => Some(
            serde_json::from_str::<Value>(p)
                .map_err(|e| Failure::usage(anyhow!("`--patch` is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    let i = c.fork(&a.instance, ForkFrom::parse(&a.from), a.id, patch)?;
    print_instance(g, &i, "forked");
    Ok(())
}

#[derive(clap::Args)]
pub struct Lifecycle {
    /// The instance.
    id: String,
    #[arg(long, default_value = "")]
    actor: String,
    #[arg(long, default_value = "")]
    reason: String,
}

fn actor(a: &str) -> String {
    if a.is_empty() {
        std::env::var("USER").unwrap_or_default()
    } else {
        a.to_string()
    }
}

pub fn pause(g: &Global, c: &dyn Client, a: Lifecycle) -> Result<(), Failure> {
    print_instance(g, &c.pause(&a.id, &actor(&a.actor), &a.reason)?, "paused");
    Ok(())
}

pub fn resume(g: &Global, c: &dyn Client, a: Lifecycle) -> Result<(), Failure> {
    print_instance(g, &c.resume(&a.id, &actor(&a.actor), &a.reason)?, "resumed");
    Ok(())
}

pub fn cancel(g: &Global, c: &dyn Client, a: Lifecycle) -> Result<(), Failure> {
    print_instance(
        g,
        &c.cancel(&a.id, &actor(&a.actor), &a.reason)?,
        "cancelled",
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct Approvals {
    /// pending (default), approved, rejected, cancelled or all.
    #[arg(long, default_value = "pending")]
    status: String,
    /// Only this instance's approvals.
    #[arg(long)]
    instance: Option<String>,
}

pub fn approvals(g: &Global, c: &dyn Client, a: Approvals) -> Result<(), Failure> {
    let status = match a.status.as_str() {
        "all" => None,
        s => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            Failure::usage(anyhow!("unknown approval status `{s}`; expected pending, approved, rejected, cancelled or all"))
        })?),
    };
    let list = c.approvals(status, a.instance.as_deref())?;
    if g.json {
        print_json(&list);
    } else {
        for ap in list {
            let approvals = ap.decisions.iter().filter(|d| d.approve).count();
            println!(
                "{}  {}  state {}  {}  {}/{}  {}  requested {}",
                ap.instance,
                ap.id,
                ap.state,
                ap.status,
                approvals,
                ap.quorum,
                ap.prompt.as_deref().unwrap_or(""),
                ap.created_at.to_rfc3339()
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Approve {
    /// The instance.
    id: String,
    /// Which approval, when several are pending.
    #[arg(long)]
    approval: Option<String>,
    #[arg(long, default_value = "")]
    actor: String,
    #[arg(long, default_value = "")]
    reason: String,
    /// Merged into the delivered event's payload (a JSON object).
    #[arg(long)]
    payload: Option<String>,
}

#[derive(clap::Args)]
pub struct Reject {
    /// The instance.
    id: String,
    /// Why (required).
    #[arg(long)]
    reason: String,
    #[arg(long)]
    approval: Option<String>,
    #[arg(long, default_value = "")]
    actor: String,
    #[arg(long)]
    payload: Option<String>,
}

fn decide(g: &Global, c: &dyn Client, id: &str, req: DecideRequest) -> Result<(), Failure> {
    let d = c.decide(id, req)?;
    if g.json {
        print_json(&d);
    } else {
        let what = match &d.transition {
            Some(_) => format!(
                "{} approval {} of state {}",
                d.approval.status, d.approval.id, d.approval.state
            ),
            None if d.approval.status == "pending" => {
                let n = d.approval.decisions.iter().filter(|x| x.approve).count();
                format!(
                    "recorded: {n} of {} approvals for {}",
                    d.approval.quorum, d.approval.id
                )
            }
            None => format!(
                "{} approval {}; the instance is paused: the event waits for resume",
                d.approval.status, d.approval.id
            ),
        };
        crate::commands::print_change(&what, d.transition.as_ref(), &d.instance);
    }
    Ok(())
}

fn payload_arg(p: &Option<String>) -> Result<Value, Failure> {
    match p {
        Some(p) => serde_json::from_str(p)
            .map_err(|e| Failure::usage(anyhow!("`--payload` is not valid JSON: {e}"))),
        None => Ok(Value::Null),
    }
}

pub fn approve(g: &Global, c: &dyn Client, a: Approve) -> Result<(), Failure> {
    let req = DecideRequest {
        approval: a.approval,
        approve: true,
        actor: actor(&a.actor).into(),
        reason: a.reason,
        payload: payload_arg(&a.payload)?,
    };
    decide(g, c, &a.id, req)
}

pub fn reject(g: &Global, c: &dyn Client, a: Reject) -> Result<(), Failure> {
    let req = DecideRequest {
        approval: a.approval,
        approve: false,
        actor: actor(&a.actor).into(),
        reason: a.reason,
        payload: payload_arg(&a.payload)?,
    };
    decide(g, c, &a.id, req)
}

#[derive(clap::Args)]
pub struct Rm {
    /// The instance to delete, with its history.
    id: Option<String>,
    /// Instead: delete every finished instance last updated longer ago than this (e.g. 30d).
    #[arg(long, conflicts_with = "id")]
    finished_before: Option<String>,
}

pub fn rm(g: &Global, c: &dyn Client, a: Rm) -> Result<(), Failure> {
    let ids = match (&a.id, &a.finished_before) {
        (Some(id), None) => vec![id.clone()],
        (None, Some(age)) => c.finished_before(parse_duration("--finished-before", age)?)?,
        _ => {
            return Err(Failure::usage(anyhow!(
                "give an instance id, or --finished-before DURATION"
            )));
        }
    };
    let bar = progress(Some(ids.len() as u64), "deleting");
    let bulk = a.id.is_none();
    for id in &ids {
        match c.delete(id) {
            Ok(()) => {}
            // Deleted already, with its parent.
            Err(f) if bulk && f.code == 3 => {}
            Err(f) => return Err(f),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if g.json {
        print_json(&serde_json::json!({"deleted": ids}));
    } else {
        println!("{} instance(s) deleted", ids.len());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The instance.
    id: String,
    /// json (everything), markdown (a report) or jsonl (one line per history record).
    #[arg(long, default_value = "json")]
    format: String,
}

pub fn export(c: &dyn Client, a: ExportArgs) -> Result<(), Failure> {
    if !matches!(a.format.as_str(), "json" | "markdown" | "jsonl") {
        return Err(Failure::usage(anyhow!(
            "unknown export format `{}`; expected json, markdown or jsonl",
            a.format
        )));
    }
    let e = c.export(&a.id)?;
    match a.format.as_str() {
        "json" => print_json(&e),
        "markdown" => print!("{}", cairn_api::report::markdown(&e)),
        _ => print!("{}", cairn_api::report::jsonl(&e)),
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct FileArg {
    /// The backup file.
    file: PathBuf,
}

pub fn backup(g: &Global, c: &dyn Client, a: FileArg) -> Result<(), Failure> {
    let bar = progress(None, "backing up");
    let bytes = c.backup(&a.file);
    bar.finish_and_clear();
    let bytes = bytes?;
    if g.json {
        print_json(&serde_json::json!({"file": a.file, "bytes": bytes}));
    } else {
        println!("backed up to {} ({bytes} bytes)", a.file.display());
    }
    Ok(())
}

/// Restores without opening the store first: restoring needs the directory unlocked.
pub fn restore(g: &Global, data: &Path, a: FileArg) -> Result<(), Failure> {
    let bar = progress(None, "restoring");
    let r = cairn_store_any::SqliteStore::restore(data, &a.file);
    bar.finish_and_clear();
    r.map_err(|e| {
        let code = match e {
            cairn_store::Error::Corrupt(_) => 2,
            _ => 1,
        };
        // A live server's store cannot be replaced: say which one holds it.
        let served = matches!(e, cairn_store::Error::Locked(_))
            .then(|| crate::held::server(data))
            .flatten();
        let error = match served {
            Some((url, pid)) => anyhow!(
                "{} is served by `cairn serve` at {url} (pid {pid}): stop it, then restore",
                data.display()
            ),
            None => anyhow!("{e}"),
        };
        Failure { code, error }
    })?;
    if g.json {
        print_json(&serde_json::json!({"restored": a.file, "data": data}));
    } else {
        println!("restored {} into {}", a.file.display(), data.display());
    }
    Ok(())
}

pub fn stats(g: &Global, c: &dyn Client) -> Result<(), Failure> {
    let s = c.stats()?;
    if g.json {
        print_json(&s);
        return Ok(());
    }
    println!("{}", crate::commands::count(s.transitions, "transition"));
    for (machine, by_status) in &s.instances {
        let parts: Vec<String> = by_status
            .iter()
            .map(|(st, n)| format!("{st} {n}"))
            .collect();
        println!("{machine}: {}", parts.join(", "));
        if let Some(times) = s.mean_time_in_state_ms.get(machine) {
            for (state, ms) in times {
                println!("  {state}: mean {:.1}s", ms / 1000.0);
            }
        }
    }
    Ok(())
}
