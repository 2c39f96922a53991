//! `cairn diagram MACHINE|FILE [--instance ID] [--format mermaid|dot|svg] [--active PATH]...`:
//! a machine file is drawn here; a machine name is drawn from the store (embedded or
//! `--server`), with an instance's active states marked. `svg` is the `dot` drawing
//! rendered by Graphviz, which must be installed.

use std::io::Write as _;
use std::process::{Command, Stdio};

use cairn_core::diagram::{DiagramFormat, render};

use crate::Failure;
use crate::client::Client;

#[derive(clap::Args)]
pub struct Args {
    /// A machine file, or the name of a stored machine.
    machine: String,
    /// `mermaid`, `dot`, or `svg` (Graphviz's `dot` renders it).
    #[arg(long, default_value = "mermaid")]
    format: String,
    /// Mark this instance's active states (the stored machine's version it runs).
    #[arg(long)]
    instance: Option<String>,
    /// Highlight these active leaf states (dotted paths).
    #[arg(long)]
    active: Vec<String>,
}

impl Args {
    /// Drawn from a file, with no store to read: the argument names a file and no
    /// instance is asked for.
    pub fn is_local(&self) -> bool {
        self.instance.is_none() && std::path::Path::new(&self.machine).is_file()
    }
}

/// The format to ask for, and whether its text is then rendered to SVG.
fn format(args: &Args) -> Result<(DiagramFormat, bool), Failure> {
    match args.format.as_str() {
        "svg" => Ok((DiagramFormat::Dot, true)),
        f => DiagramFormat::parse(f).map(|d| (d, false)).ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "unknown diagram format `{f}`; expected mermaid, dot or svg"
            ))
        }),
    }
}

/// A machine file, drawn here.
pub fn run_file(args: Args, json: bool) -> Result<(), Failure> {
    let (fmt, svg) = format(&args)?;
    let m = super::load_machine(&args.machine)?;
    for a in &args.active {
        if m.state_by_path(a).is_none() {
            return Err(Failure::usage(anyhow::anyhow!(
                "`--active {a}`: no such state{}",
                cairn_core::did_you_mean(a, m.states.iter().skip(1).map(|s| s.path.as_str()))
            )));
        }
    }
    let text = render(&m, fmt, &args.active);
    print(&args, m.name(), text, svg, json)
}

/// A stored machine (or a file, with an instance's states), drawn by the store's side.
pub fn run(c: &dyn Client, args: Args, json: bool) -> Result<(), Failure> {
    let (fmt, svg) = format(&args)?;
    let wire = if fmt == DiagramFormat::Dot {
        "dot"
    } else {
        "mermaid"
    };
    if std::path::Path::new(&args.machine).is_file() {
        // A file with an instance: the file drawn, the instance's states marked.
        let m = super::load_machine(&args.machine)?;
        let mut active = args.active.clone();
        if let Some(id) = &args.instance {
            active.extend(c.get(id)?.configuration);
        }
        let text = render(&m, fmt, &active);
        return print(&args, m.name(), text, svg, json);
    }
    if !args.active.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "`--active` marks states of a machine file; for a stored machine, use `--instance ID`"
        )));
    }
    let text = c.diagram(&args.machine, wire, args.instance.as_deref())?;
    let name = args.machine.clone();
    print(&args, &name, text, svg, json)
}

fn print(args: &Args, name: &str, text: String, svg: bool, json: bool) -> Result<(), Failure> {
    let text = if svg { to_svg(&text)? } else { text };
    if json {
        println!(
            "{}",
            serde_json::json!({"machine": name, "format": args.format, "instance": args.instance,
                "active": args.active, "diagram": text})
        );
    } else {
        print!("{text}");
    }
    Ok(())
}

/// Graphviz's rendering of a `dot` drawing.
fn to_svg(dot: &str) -> Result<String, Failure> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Failure::usage(anyhow::anyhow!(
                "`--format svg` needs Graphviz's `dot` on the PATH ({e}); install Graphviz \
                 (Debian: apt-get install graphviz), or use `--format dot` and render it elsewhere"
            ))
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(dot.as_bytes())
        .map_err(|e| Failure::from(anyhow::anyhow!("writing to `dot`: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Failure::from(anyhow::anyhow!("running `dot`: {e}")))?;
    if !out.status.success() {
        return Err(Failure::from(anyhow::anyhow!(
            "`dot -Tsvg` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|e| Failure::from(anyhow::anyhow!("`dot` wrote no text: {e}")))
}
