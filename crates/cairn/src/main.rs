//! The `cairn` command line: `main` parses flags, `run` dispatches to one module per
//! subcommand under `commands/`, and errors become exit codes here and nowhere else.
//!
//! Exit codes: 0 success, 2 usage or malformed input, 3 not found, 4 refused, 1 other.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable statecharts for AI-agent workflows.
#[derive(Parser)]
#[command(name = "cairn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a machine definition (YAML, TOML or JSON); exit 0 when valid.
    Validate(commands::validate::Args),
    /// Run a machine in memory, printing one JSON line per step.
    Simulate(commands::simulate::Args),
    /// Render a machine as Mermaid or Graphviz dot.
    Diagram(commands::diagram::Args),
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 2,
            error: error.into(),
        }
    }
    pub fn refused(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 4,
            error: error.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure { code: 1, error }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Validate(a) => commands::validate::run(a),
        Command::Simulate(a) => commands::simulate::run(a),
        Command::Diagram(a) => commands::diagram::run(a),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
