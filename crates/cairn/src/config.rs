//! Settings, layered: built-in defaults, then `cairn.toml`, then `cairn.local.toml` (both
//! in the working directory, or `--config FILE` and its `.local.toml` sibling), then
//! `CAIRN_*` environment variables (`__` for nesting: `CAIRN_HTTP__MAX_STREAMS`), then
//! flags. Validated at start; every error names the setting and where its value came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Failure;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The data directory of the embedded store.
    pub data: PathBuf,
    /// A PostgreSQL database (`postgres://user@host:port/db`) instead of the data
    /// directory: several `cairn serve` nodes can share it.
    pub database: Option<String>,
    /// A `cairn serve` to talk to instead of opening the store (`--server` and
    /// `CAIRN_SERVER` come first).
    pub server: Option<String>,
    pub namespace: String,
    /// `cairn serve`'s address.
    pub listen: String,
    /// `on`, `off`, or unset: on unless `listen` is a loopback address.
    pub auth: Option<String>,
    /// How `cairn serve` logs: `auto` (readable lines on a terminal, JSON lines
    /// otherwise), `text` or `json`.
    pub log_format: String,
    /// The largest event payload or start input, in bytes.
    pub max_payload: usize,
    /// The largest context a step may leave, in bytes of JSON; the payload limit when
    /// unset.
    pub max_context: Option<usize>,
    pub limits: Limits,
    pub http: Http,
    pub retention: Retention,
    pub sqlite: Sqlite,
    pub executors: Executors,
    /// Secrets by name, for `{{secret.NAME}}` in `exec` and `http` tasks. Never shown by
    /// `cairn config`.
    pub secrets: std::collections::BTreeMap<String, String>,
}

