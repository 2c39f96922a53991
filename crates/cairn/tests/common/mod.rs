//! Shared by the integration tests that run `cairn serve` as a real process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `cairn serve --listen LISTEN [EXTRA...] --data DATA` and reads its first line.
/// Returns the process, the URL it announced and that line, or `None` (after reaping it)
/// if it did not come up listening, e.g. while a killed server's port lingers.
pub fn spawn_serve(data: &Path, listen: &str, extra: &[&str]) -> Option<(Child, String, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--listen", listen])
        .args(extra)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    match line.split_whitespace().find(|w| w.starts_with("http://")) {
        Some(url) if line.contains("listening") => {
            let url = url.to_string();
            Some((child, url, line))
        }
        _ => {
            let _ = child.wait();
            None
        }
    }
}
