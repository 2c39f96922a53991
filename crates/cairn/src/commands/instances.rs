//! Commands on machines and instances: `apply`, `machines`, `start`, `send`, `show`, `ls`,
//! `history`, `accepts`, `verify`. Each prints for people, or JSON with `--json`.

use std::collections::BTreeMap;

use anyhow::anyhow;
use cairn_api::{Instance, Transition};
use cairn_engine::SendRequest;
use cairn_store::InstanceFilter;
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

pub(crate) fn parse_json_arg(flag: &str, s: &str) -> Result<Value, Failure> {
    serde_json::from_str(s).map_err(|e| Failure::usage(anyhow!("`{flag}` is not valid JSON: {e}")))
}

fn parse_labels(labels: &[String]) -> Result<Vec<(String, String)>, Failure> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure::usage(anyhow!("`--label {l}` must be KEY=VALUE")))
        })
        .collect()
}

fn print_instance(i: &Instance) {
    println!(
        "{}  {}@{}  {}  version {}",
        i.id, i.machine, i.machine_version, i.status, i.version
    );
    println!("  configuration: {}", i.configuration.join(", "));
    println!("  context: {}", i.context);
    if !i.labels.is_empty() {
        let l: Vec<String> = i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  labels: {}", l.join(", "));
    }
    if let Some(e) = &i.last_error {
        println!("  last error: {e}");
    }
    println!(
        "  created {}  updated {}",
        i.created_at.to_rfc3339(),
        i.updated_at.to_rfc3339()
    );
}

#[derive(clap::Args)]
pub struct Apply {
    /// The machine file (.yaml, .yml, .toml or .json).
    file: String,
}

pub fn apply(g: &Global, c: &dyn Client, a: Apply) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&a.file)
        .map_err(|e| Failure::usage(anyhow!("cannot read `{}`: {e}", a.file)))?;
    let r = c.apply(&text, &a.file)?;
    if g.json {
        print_json(&r);
        return Ok(());
    }
    for w in &r.warnings {
        // As `validate` prints it, with the file the definition came from.
        let state = w
            .state
            .as_ref()
            .map(|s| format!("in state `{s}`: "))
            .unwrap_or_default();
        eprintln!(
            "{}:{}:{}: {}[{}]: {state}{}",
            a.file, w.line, w.column, w.severity, w.kind, w.message
        );
    }
    if r.created {
        println!("applied machine `{}` version {}", r.machine, r.version);
    } else {
        println!("machine `{}` unchanged at version {}", r.machine, r.version);
    }
    Ok(())
}

