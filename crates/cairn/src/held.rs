//! Which server holds a data directory. `cairn serve` records its URL beside the store's
//! lock (`cairn.server`: the URL and its pid) once it listens, and removes it when it
//! stops; an embedded command that finds the directory held reads it and, when the pid
//! is the lock's holder, talks to that server instead of failing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file beside the lock.
fn record_path(data: &Path) -> PathBuf {
    data.join("cairn.server")
}

#[derive(Serialize, Deserialize)]
struct Record {
    url: String,
    pid: u32,
}

/// A server's record of itself, removed when dropped (when `cairn serve` stops).
pub struct Recorded(PathBuf);

impl Drop for Recorded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Records that this process serves `data` at `url`.
pub fn record(data: &Path, url: &str) -> std::io::Result<Recorded> {
    let path = record_path(data);
    let text = serde_json::to_string(&Record {
        url: url.to_string(),
        pid: std::process::id(),
    })
    .map_err(std::io::Error::other)?;
    // Written whole, then renamed: a reader never sees half a record.
    let tmp = data.join("cairn.server.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(Recorded(path))
}

/// The URL of the `cairn serve` that holds `data` now, and its pid: its record names the
/// pid the lock file names (a record left by a server that was killed names another).
pub fn server(data: &Path) -> Option<(String, u32)> {
    let record: Record =
        serde_json::from_str(&std::fs::read_to_string(record_path(data)).ok()?).ok()?;
    let holder: u32 = std::fs::read_to_string(data.join("cairn.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (holder == record.pid).then_some((record.url, record.pid))
}

/// The URL a local client reaches a server bound to `bound` at: an unspecified address
/// (0.0.0.0, ::) is reached on loopback.
pub fn local_url(bound: std::net::SocketAddr) -> String {
    let ip = match bound.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, bound.port()))
}
