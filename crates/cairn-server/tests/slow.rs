//! Slow and malformed clients on a real socket: a client that never finishes its headers
//! is dropped after the header timeout while others are served, and garbage bytes get an
//! error, not a stuck connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_engine::{Config, Engine, SystemClock};
use cairn_server::{Ctx, Limits, Settings, app, serve_with};
use cairn_store_any::testing::Backend;

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn slow_headers_are_cut_off_and_others_still_served() {
    let dir = Backend::new();
    let engine = Engine::new(dir.open(), Arc::new(SystemClock), Config::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    rt.spawn(serve_with(
        listener,
        app(Ctx::new(engine, Settings::default())),
        std::future::pending(),
        limits,
    ));

    // Slow clients: half a request line, then nothing.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HT").unwrap();
            s
        })
        .collect();
    // Others are served meanwhile.
    assert!(get(&addr, "/healthz").contains("200 OK"));
    let start = Instant::now();
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        // The server closes the connection (perhaps after a 408): the read ends.
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(text.is_empty() || text.contains("408"), "{text}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "slow connections were not cut off: {:?}",
        start.elapsed()
    );
    // Garbage gets an error answer, not a hang.
    let mut g = TcpStream::connect(&addr).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    g.write_all(b"\x00\x01\x02 not http at all\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = g.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(get(&addr, "/healthz").contains("200 OK"));
}
