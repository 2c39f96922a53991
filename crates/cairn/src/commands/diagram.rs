//! `cairn diagram FILE --format mermaid|dot [--active PATH]...`.

use cairn_core::diagram::{DiagramFormat, render};

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The machine file.
    file: String,
    /// `mermaid` or `dot`.
    #[arg(long, default_value = "mermaid")]
    format: String,
    /// Highlight these active leaf states (dotted paths).
    #[arg(long)]
    active: Vec<String>,
}

pub fn run(args: Args, json: bool) -> Result<(), Failure> {
    let format = DiagramFormat::parse(&args.format).ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "unknown diagram format `{}`; expected mermaid or dot",
            args.format
        ))
    })?;
    let m = super::load_machine(&args.file)?;
    for a in &args.active {
        if m.state_by_path(a).is_none() {
            return Err(Failure::usage(anyhow::anyhow!(
                "`--active {a}`: no such state"
            )));
        }
    }
    let text = render(&m, format, &args.active);
    if json {
        println!(
            "{}",
            serde_json::json!({"machine": m.name(), "format": args.format, "active": args.active, "diagram": text})
        );
    } else {
        print!("{text}");
    }
    Ok(())
}
