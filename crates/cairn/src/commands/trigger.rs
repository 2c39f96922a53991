//! `cairn trigger add|ls|rm`: rules that start an instance or send an event when an
//! instance of a machine enters a state or reaches a status (see docs/triggers.md).

use anyhow::anyhow;
use cairn_api::{Trigger as Def, TriggerSend, TriggerStart};

use crate::client::Client;
use crate::{Failure, Global};

#[derive(clap::Subcommand)]
pub enum Trigger {
    /// Add a trigger.
    Add(Box<Add>),
    /// List the namespace's triggers.
    Ls,
    /// Remove a trigger by name.
    Rm { name: String },
}

#[derive(clap::Args)]
pub struct Add {
    /// The trigger's name, unique in the namespace.
    name: String,
    /// The source machine.
    #[arg(long)]
    machine: String,
    /// Fire when the source enters this state (dotted path) or one of its descendants.
    #[arg(
        long,
        conflicts_with = "on_status",
        required_unless_present = "on_status"
    )]
    on_state: Option<String>,
    /// Fire when the source reaches a status: running (started or resumed), paused,
    /// completed, failed or cancelled.
    #[arg(long)]
    on_status: Option<String>,
    /// CEL condition over the source's `context`, `event`, `instance`, `now`.
    #[arg(long)]
    when: Option<String>,
    /// Start an instance of this machine.
    #[arg(long, conflicts_with = "send", required_unless_present = "send")]
    start: Option<String>,
    /// CEL: the started instance's input.
    #[arg(long, requires = "start")]
    input: Option<String>,
    /// CEL: the started instance's id (generated when absent).
    #[arg(long, requires = "start")]
    id: Option<String>,
    /// Send this event.
    #[arg(long, requires = "to")]
    send: Option<String>,
    /// CEL: the id of the instance the event goes to.
    #[arg(long, requires = "send")]
    to: Option<String>,
    /// CEL: the event's payload.
    #[arg(long, requires = "send")]
    payload: Option<String>,
}

pub fn run(g: &Global, c: &dyn Client, t: Trigger) -> Result<(), Failure> {
    match t {
        Trigger::Add(a) => {
            let a = *a;
            let def = Def {
                name: a.name,
                machine: a.machine,
                on_state: a.on_state,
                on_status: a.on_status,
                when: a.when,
                start: a.start.map(|machine| TriggerStart {
                    machine,
                    input: a.input,
                    id: a.id,
                }),
                send: match (a.send, a.to) {
                    (Some(event), Some(to)) => Some(TriggerSend {
                        to,
                        event,
                        payload: a.payload,
                    }),
                    (None, None) => None,
                    _ => return Err(Failure::usage(anyhow!("`--send` needs `--to`"))),
                },
                created_at: None,
            };
            let added = c.add_trigger(def)?;
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&added).expect("serialises")
                );
            } else {
                println!("added trigger {}", added.name);
            }
        }
        Trigger::Ls => {
            let list = c.triggers()?;
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).expect("serialises")
                );
            } else {
                for t in list {
                    let on = match (&t.on_state, &t.on_status) {
                        (Some(s), _) => format!("enters {s}"),
                        (_, Some(s)) => format!("reaches {s}"),
                        _ => String::new(),
                    };
                    let then = match (&t.start, &t.send) {
                        (Some(s), _) => format!("start {}", s.machine),
                        (_, Some(s)) => format!("send {} to {}", s.event, s.to),
                        _ => String::new(),
                    };
                    println!(
                        "{}  when {} {}{}: {}",
                        t.name,
                        t.machine,
                        on,
                        t.when
                            .as_deref()
                            .map(|w| format!(" and {w}"))
                            .unwrap_or_default(),
                        then
                    );
                }
            }
        }
        Trigger::Rm { name } => {
            c.remove_trigger(&name)?;
            if g.json {
                println!("{}", serde_json::json!({"removed": name}));
            } else {
                println!("removed trigger {name}");
            }
        }
    }
    Ok(())
}
