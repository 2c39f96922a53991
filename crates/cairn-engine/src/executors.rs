//! The policy of the built-in executors (`task.exec` runs a command, `task.http` makes an
//! HTTP request; the runtime's `ExecutorService` claims and runs them). Policy lives in
//! [`Executors`], from the server's configuration: which commands `exec`
//! may run (an allowlist, checked when a machine is applied and again when a command
//! runs), and the secrets `{{secret.NAME}}` placeholders name. Definitions never hold a
//! secret: the stored task input keeps the placeholder, the executor fills it in when it
//! runs, and a secret's value is masked again in what comes back (stdout, stderr, the
//! response body).
//!
//! Outcomes: `exec` completes with `{exit_code, stdout, stderr, stdout_truncated,
//! stderr_truncated, duration_ms}` (plus `json` when stdout is JSON) on exit status 0;
//! any other status, a signal or the timeout fails the attempt as retryable with the same
//! fields in `task.failed`'s payload. `http` completes with `{status, headers, body}` on
//! 2xx; 408, 425, 429, 5xx and transport errors fail as retryable, other statuses as not.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::{Error, Role};

/// Secret values by name; never printed.
#[derive(Clone, Default, PartialEq)]
pub struct Secrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// The built-in executors' policy and limits.
#[derive(Clone, Debug)]
pub struct Executors {
    /// The commands `task.exec` may run, exactly as definitions write them (a name looked
    /// up on `PATH`, or an absolute path). Empty: `exec` is refused.
    pub exec_allow: Vec<String>,
    /// The environment variables a command inherits from the server; everything else is
    /// cleared.
    pub exec_inherit_env: Vec<String>,
    /// Bytes kept of stdout and of stderr when a task sets no `max_output`.
    pub exec_output: usize,
    /// The most bytes of stdout or stderr a task may ask to keep.
    pub exec_max_output: usize,
    /// Commands run at once.
    pub exec_concurrency: usize,
    /// The timeout of a command whose task declares none.
    pub exec_timeout: Duration,
    /// Requests made at once.
    pub http_concurrency: usize,
    /// The largest response body kept.
    pub http_max_response: usize,
    /// The timeout of a request whose task declares none.
    pub http_timeout: Duration,
    /// Secret values `{{secret.NAME}}` placeholders name.
    pub secrets: Secrets,
}

impl Default for Executors {
    fn default() -> Executors {
        Executors {
            exec_allow: Vec::new(),
            exec_inherit_env: ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"]
                .map(String::from)
                .to_vec(),
            exec_output: 64 * 1024,
            exec_max_output: 1024 * 1024,
            exec_concurrency: 4,
            exec_timeout: Duration::from_secs(600),
            http_concurrency: 16,
            http_max_response: 1024 * 1024,
            http_timeout: Duration::from_secs(30),
            secrets: Secrets::default(),
        }
    }
}

impl Executors {
    /// Whether `command` is on the allowlist.
    pub fn allows(&self, command: &str) -> bool {
        self.exec_allow.iter().any(|c| c == command)
    }

    /// Checks a machine's use of the executors when it is applied by `role`.
    pub(crate) fn check(&self, machine: &cairn_core::Machine, role: Role) -> Result<(), Error> {
        for u in machine.executor_uses() {
            if let Some(command) = &u.command {
                if role < Role::Admin {
                    return Err(Error::NotAllowed(format!(
                        "state `{}` declares `task.exec`; only an admin may apply a machine that runs commands",
                        u.state
                    )));
                }
                if !self.allows(command) {
                    return Err(Error::NotAllowed(format!(
                        "state `{}` runs `{command}`, which is not on the server's exec allowlist (setting `executors.exec.allow`{})",
                        u.state,
                        if self.exec_allow.is_empty() {
                            ", which is empty".to_string()
                        } else {
                            format!(": {}", self.exec_allow.join(", "))
                        }
                    )));
                }
            }
            for s in &u.secrets {
                if !self.secrets.0.contains_key(s) {
                    return Err(Error::Invalid(format!(
                        "state `{}` names secret `{s}`, which the server configuration does not define (setting `secrets.{s}`)",
                        u.state
                    )));
                }
            }
        }
        Ok(())
    }

    /// Replaces `{{secret.NAME}}` placeholders; an unknown name is an error. Returns the
    /// names filled in.
    pub fn fill(&self, text: &str, used: &mut Vec<String>) -> Result<String, String> {
        if !text.contains("{{secret.") {
            return Ok(text.to_string());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find("{{secret.") {
            out.push_str(&rest[..i]);
            let after = &rest[i + "{{secret.".len()..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            let value = self.secrets.0.get(name).ok_or_else(|| {
                format!("secret `{name}` is not defined in the server configuration (setting `secrets.{name}`)")
            })?;
            out.push_str(value);
            used.push(name.to_string());
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// [`Executors::fill`] in every string of a JSON value.
    pub fn fill_json(&self, v: &Value, used: &mut Vec<String>) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => Value::String(self.fill(s, used)?),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|v| self.fill_json(v, used))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), self.fill_json(v, used)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Masks the values of the secrets in `used` in text that comes back.
    pub fn mask(&self, text: &str, used: &[String]) -> String {
        let mut out = text.to_string();
        for name in used {
            if let Some(v) = self.secrets.0.get(name)
                && !v.is_empty()
            {
                out = out.replace(v.as_str(), &format!("{{{{secret.{name}}}}}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Executors {
        let mut c = Executors::default();
        c.secrets.0.insert("token".into(), "s3cr3t-value".into());
        c
    }

    #[test]
    fn fills_and_masks_secrets() {
        let c = cfg();
        let mut used = Vec::new();
        assert_eq!(
            c.fill("Bearer {{secret.token}}!", &mut used).unwrap(),
            "Bearer s3cr3t-value!"
        );
        assert_eq!(used, ["token"]);
        assert_eq!(
            c.mask("echo: s3cr3t-value", &used),
            "echo: {{secret.token}}"
        );
        let err = c.fill("{{secret.nope}}", &mut used).unwrap_err();
        assert!(err.contains("secret `nope`"), "{err}");
        assert_eq!(c.fill("no {{secret.", &mut used).unwrap(), "no {{secret.");
        assert_eq!(format!("{:?}", c.secrets), "[\"token\"]");
    }
}