pub fn machines(g: &Global, c: &dyn Client) -> Result<(), Failure> {
    let ms = c.machines()?;
    if g.json {
        print_json(&ms);
    } else {
        for m in ms {
            println!(
                "{}  version {}  {}",
                m.name,
                m.version,
                m.description.unwrap_or_default()
            );
        }
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum MachineCmd {
    /// Delete a version no instance runs on; its number is never given again.
    Rm { name: String, version: u32 },
}

pub fn machine(g: &Global, c: &dyn Client, m: MachineCmd) -> Result<(), Failure> {
    match m {
        MachineCmd::Rm { name, version } => {
            c.delete_machine(&name, version)?;
            if g.json {
                print_json(&serde_json::json!({"deleted": {"machine": name, "version": version}}));
            } else {
                println!("deleted machine `{name}` version {version}");
            }
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Repair {
    /// Only report what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

pub fn repair(g: &Global, c: &dyn Client, a: Repair) -> Result<(), Failure> {
    let r = c.repair(a.dry_run)?;
    if g.json {
        print_json(&r);
        return Ok(());
    }
    let show = |u: &cairn_api::Unreadable| {
        format!(
            "`{}` version {} (namespace `{}`)",
            u.machine, u.version, u.namespace
        )
    };
    for u in &r.deleted {
        println!("deleted unreadable machine {}", show(u));
    }
    for u in &r.deletable {
        println!("would delete unreadable machine {}", show(u));
    }
    for u in &r.in_use {
        println!(
            "kept unreadable machine {}: {} instance(s) run on it; delete or migrate them, then repair again",
            show(u),
            u.instances
        );
    }
    if r.deleted.is_empty() && r.deletable.is_empty() && r.in_use.is_empty() {
        println!("every stored machine reads back; nothing to repair");
    }
    Ok(())
}

pub fn vacuum(g: &Global, c: &dyn Client) -> Result<(), Failure> {
    let v = c.vacuum()?;
    if g.json {
        print_json(&v);
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let free = |f: Option<u64>| f.map_or(String::new(), |f| format!(" ({:.1} MiB free)", mib(f)));
    println!(
        "{:.1} MiB{} -> {:.1} MiB{} in {} step(s) (the longest {:.1} ms), {} ms",
        mib(v.bytes_before),
        free(v.free_bytes_before),
        mib(v.bytes_after),
        free(v.free_bytes_after),
        v.steps,
        v.longest_step_ms,
        v.duration_ms
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct Start {
    /// The machine to start (its latest version).
    machine: String,
    /// The instance id; generated when absent.
    #[arg(long)]
    id: Option<String>,
    /// The start input, a JSON object merged over the machine's context.
    #[arg(long)]
    input: Option<String>,
    /// A label KEY=VALUE; repeatable.
    #[arg(long)]
    label: Vec<String>,
}

pub fn start(g: &Global, c: &dyn Client, a: Start) -> Result<(), Failure> {
    let input = match &a.input {
        Some(s) => parse_json_arg("--input", s)?,
        None => Value::Null,
    };
    let labels: BTreeMap<String, String> = parse_labels(&a.label)?.into_iter().collect();
    let i = c.start(&a.machine, a.id, input, labels)?;
    if g.json {
        print_json(&i);
    } else {
        print_instance(&i);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Send {
    /// The instance.
    id: String,
    /// The event name.
    event: String,
    /// The event payload, a JSON value (default `{}`).
    #[arg(long)]
    payload: Option<String>,
    /// An idempotency key: a repeat returns the first result and changes nothing.
    #[arg(long)]
    key: Option<String>,
    /// Refuse unless the instance is at this version.
    #[arg(long = "expect-version")]
    expect_version: Option<u64>,
    /// Who sends it, for the audit trail.
    #[arg(long, default_value = "")]
    actor: String,
    /// Why, for the audit trail.
    #[arg(long, default_value = "")]
    reason: String,
}

pub fn send(g: &Global, c: &dyn Client, a: Send) -> Result<(), Failure> {
    let payload = match &a.payload {
        Some(s) => parse_json_arg("--payload", s)?,
        None => Value::Null,
    };
    let actor = if a.actor.is_empty() {
        std::env::var("USER").unwrap_or_default()
    } else {
        a.actor
    };
    let req = SendRequest {
        event: a.event,
        payload,
        key: a.key,
        expected_version: a.expect_version,
        actor: actor.into(),
        reason: a.reason,
    };
    let s = c.send(&a.id, req)?;
    if g.json {
        print_json(&s);
    } else {
        let event = s
            .transition
            .as_ref()
            .and_then(|t| t.event.clone())
            .unwrap_or_default();
        let what = match &s.transition {
            Some(t) if s.replayed => format!(
                "{event} (idempotency key seen at version {}: nothing applied)",
                t.version
            ),
            Some(_) => event,
            None => "queued: the instance is paused; the event is applied on resume".into(),
        };
        crate::commands::print_change(&what, s.transition.as_ref(), &s.instance);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Show {
    /// The instance.
    id: String,
}

pub fn show(g: &Global, c: &dyn Client, a: Show) -> Result<(), Failure> {
    let i = c.get(&a.id)?;
    let waiting = c.waiting(&a.id)?;
    if g.json {
        // The instance's fields, and what it waits for beside them.
        let mut v = serde_json::to_value(&i).expect("serialises");
        v["waiting"] = serde_json::to_value(&waiting).expect("serialises");
        print_json(&v);
    } else {
        print_instance(&i);
        print_waiting(&waiting);
    }
    Ok(())
}

/// What `show` says an instance waits for; nothing when it waits for nothing.
fn print_waiting(w: &cairn_api::Waiting) {
    let now = chrono::Utc::now();
    let when = |t: chrono::DateTime<chrono::Utc>| {
        let secs = (t - now).num_seconds();
        let rel = if secs >= 0 {
            format!("in {}", crate::commands::human_secs(secs))
        } else {
            format!("{} ago", crate::commands::human_secs(-secs))
        };
        format!(
            "{} ({rel})",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    };
    for a in &w.approvals {
        let approvals = a.decisions.iter().filter(|d| d.approve).count();
        // Its deadline: the soonest timer of the state that asked.
        let deadline = w
            .timers
            .iter()
            .find(|t| t.state == a.state)
            .map(|t| format!("; deadline {}", when(t.due_at)))
            .unwrap_or_default();
        println!(
            "  waits for approval {} in {}: {}  (approvers: {}; {approvals} of {} so far{deadline})",
            a.id,
            a.state,
            a.prompt.as_deref().unwrap_or("(no prompt)"),
            if a.approvers.is_empty() {
                "anyone".to_string()
            } else {
                a.approvers.join(", ")
            },
            a.quorum
        );
    }
    for t in &w.timers {
        println!("  timer {} in {}: due {}", t.event, t.state, when(t.due_at));
    }
    for t in &w.tasks {
        let task = &t.task;
        let lease = match (&task.lease_owner, task.lease_expires_at) {
            (Some(owner), Some(until)) => format!(", leased by {owner} until {}", when(until)),
            _ => String::new(),
        };
        let last = t
            .attempts
            .last()
            .and_then(|a| {
                a.outcome
                    .as_ref()
                    .map(|o| format!(", attempt {} {o}", a.attempt))
            })
            .unwrap_or_default();
        println!(
            "  task {} ({} on {}) in {}: {} at attempt {}{lease}{last}",
            task.id, task.action, task.queue, task.state, task.status, task.attempt
        );
    }
    if !w.children_by_status.is_empty() {
        let by: Vec<String> = w
            .children_by_status
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        println!("  children: {}", by.join(", "));
        for c in &w.children {
            println!(
                "    {} ({}) {}: {}",
                c.id,
                c.machine,
                c.status,
                c.configuration.join(", ")
            );
        }
    }
    if !w.queued.is_empty() {
        println!("  queued until resume: {}", w.queued.join(", "));
    }
}

#[derive(clap::Args)]
pub struct Ls {
    /// Only instances of this machine.
    #[arg(long)]
    machine: Option<String>,
    /// Only instances with this status (running, paused, completed, failed, cancelled).
    #[arg(long)]
    status: Option<String>,
    /// Only instances in this state or one of its descendants (dotted path).
    #[arg(long)]
    state: Option<String>,
    /// Only instances with this label KEY=VALUE; repeatable (all must match).
    #[arg(long)]
    label: Vec<String>,
    /// Only the children this instance spawned.
    #[arg(long)]
    parent: Option<String>,
    /// At most this many instances.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Continue after this cursor (printed by the previous page).
    #[arg(long)]
    after: Option<String>,
}

pub fn ls(g: &Global, c: &dyn Client, a: Ls) -> Result<(), Failure> {
    let status = match &a.status {
        Some(s) => Some(cairn_core::Status::parse(s).ok_or_else(|| {
            Failure::usage(anyhow!(
                "unknown status `{s}`; expected running, paused, completed, failed or cancelled"
            ))
        })?),
        None => None,
    };
    let filter = InstanceFilter {
        namespace: String::new(),
        machine: a.machine,
        status,
        state: a.state,
        labels: parse_labels(&a.label)?,
        parent: a.parent,
        after: a.after,
        limit: a.limit.clamp(1, 10_000),
    };
    let page = c.list(filter)?;
    if g.json {
        print_json(&page);
    } else {
        for i in &page.instances {
            println!(
                "{}  {}@{}  {}  [{}]  version {}  updated {}",
                i.id,
                i.machine,
                i.machine_version,
                i.status,
                i.configuration.join(", "),
                i.version,
                i.updated_at.to_rfc3339()
            );
        }
        if let Some(n) = &page.next {
            println!("more: --after {n}");
        }
    }
    Ok(())
}

/// One instance of a tree, with its children.
#[derive(Serialize)]
struct Node {
    id: String,
    machine: String,
    machine_version: u32,
    status: String,
    configuration: Vec<String>,
    children: Vec<Node>,
}

/// The children of `id`, every page, oldest first.
fn children_of(c: &dyn Client, id: &str) -> Result<Vec<Instance>, Failure> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = c.list(InstanceFilter {
            parent: Some(id.to_string()),
            after: after.clone(),
            limit: 1000,
            ..Default::default()
        })?;
        out.extend(page.instances);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

fn node(c: &dyn Client, i: Instance, depth: usize) -> Result<Node, Failure> {
    // Children nest at most 16 deep; the bound also guards against a cycle in the data.
    let children = if depth < 32 {
        children_of(c, &i.id)?
            .into_iter()
            .map(|k| node(c, k, depth + 1))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    Ok(Node {
        id: i.id,
        machine: i.machine,
        machine_version: i.machine_version,
        status: i.status.to_string(),
        configuration: i.configuration,
        children,
    })
}

fn print_node(n: &Node, prefix: &str, last: bool, root: bool) {
    let (branch, more) = match (root, last) {
        (true, _) => ("", ""),
        (false, true) => ("└─ ", "   "),
        (false, false) => ("├─ ", "│  "),
    };
    println!(
        "{prefix}{branch}{}  {}@{}  {}  [{}]",
        n.id,
        n.machine,
        n.machine_version,
        n.status,
        n.configuration.join(", ")
    );
    let inner = format!("{prefix}{more}");
    for (k, child) in n.children.iter().enumerate() {
        print_node(child, &inner, k + 1 == n.children.len(), false);
    }
}

pub fn tree(g: &Global, c: &dyn Client, a: Show) -> Result<(), Failure> {
    let root = node(c, c.get(&a.id)?, 0)?;
    if g.json {
        print_json(&root);
    } else {
        print_node(&root, "", true, true);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct History {
    /// The instance.
    id: String,
    /// Only the newest N records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    tail: Option<u64>,
    /// Only records with a seq below this one (page back: the first seq shown).
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
    before: Option<u64>,
}

pub fn history(g: &Global, c: &dyn Client, a: History) -> Result<(), Failure> {
    let h: Vec<Transition> = c.history(&a.id, a.before, a.tail.map(|n| n as usize))?;
    if g.json {
        print_json(&h);
    } else {
        for t in h {
            // A task attempt moves no state: say how it ended instead.
            if t.kind == "attempt" {
                let p = &t.payload;
                let text = |k: &str| p[k].as_str().unwrap_or("").to_string();
                println!(
                    "{:>4}  {}  (attempt)  task {} ({}) attempt {} in {}: {}{}{}",
                    t.version,
                    t.at.to_rfc3339(),
                    text("task"),
                    text("action"),
                    p["attempt"],
                    text("state"),
                    text("outcome"),
                    p["error"]
                        .as_str()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                    p["duration_ms"]
                        .as_i64()
                        .map(|ms| format!(" after {ms} ms"))
                        .unwrap_or_default(),
                );
                continue;
            }
            println!(
                "{:>4}  {}  {}  [{}] -> [{}]  {}{}{}",
                t.version,
                t.at.to_rfc3339(),
                t.event.clone().unwrap_or_else(|| format!("({})", t.kind)),
                t.from.join(", "),
                t.to.join(", "),
                t.status,
                if t.actor.is_empty() {
                    String::new()
                } else {
                    format!("  by {}", t.actor)
                },
                if t.reason.is_empty() {
                    String::new()
                } else {
                    format!("  because {}", t.reason)
                },
            );
        }
    }
    Ok(())
}

pub fn accepts(g: &Global, c: &dyn Client, a: Show) -> Result<(), Failure> {
    let events = c.accepts(&a.id)?;
    if g.json {
        print_json(&events);
    } else {
        let width = events.iter().map(String::len).max().unwrap_or(0);
        for e in events {
            // Events the engine delivers say how they come: `cairn send` refuses them.
            match cairn_core::delivered_by(&e) {
                Some(by) => println!("{e:width$}  ({by})"),
                None => println!("{e}"),
            }
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct Verify {
    /// The instance; every instance of the namespace when absent.
    id: Option<String>,
}

pub fn verify(g: &Global, c: &dyn Client, a: Verify) -> Result<(), Failure> {
    let ids = match a.id {
        Some(id) => vec![id],
        None => c.ids()?,
    };
    let mut results = Vec::with_capacity(ids.len());
    let bar = crate::commands::lifecycle::progress(
        (ids.len() > 1).then_some(ids.len() as u64),
        "verifying",
    );
    for id in &ids {
        results.push(c.verify(id)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = cairn_api::VerifyReport::new(results);
    let failed = report.failed;
    if g.json {
        print_json(&report);
    } else {
        for r in &report.instances {
            match &r.problem {
                None => println!(
                    "ok      {}  ({})",
                    r.id,
                    crate::commands::count(r.versions, "version")
                ),
                Some(p) => println!("FAILED  {}: {p}", r.id),
            }
        }
        println!("{} checked, {failed} failed", report.checked);
    }
    if failed > 0 {
        return Err(Failure {
            code: 1,
            error: anyhow!("{failed} instance(s) failed verification"),
        });
    }
    Ok(())
}
