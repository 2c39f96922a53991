//! The `cairn` command line: `main` parses flags, `run` dispatches to one module per
//! subcommand under `commands/`, and errors become exit codes here and nowhere else.
//!
//! Exit codes: 0 success, 2 usage or malformed input, 3 not found, 4 refused, 1 other.

mod client;
mod commands;
mod config;
mod held;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The write path allocates a little per event on many threads; glibc's allocator spent
// ~15% of a W1 run in malloc/free and consolidation, mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Durable statecharts for AI-agent workflows.
#[derive(Parser)]
#[command(name = "cairn", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes. `data`, `namespace` and `max_payload` are also settings
/// (`cairn.toml`, `CAIRN_*`); a flag given here wins over them.
#[derive(clap::Args)]
pub struct Global {
    /// The data directory of the embedded store [setting `data`; default ./cairn-data;
    /// for `bench`, a temporary directory].
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    /// A PostgreSQL database instead of the data directory, `postgres://USER@HOST:PORT/DB`
    /// [setting `database`].
    #[arg(long, global = true)]
    pub database: Option<String>,
    /// The namespace to work in [setting `namespace`; default `default`].
    #[arg(long = "namespace", global = true)]
    pub namespace_flag: Option<String>,
    /// The resolved namespace.
    #[arg(skip)]
    pub namespace: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Talk to a running `cairn serve` at this URL instead of opening the data directory.
    #[arg(long, env = "CAIRN_SERVER", global = true)]
    pub server: Option<String>,
    /// The bearer token for `--server`.
    #[arg(long, env = "CAIRN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The largest event payload or start input accepted, in bytes [setting `max_payload`].
    #[arg(long, global = true)]
    pub max_payload: Option<usize>,
    /// The configuration file [default ./cairn.toml, with ./cairn.local.toml over it].
    #[arg(long, env = "CAIRN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a machine definition (YAML, TOML or JSON); exit 0 when valid.
    Validate(commands::validate::Args),
    /// Run a machine in memory, printing one JSON line per step.
    Simulate(commands::simulate::Args),
    /// Render a machine as Mermaid or Graphviz dot.
    Diagram(commands::diagram::Args),
    /// Apply a machine definition: same content is a no-op, changed content a new version.
    Apply(commands::instances::Apply),
    /// List machines (latest versions).
    Machines,
    /// Machine versions: `cairn machine rm NAME VERSION` deletes one no instance runs on.
    #[command(subcommand)]
    Machine(commands::instances::MachineCmd),
    /// Find stored machine versions that cannot be read back (stored by an older Cairn)
    /// and delete those no instance runs on.
    Repair(commands::instances::Repair),
    /// Give the space deletions freed back to the file system (SQLite) or to reuse
    /// (PostgreSQL), in bounded steps that never stall writers.
    Vacuum,
    /// Start an instance of a machine.
    Start(commands::instances::Start),
    /// Send an event to an instance.
    Send(commands::instances::Send),
    /// Show an instance.
    Show(commands::instances::Show),
    /// List instances, filtered.
    Ls(commands::instances::Ls),
    /// An instance and the children it spawned, with their statuses, as a tree.
    Tree(commands::instances::Show),
    /// Follow the server's event stream (an instance's, a machine's, or all), resuming
    /// after a disconnect.
    Watch(commands::watch::Args),
    /// Show an instance's history (all of it, or the newest N records).
    History(commands::instances::History),
    /// List the events an instance accepts now.
    Accepts(commands::instances::Show),
    /// Check that replaying history reproduces the stored state (one instance, or all).
    Verify(commands::instances::Verify),
    /// Fire due timers once (and apply retention if asked).
    Tick(commands::lifecycle::Tick),
    /// Take a named checkpoint of an instance.
    Checkpoint(commands::lifecycle::CheckpointArgs),
    /// Start a new instance from a version or checkpoint of another.
    Fork(commands::lifecycle::Fork),
    /// Pause an instance: events sent to it are queued until it resumes.
    Pause(commands::lifecycle::Lifecycle),
    /// Resume a paused instance: queued events apply in order, then due timers fire.
    Resume(commands::lifecycle::Lifecycle),
    /// Cancel an instance, with its timers and approvals.
    Cancel(commands::lifecycle::Lifecycle),
    /// List approvals (pending by default).
    Approvals(commands::lifecycle::Approvals),
    /// Approve an instance's pending approval.
    Approve(commands::lifecycle::Approve),
    /// Reject an instance's pending approval, with a reason.
    Reject(commands::lifecycle::Reject),
    /// Delete an instance, or every finished one older than a duration.
    Rm(commands::lifecycle::Rm),
    /// Export an instance as JSON, a Markdown report or a JSONL trace.
    Export(commands::lifecycle::ExportArgs),
    /// Write an online, consistent backup of the data directory to a file.
    Backup(commands::lifecycle::FileArg),
    /// Replace the data directory's database with a backup.
    Restore(commands::lifecycle::FileArg),
    /// Instances by machine and status, transitions, and mean time in each state.
    Stats,
    /// List tasks.
    Tasks(commands::worker::Tasks),
    /// Run a command per task of a queue: input on stdin, output from stdout.
    Worker(commands::worker::Worker),
    /// Manage API tokens for `cairn serve`.
    #[command(subcommand)]
    Token(commands::token::Token),
    /// Triggers: start an instance or send an event when another enters a state or reaches a status.
    #[command(subcommand)]
    Trigger(commands::trigger::Trigger),
    /// Cron schedules that start instances.
    #[command(subcommand)]
    Schedule(commands::schedule::Schedule),
    /// Serve the HTTP API on the data directory (the timer service runs with it).
    Serve(commands::serve::Args),
    /// Show every setting with its value and where it came from.
    Config,
    /// Run a benchmark workload of docs/benchmarks.md and print its JSON line.
    Bench(commands::bench::Args),
    /// Copy a SQLite data directory into an empty PostgreSQL database, and verify the copy.
    MigrateStore(commands::migrate::Args),
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

fn run(mut cli: Cli) -> Result<(), Failure> {
    use commands::instances as i;
    use commands::lifecycle as l;
    // Commands that touch no Cairn state read no configuration.
    match cli.command {
        Command::Validate(a) => return commands::validate::run(a, cli.global.json),
        Command::Simulate(a) => return commands::simulate::run(a),
        Command::Diagram(a) if a.is_local() => {
            return commands::diagram::run_file(a, cli.global.json);
        }
        Command::MigrateStore(a) => return commands::migrate::run(cli.global.json, a),
        Command::Bench(a) => {
            let data = cli
                .global
                .data
                .clone()
                .or_else(|| std::env::var_os("CAIRN_DATA").map(PathBuf::from));
            let database = cli
                .global
                .database
                .clone()
                .or_else(|| std::env::var("CAIRN_DATABASE").ok());
            return commands::bench::run(data, database, a);
        }
        _ => {}
    }
    let (listen, auth) = match &cli.command {
        Command::Serve(a) => (a.listen.clone(), a.auth.clone()),
        _ => (None, None),
    };
    let flags = config::Flags {
        data: cli.global.data.clone(),
        database: cli.global.database.clone(),
        namespace: cli.global.namespace_flag.clone(),
        max_payload: cli.global.max_payload,
        listen,
        auth,
    };
    let loaded = config::load(cli.global.config.as_deref(), flags)?;
    cli.global.namespace = loaded.settings.namespace.clone();
    let g = &cli.global;
    let data = loaded.settings.data.clone();
    let engine_config = loaded.settings.engine_config();
    let client = || -> Result<Box<dyn client::Client>, Failure> {
        Ok(Box::new(client::http::Http::connect(
            g,
            &loaded.settings,
            engine_config.clone(),
        )?))
    };
    match cli.command {
        Command::Diagram(a) => commands::diagram::run(&*client()?, a, g.json),
        Command::Validate(_)
        | Command::Simulate(_)
        | Command::Bench(_)
        | Command::MigrateStore(_) => {
            unreachable!("handled above")
        }
        Command::Config => {
            let d = loaded.describe();
            if g.json {
                println!("{}", serde_json::to_string_pretty(&d).expect("serialises"));
            } else if let Some(m) = d.as_object() {
                for (k, v) in m {
                    println!(
                        "{k} = {}  ({})",
                        v["value"],
                        v["source"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Command::Apply(a) => i::apply(g, &*client()?, a),
        Command::Machines => i::machines(g, &*client()?),
        Command::Machine(m) => i::machine(g, &*client()?, m),
        Command::Repair(a) => i::repair(g, &*client()?, a),
        Command::Vacuum => i::vacuum(g, &*client()?),
        Command::Start(a) => i::start(g, &*client()?, a),
        Command::Send(a) => i::send(g, &*client()?, a),
        Command::Show(a) => i::show(g, &*client()?, a),
        Command::Ls(a) => i::ls(g, &*client()?, a),
        Command::Trigger(t) => commands::trigger::run(g, &*client()?, t),
        Command::Schedule(s) => commands::schedule::run(g, &*client()?, s),
        Command::Tree(a) => i::tree(g, &*client()?, a),
        Command::Watch(a) => commands::watch::run(
            g,
            &client::http::Http::connect(g, &loaded.settings, engine_config.clone())?,
            a,
        ),
        Command::History(a) => i::history(g, &*client()?, a),
        Command::Accepts(a) => i::accepts(g, &*client()?, a),
        Command::Verify(a) => i::verify(g, &*client()?, a),
        Command::Serve(a) => {
            if g.server.is_some() {
                return Err(Failure::usage(anyhow::anyhow!(
                    "`cairn serve` serves a data directory; it takes no --server"
                )));
            }
            commands::serve::run(&loaded.settings, a)
        }
        Command::Tick(a) => l::tick(g, &*client()?, a),
        Command::Checkpoint(a) => l::checkpoint(g, &*client()?, a),
        Command::Fork(a) => l::fork(g, &*client()?, a),
        Command::Pause(a) => l::pause(g, &*client()?, a),
        Command::Resume(a) => l::resume(g, &*client()?, a),
        Command::Cancel(a) => l::cancel(g, &*client()?, a),
        Command::Approvals(a) => l::approvals(g, &*client()?, a),
        Command::Approve(a) => l::approve(g, &*client()?, a),
        Command::Reject(a) => l::reject(g, &*client()?, a),
        Command::Rm(a) => l::rm(g, &*client()?, a),
        Command::Export(a) => l::export(&*client()?, a),
        Command::Backup(a) => l::backup(g, &*client()?, a),
        Command::Restore(a) => {
            if g.server.is_some() {
                return Err(Failure::refused(anyhow::anyhow!(
                    "a live server's store cannot be replaced: stop `cairn serve`, then run `cairn restore` on its data directory"
                )));
            }
            l::restore(g, &data, a)
        }
        Command::Stats => l::stats(g, &*client()?),
        Command::Token(t) => commands::token::run(g, &loaded.settings, t),
        Command::Tasks(a) => commands::worker::tasks(g, &*client()?, a),
        Command::Worker(a) => commands::worker::worker(
            g,
            &client::http::Http::connect(g, &loaded.settings, engine_config.clone())?,
            a,
        ),
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
    // A command whose reader went away (`cairn ls | head`) ends quietly, as other Unix
    // tools do, instead of reporting a panic from `println!`.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info)
    }));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
