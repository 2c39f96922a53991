//! One module per subcommand; shared helpers for reading definition files.

pub mod bench;
pub mod diagram;
pub mod instances;
pub mod lifecycle;
pub mod memory;
pub mod migrate;
pub mod schedule;
pub mod serve;
pub mod simulate;
pub mod soak;
pub mod token;
pub mod trigger;
pub mod validate;
pub mod watch;
pub mod w3;
pub mod w4;
pub mod w5;
pub mod worker;

use cairn_core::Machine;

use crate::Failure;

/// The one text shape of every command that changes an instance (`send`, `approve`,
/// `reject`, `pause`, `resume`, `cancel`, `fork`): what happened, with the transition it
/// recorded when there is one, then the instance as it now is, on one line.
pub fn print_change(what: &str, t: Option<&cairn_api::Transition>, i: &cairn_api::Instance) {
    match t {
        Some(t) => println!(
            "{what}: {} -> {}  version {}",
            t.from.join(", "),
            t.to.join(", "),
            t.version
        ),
        None => println!("{what}"),
    }
    println!(
        "{}  {}@{}  {}  [{}]  version {}",
        i.id,
        i.machine,
        i.machine_version,
        i.status,
        i.configuration.join(", "),
        i.version
    );
}

/// A span of seconds the way a person says it: `45s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn human_secs(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `n word` or `n words`: `1 transition`, `3 transitions`.
pub fn count(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// Reads and validates a machine file; problems exit with code 2, all of them listed.
pub fn load_machine(path: &str) -> Result<Machine, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(anyhow::anyhow!("cannot read `{path}`: {e}")))?;
    Machine::load(&text, None, Some(path)).map_err(|e| {
        Failure::usage(anyhow::anyhow!(
            "{e}\n{} in `{path}`",
            count(e.diagnostics.len() as u64, "problem")
        ))
    })
}
