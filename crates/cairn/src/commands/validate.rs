//! `cairn validate FILE`: load and check a definition; print a summary or every problem.

use crate::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// The machine file (.yaml, .yml, .toml or .json).
    file: String,
}

pub fn run(args: Args, json: bool) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::usage(anyhow::anyhow!("cannot read `{}`: {e}", args.file)))?;
    match cairn_core::Machine::load(&text, None, Some(&args.file)) {
        Ok(m) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "machine": m.name(), "states": m.states.len() - 1, "transitions": m.transitions.len()})
                );
            } else {
                println!(
                    "{}: machine `{}` is valid ({} states, {} transitions)",
                    args.file,
                    m.name(),
                    m.states.len() - 1,
                    m.transitions.len()
                );
            }
            Ok(())
        }
        Err(e) => {
            if json {
                let problems: Vec<_> = e
                    .diagnostics
                    .iter()
                    .map(|d| {
                        serde_json::json!({"kind": d.kind.code(), "file": d.file, "line": d.pos.line,
                            "column": d.pos.col, "state": d.state, "message": d.message})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "problems": problems})
                );
                return Err(Failure::usage(anyhow::anyhow!(
                    "{} is not valid",
                    args.file
                )));
            }
            let n = e.diagnostics.len();
            Err(Failure::usage(anyhow::anyhow!(
                "{e}\n{n} problem{} in `{}`",
                if n == 1 { "" } else { "s" },
                args.file
            )))
        }
    }
}
