//! `cairn validate FILE`: load and check a definition; print a summary or every problem,
//! and the warnings (an outcome no state takes); `--strict` fails on warnings too.

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The machine file (.yaml, .yml, .toml or .json).
    file: String,
    /// Fail on warnings too (an outcome of a task, approval, child or map that no state
    /// takes), as on errors.
    #[arg(long)]
    strict: bool,
}

fn problem_json(d: &cairn_core::Diagnostic) -> serde_json::Value {
    serde_json::json!(cairn_engine::wire::finding(d))
}

pub fn run(args: Args, json: bool) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::usage(anyhow::anyhow!("cannot read `{}`: {e}", args.file)))?;
    match cairn_core::Machine::load(&text, None, Some(&args.file)) {
        Ok(m) => {
            let n = m.warnings.len();
            if json {
                let warnings: Vec<_> = m.warnings.iter().map(problem_json).collect();
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "machine": m.name(), "states": m.states.len() - 1,
                        "transitions": m.transitions.len(), "warnings": warnings})
                );
            } else {
                for w in &m.warnings {
                    println!("{w}");
                }
                use crate::commands::count;
                println!(
                    "{}: machine `{}` is valid ({}, {}{})",
                    args.file,
                    m.name(),
                    count(m.states.len() as u64 - 1, "state"),
                    count(m.transitions.len() as u64, "transition"),
                    match n {
                        0 => String::new(),
                        n => format!(", {}", count(n as u64, "warning")),
                    }
                );
            }
            if args.strict && n > 0 {
                return Err(Failure::usage(anyhow::anyhow!(
                    "{} in `{}` (--strict)",
                    crate::commands::count(n as u64, "warning"),
                    args.file
                )));
            }
            Ok(())
        }
        Err(e) => {
            if json {
                let problems: Vec<_> = e.diagnostics.iter().map(problem_json).collect();
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "problems": problems})
                );
                return Err(Failure::usage(anyhow::anyhow!(
                    "{} is not valid",
                    args.file
                )));
            }
            Err(Failure::usage(anyhow::anyhow!(
                "{e}\n{} in `{}`",
                crate::commands::count(e.diagnostics.len() as u64, "problem"),
                args.file
            )))
        }
    }
}