/// Bounds on definitions, expressions and evaluations (`cairn_core::Limits`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub expression_length: usize,
    pub expression_depth: usize,
    pub definition_depth: usize,
    pub json_depth: usize,
    pub eval_steps: u64,
    pub eval_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        let d = cairn_core::Limits::default();
        Limits {
            expression_length: d.expression_length,
            expression_depth: d.expression_depth,
            definition_depth: d.definition_depth,
            json_depth: d.json_depth,
            eval_steps: d.eval_steps,
            eval_bytes: d.eval_bytes,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Executors {
    pub exec: ExecExecutor,
    pub http: HttpExecutor,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecExecutor {
    /// Commands `task.exec` may run, exactly as definitions write them.
    pub allow: Vec<String>,
    /// Variables a command inherits from the server; the rest are cleared.
    pub inherit_env: Vec<String>,
    /// Bytes of stdout and of stderr kept when a task sets no `max_output`.
    pub output: usize,
    /// The most a task may ask to keep.
    pub max_output: usize,
    pub concurrency: usize,
    /// The timeout of a task that declares none.
    pub timeout: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpExecutor {
    pub concurrency: usize,
    /// The largest response body kept, in bytes.
    pub max_response: usize,
    /// The timeout of a task that declares none.
    pub timeout: String,
}

impl Default for ExecExecutor {
    fn default() -> ExecExecutor {
        let d = cairn_engine::Executors::default();
        ExecExecutor {
            allow: d.exec_allow,
            inherit_env: d.exec_inherit_env,
            output: d.exec_output,
            max_output: d.exec_max_output,
            concurrency: d.exec_concurrency,
            timeout: "10m".into(),
        }
    }
}

impl Default for HttpExecutor {
    fn default() -> HttpExecutor {
        let d = cairn_engine::Executors::default();
        HttpExecutor {
            concurrency: d.http_concurrency,
            max_response: d.http_max_response,
            timeout: "30s".into(),
        }
    }
}

impl Settings {
    /// The engine's configuration from these (validated) settings.
    pub fn engine_config(&self) -> cairn_engine::Config {
        let (e, h) = (&self.executors.exec, &self.executors.http);
        cairn_engine::Config {
            max_payload_bytes: self.max_payload,
            executors: cairn_engine::Executors {
                exec_allow: e.allow.clone(),
                exec_inherit_env: e.inherit_env.clone(),
                exec_output: e.output,
                exec_max_output: e.max_output,
                exec_concurrency: e.concurrency,
                exec_timeout: duration(&e.timeout).unwrap_or(Duration::from_secs(600)),
                http_concurrency: h.concurrency,
                http_max_response: h.max_response,
                http_timeout: duration(&h.timeout).unwrap_or(Duration::from_secs(30)),
                secrets: cairn_engine::Secrets(self.secrets.clone()),
            },
            shared_store: self.database.is_some(),
            limits: self.core_limits(),
        }
    }

    /// The limits these settings give (validated: within `cairn_core::Limits::CEILING`).
    pub fn core_limits(&self) -> cairn_core::Limits {
        let l = &self.limits;
        cairn_core::Limits {
            expression_length: l.expression_length,
            expression_depth: l.expression_depth,
            definition_depth: l.definition_depth,
            json_depth: l.json_depth,
            context_bytes: self.max_context.unwrap_or(self.max_payload),
            eval_steps: l.eval_steps,
            eval_bytes: l.eval_bytes,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    pub max_body_bytes: usize,
    pub max_page: usize,
    pub request_timeout: String,
    pub max_streams: usize,
    pub max_claim_wait: String,
    /// Host names that name this server besides loopback names and the listen address
    /// (requests with another `Host` are refused: DNS rebinding); `*` turns the check off.
    pub allowed_hosts: Vec<String>,
    /// Origins whose web pages may call the API (CORS); none by default.
    pub cors_origins: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Remove finished instances last updated longer ago than this (e.g. `30d`).
    pub finished_after: Option<String>,
    /// Fold all but this many of each instance's newest history records.
    pub max_history: Option<usize>,
    /// Remove log entries (what `/v1/events` streams) older than this.
    pub log_after: Option<String>,
    /// And keep at most this many of the newest.
    pub log_max_entries: Option<u64>,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            finished_after: None,
            max_history: None,
            log_after: Some("7d".into()),
            log_max_entries: None,
        }
    }
}

/// The embedded store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sqlite {
    /// The most bytes the write-ahead log may hold before the writer checkpoints it
    /// completely and starts it over (0: only background checkpoints).
    pub wal_limit: u64,
}

impl Default for Sqlite {
    fn default() -> Sqlite {
        Sqlite {
            wal_limit: cairn_store_any::SqliteOptions::default().wal_limit,
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            data: PathBuf::from("./cairn-data"),
            database: None,
            server: None,
            namespace: "default".into(),
            listen: "127.0.0.1:7878".into(),
            auth: None,
            log_format: "auto".into(),
            max_payload: 1024 * 1024,
            max_context: None,
            limits: Limits::default(),
            http: Http::default(),
            retention: Retention::default(),
            sqlite: Sqlite::default(),
            executors: Executors::default(),
            secrets: Default::default(),
        }
    }
}

impl Default for Http {
    fn default() -> Http {
        Http {
            max_body_bytes: 2 * 1024 * 1024,
            max_page: 1000,
            request_timeout: "30s".into(),
            max_streams: 256,
            max_claim_wait: "30s".into(),
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

/// Settings with the figure they were read from, for errors and `cairn config`.
pub struct Loaded {
    pub settings: Settings,
    figment: Figment,
}

/// Flags given on the command line (and only those).
#[derive(Default, Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

pub fn load(config: Option<&Path>, flags: Flags) -> Result<Loaded, Failure> {
    let base = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("cairn.toml"));
    if config.is_some() && !base.exists() {
        return Err(Failure::usage(anyhow!(
            "`--config {}`: no such file",
            base.display()
        )));
    }
    let local = base.with_extension("local.toml");
    let figment = Figment::from(Serialized::defaults(Settings::default()))
        .merge(Toml::file(&base))
        .merge(Toml::file(&local))
        .merge(Env::prefixed("CAIRN_").split("__").ignore(&[
            "server",
            "token",
            "log",
            "config",
            "test_backend",
            "test_postgres_url",
        ]))
        .merge(Serialized::globals(flags));
    let settings: Settings = figment
        .extract()
        .map_err(|e| Failure::usage(anyhow!("invalid configuration: {e}")))?;
    let loaded = Loaded { settings, figment };
    loaded.validate()?;
    Ok(loaded)
}

/// `30s`, `10m`, `2h`, `7d`, `500ms`.
pub fn duration(s: &str) -> Option<Duration> {
    crate::commands::lifecycle::parse_duration("", s)
        .ok()
        .and_then(|d| d.to_std().ok())
}

impl Loaded {
    /// Where a setting's value came from.
    pub fn source(&self, key: &str) -> String {
        match self.figment.find_metadata(key) {
            Some(m) => match &m.source {
                Some(figment::Source::File(p)) => p.display().to_string(),
                Some(figment::Source::Code(_)) if m.name.contains("Flags") => {
                    format!("flag --{}", key.replace('_', "-"))
                }
                Some(figment::Source::Code(_)) => "default".into(),
                _ if m.name.contains("environment") => {
                    format!(
                        "environment variable CAIRN_{}",
                        key.to_uppercase().replace('.', "__")
                    )
                }
                Some(other) => other.to_string(),
                None => m.name.to_string(),
            },
            None => "default".into(),
        }
    }

    fn bad(&self, key: &str, value: impl std::fmt::Display, why: &str) -> Failure {
        Failure::usage(anyhow!(
            "setting `{key}` = `{value}` (from {}): {why}",
            self.source(key)
        ))
    }

    fn validate(&self) -> Result<(), Failure> {
        let s = &self.settings;
        s.listen
            .parse::<SocketAddr>()
            .map_err(|e| self.bad("listen", &s.listen, &format!("not an ADDRESS:PORT ({e})")))?;
        if let Some(a) = &s.auth
            && a != "on"
            && a != "off"
        {
            return Err(self.bad("auth", a, "expected on or off"));
        }
        if let Some(db) = &s.database
            && !cairn_store_any::is_postgres_url(db)
        {
            return Err(self.bad(
                "database",
                cairn_store_any::redact(db),
                "expected a PostgreSQL URL: postgres://USER@HOST:PORT/DATABASE",
            ));
        }
        if s.namespace.is_empty() {
            return Err(self.bad("namespace", &s.namespace, "must not be empty"));
        }
        if s.max_payload == 0 {
            return Err(self.bad("max_payload", s.max_payload, "must be at least 1"));
        }
        if let Err((name, v, max)) = s.core_limits().check() {
            let key = if name == "context_bytes" {
                "max_context".to_string()
            } else {
                format!("limits.{name}")
            };
            return Err(self.bad(&key, v, &format!("must be 1 to {max}")));
        }
        for (key, v) in [
            ("http.request_timeout", &s.http.request_timeout),
            ("http.max_claim_wait", &s.http.max_claim_wait),
            ("executors.exec.timeout", &s.executors.exec.timeout),
            ("executors.http.timeout", &s.executors.http.timeout),
        ] {
            if duration(v).is_none() {
                return Err(self.bad(key, v, "not a duration (e.g. 30s, 5m)"));
            }
        }
        for (key, v) in [
            ("http.max_body_bytes", s.http.max_body_bytes),
            ("http.max_page", s.http.max_page),
            ("http.max_streams", s.http.max_streams),
            ("executors.exec.output", s.executors.exec.output),
            ("executors.exec.max_output", s.executors.exec.max_output),
            ("executors.exec.concurrency", s.executors.exec.concurrency),
            ("executors.http.concurrency", s.executors.http.concurrency),
            ("executors.http.max_response", s.executors.http.max_response),
        ] {
            if v == 0 {
                return Err(self.bad(key, v, "must be at least 1"));
            }
        }
        for o in &s.http.cors_origins {
            let ok = o.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
            });
            if !ok {
                return Err(self.bad(
                    "http.cors_origins",
                    o,
                    "an origin is scheme://host[:port], e.g. https://app.example.com",
                ));
            }
        }
        for h in &s.http.allowed_hosts {
            if h.is_empty() || h.contains(['/', ' ', ':']) && h.parse::<std::net::IpAddr>().is_err()
            {
                return Err(self.bad(
                    "http.allowed_hosts",
                    h,
                    "a host name or address without scheme or port, e.g. cairn.example.com",
                ));
            }
        }
        for (key, v) in [
            ("retention.finished_after", &s.retention.finished_after),
            ("retention.log_after", &s.retention.log_after),
        ] {
            if let Some(v) = v
                && duration(v).is_none()
            {
                return Err(self.bad(key, v, "not a duration (e.g. 30d)"));
            }
        }
        if !matches!(s.log_format.as_str(), "auto" | "text" | "json") {
            return Err(self.bad("log_format", &s.log_format, "auto, text or json"));
        }
        if s.retention.log_max_entries == Some(0) {
            return Err(self.bad("retention.log_max_entries", 0, "must be at least 1"));
        }
        for c in &s.executors.exec.allow {
            if c.trim().is_empty() {
                return Err(self.bad(
                    "executors.exec.allow",
                    "\"\"",
                    "a command must not be empty",
                ));
            }
        }
        for name in s.secrets.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(self.bad(
                    &format!("secrets.{name}"),
                    "(hidden)",
                    "a secret's name is letters, digits, `_` or `-`",
                ));
            }
        }
        if s.retention.max_history == Some(0) {
            return Err(self.bad("retention.max_history", 0, "must be at least 1"));
        }
        Ok(())
    }

    /// Every setting with its value and source, for `cairn config`.
    pub fn describe(&self) -> Value {
        let v = serde_json::to_value(&self.settings).unwrap_or_default();
        let mut out = serde_json::Map::new();
        fn walk(prefix: &str, v: &Value, out: &mut serde_json::Map<String, Value>, l: &Loaded) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, v, out, l);
                    }
                }
                // A database URL is shown without its password.
                Value::String(url) if prefix == "database" => {
                    out.insert(
                        prefix.to_string(),
                        json!({"value": cairn_store_any::redact(url), "source": l.source(prefix)}),
                    );
                }
                // Secrets are named, never shown.
                other if prefix.starts_with("secrets.") => {
                    let _ = other;
                    out.insert(
                        prefix.to_string(),
                        json!({"value": "(hidden)", "source": l.source(prefix)}),
                    );
                }
                other => {
                    out.insert(
                        prefix.to_string(),
                        json!({"value": other, "source": l.source(prefix)}),
                    );
                }
            }
        }
        walk("", &v, &mut out, self);
        Value::Object(out)
    }
}
