//! The core is pure: no async runtime, database driver, HTTP stack or clock crate may
//! enter its dependency tree (default features included, e.g. jsonschema's HTTP resolver).

use std::process::Command;

const BANNED: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "mio",
    "futures-executor",
    "rusqlite",
    "libsqlite3-sys",
    "sqlx",
    "postgres",
    "tokio-postgres",
    "diesel",
    "hyper",
    "http",
    "reqwest",
    "ureq",
    "axum",
    "tower",
    "rustls",
    "native-tls",
    "openssl",
    "curl",
];

#[test]
fn core_depends_on_no_runtime_database_or_http_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "cairn-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"cel"), "the tree looks wrong:\n{tree}");
    let found: Vec<&&str> = BANNED.iter().filter(|b| crates.contains(b)).collect();
    assert!(
        found.is_empty(),
        "cairn-core must stay pure, but depends on {found:?}:\n{tree}"
    );
}
