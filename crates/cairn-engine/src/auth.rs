//! Who acts: a token's [`Role`], the [`Principal`] the server resolves a bearer token to,
//! and the [`Actor`] a change is recorded as. Tokens themselves are `tokens.rs`'s.

use serde::Serialize;

use crate::Error;

/// What a token may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything of its namespaces.
    Viewer,
    /// Also claim, heartbeat, complete and fail tasks.
    Worker,
    /// Also start, send, decide approvals, pause, resume, cancel, checkpoint, fork.
    Operator,
    /// Also apply machines, delete instances, back up, tick, manage tokens.
    Admin,
}

impl Role {
    /// The role a name stands for (`viewer`, `worker`, `operator`, `admin`).
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "worker" => Role::Worker,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Worker => "worker",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Who made a change, as history records it: `name` is the actor (a token's subject when
/// the server checks tokens), `token` the id of the token it was made with, and
/// `on_behalf_of` whom the caller said it acted for (recorded beside the actor, never
/// instead of it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    /// Who acted: a token's subject, a worker's or a person's name, or an engine name (`timer`, `cairn`).
    pub name: String,
    /// The id of the token the change was made with, when the server checks tokens.
    pub token: Option<String>,
    /// Whom the caller said it acted for; recorded beside `name`, never instead of it.
    pub on_behalf_of: Option<String>,
}

impl From<&str> for Actor {
    fn from(name: &str) -> Actor {
        Actor {
            name: name.to_string(),
            ..Actor::default()
        }
    }
}

impl From<String> for Actor {
    fn from(name: String) -> Actor {
        Actor {
            name,
            ..Actor::default()
        }
    }
}

impl From<&String> for Actor {
    fn from(name: &String) -> Actor {
        Actor::from(name.as_str())
    }
}

/// Who is asking: a token's subject, role and namespaces, or (auth off) anyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject; `anonymous` without auth.
    pub subject: String,
    /// The token's id; `None` without auth.
    pub token: Option<String>,
    /// What it may do.
    pub role: Role,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
}

impl Principal {
    /// Everything: what a server without auth grants, and what the embedded CLI is.
    pub fn unrestricted() -> Principal {
        Principal {
            subject: "anonymous".into(),
            token: None,
            role: Role::Admin,
            namespaces: None,
        }
    }

    /// Whether the principal may act in `namespace` (`*` allows every one).
    pub fn allows(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.iter().any(|x| x == namespace))
    }

    /// Whether it may use every namespace (`*`): what global powers (tokens beyond one's
    /// own scope, backup, restore) need.
    pub fn is_global(&self) -> bool {
        self.namespaces.is_none()
    }

    /// Whether every namespace of `scope` (`*` for all) is one of this principal's.
    pub fn covers(&self, scope: &[String]) -> bool {
        match &self.namespaces {
            None => true,
            Some(_) if scope.iter().any(|n| n == "*") => false,
            Some(_) => scope.iter().all(|n| self.allows(n)),
        }
    }

    /// Who a change this principal makes is recorded as. With a token, the actor is its
    /// subject and the token's id goes beside it; what the client claims (`claimed`, a
    /// body's `actor`, or `on_behalf_of`) is kept as `on_behalf_of`, never as the actor.
    /// Without auth, the client's `claimed` actor stands, unless it is one of Cairn's own
    /// (`timer`, `trigger:...`), which no client may pass itself off as.
    pub fn actor(&self, claimed: &str, on_behalf_of: Option<&str>) -> Result<Actor, Error> {
        let on_behalf_of = on_behalf_of.filter(|s| !s.is_empty()).map(str::to_string);
        for (what, v) in [
            ("actor", Some(claimed)),
            ("on_behalf_of", on_behalf_of.as_deref()),
        ] {
            if let Some(v) = v
                && (v.len() > 200 || v.chars().any(char::is_control))
            {
                return Err(Error::Invalid(format!(
                    "`{what}` is at most 200 characters, without control characters"
                )));
            }
        }
        Ok(match &self.token {
            Some(id) => Actor {
                name: self.subject.clone(),
                token: Some(id.clone()),
                on_behalf_of: on_behalf_of.or_else(|| {
                    (!claimed.is_empty() && claimed != self.subject).then(|| claimed.to_string())
                }),
            },
            None => {
                if !claimed.is_empty() {
                    check_subject(claimed).map_err(|e| match e {
                        Error::Invalid(m) => Error::Invalid(m.replacen("token name", "actor", 1)),
                        other => other,
                    })?;
                }
                Actor {
                    name: claimed.to_string(),
                    token: None,
                    on_behalf_of,
                }
            }
        })
    }
}

/// Subjects and prefixes the engine uses for its own changes: no token may take them.
const RESERVED_SUBJECTS: &[&str] = &["cairn", "timer", "anonymous"];
const RESERVED_PREFIXES: &[&str] = &[
    "cairn:",
    "trigger:",
    "instance:",
    "schedule:",
    "token:",
    "child:",
];

/// Checks a token's name, which becomes its subject.
pub fn check_subject(name: &str) -> Result<(), Error> {
    if name.len() > 128 || name.chars().any(char::is_control) || name.trim() != name {
        return Err(Error::Invalid(format!(
            "token name `{}`: 1-128 characters, no control characters or surrounding spaces",
            name.escape_debug()
        )));
    }
    if RESERVED_SUBJECTS.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(Error::Invalid(format!(
            "token name `{name}` is reserved: `cairn`, `timer`, `anonymous` and names starting with {} are Cairn's own actors",
            RESERVED_PREFIXES.join(", ")
        )));
    }
    Ok(())
}
