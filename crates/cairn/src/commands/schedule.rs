//! `cairn schedule add|ls|rm`: cron schedules that start instances (see
//! docs/schedules.md).

use crate::client::Client;
use crate::{Failure, Global};

#[derive(clap::Subcommand)]
pub enum Schedule {
    /// Add a schedule.
    Add(Box<Add>),
    /// List the namespace's schedules with their next and last ticks.
    Ls,
    /// Remove a schedule by name.
    Rm { name: String },
}

#[derive(clap::Args)]
pub struct Add {
    /// The schedule's name, unique in the namespace.
    name: String,
    /// Cron expression: five fields (minute hour day month weekday), six with seconds
    /// first, or `@hourly`, `@daily`...
    #[arg(long)]
    cron: String,
    /// IANA time zone of the expression (default UTC).
    #[arg(long = "tz")]
    timezone: Option<String>,
    /// The machine each tick starts.
    #[arg(long)]
    machine: String,
    /// The start input (a JSON object).
    #[arg(long)]
    input: Option<String>,
    /// Ticks missed while the server was down: `once` (run once, the default) or `skip`.
    #[arg(long)]
    catch_up: Option<String>,
}

pub fn run(g: &Global, c: &dyn Client, s: Schedule) -> Result<(), Failure> {
    match s {
        Schedule::Add(a) => {
            let a = *a;
            let input = match &a.input {
                Some(text) => Some(crate::commands::instances::parse_json_arg("--input", text)?),
                None => None,
            };
            let added = c.add_schedule(cairn_api::Schedule {
                name: a.name,
                cron: a.cron,
                timezone: a.timezone,
                machine: a.machine,
                input,
                catch_up: a.catch_up,
                next_at: None,
                last_at: None,
                created_at: None,
            })?;
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&added).expect("serialises")
                );
            } else {
                println!(
                    "added schedule {}; next tick {}",
                    added.name,
                    added.next_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                );
            }
        }
        Schedule::Ls => {
            let list = c.schedules()?;
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).expect("serialises")
                );
            } else {
                for s in list {
                    println!(
                        "{}  {} ({})  start {}  next {}  last {}",
                        s.name,
                        s.cron,
                        s.timezone.as_deref().unwrap_or("UTC"),
                        s.machine,
                        s.next_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        s.last_at
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "never".into())
                    );
                }
            }
        }
        Schedule::Rm { name } => {
            c.remove_schedule(&name)?;
            if g.json {
                println!("{}", serde_json::json!({"removed": name}));
            } else {
                println!("removed schedule {name}");
            }
        }
    }
    Ok(())
}
