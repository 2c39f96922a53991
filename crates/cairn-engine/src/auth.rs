//! API tokens: created with a subject, a role and the namespaces they may use, shown once,
//! kept only as a SHA-256 hash, revocable. The server resolves a bearer token to a
//! [`Principal`]; the principal decides who a change is recorded as ([`Actor`]).
//!
//! A scoped admin administers its own namespaces only: it never mints a token wider or
//! stronger than itself, and never sees or revokes a token beyond its scope.

use cairn_store::{Store, TokenRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Engine, Error};

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

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl<S: Store> Engine<S> {
    /// Creates a token; returns its record and the secret, which is shown only now. Its
    /// subject is `name`, or `token:<id>` when `name` is empty.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        namespaces: Vec<String>,
    ) -> Result<(TokenRecord, String), Error> {
        self.create_token_as(&Principal::unrestricted(), name, role, namespaces)
    }

    /// [`Engine::create_token`] by `by`: a token no stronger and no wider than `by`.
    pub fn create_token_as(
        &self,
        by: &Principal,
        name: &str,
        role: Role,
        namespaces: Vec<String>,
    ) -> Result<(TokenRecord, String), Error> {
        if namespaces.is_empty() {
            return Err(Error::Invalid(
                "a token needs at least one namespace (or `*` for all)".into(),
            ));
        }
        if let Some(bad) = namespaces
            .iter()
            .find(|n| n.as_str() != "*" && crate::engine::check_namespace(n).is_err())
        {
            return Err(Error::Invalid(format!(
                "`{bad}` is not a namespace: 1-100 letters, digits, `-`, `_` or `.`"
            )));
        }
        if !name.is_empty() {
            check_subject(name)?;
        }
        if role > by.role {
            return Err(Error::NotAllowed(format!(
                "a {} token may not create a {} token",
                by.role.as_str(),
                role.as_str()
            )));
        }
        if !by.covers(&namespaces) {
            return Err(Error::NotAllowed(format!(
                "this token may not create a token for {}: only for namespaces it has itself",
                namespaces.join(", ")
            )));
        }
        let secret = format!(
            "cairn_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        // Random, not time-ordered: a v7 prefix is a timestamp, and two tokens made within
        // one millisecond would share it.
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        let record = TokenRecord {
            subject: if name.is_empty() {
                format!("token:{id}")
            } else {
                name.to_string()
            },
            id,
            name: name.to_string(),
            hash: hash(&secret),
            role: role.as_str().to_string(),
            namespaces,
            created_at: self.now(),
            revoked_at: None,
        };
        let stored = record.clone();
        self.write(move |tx| Ok(tx.insert_token(&stored)?))?;
        Ok((record, secret))
    }

    /// Revokes a token: it authenticates nothing from now on (its record stays, marked).
    pub fn revoke_token(&self, id: &str) -> Result<(), Error> {
        self.revoke_token_as(&Principal::unrestricted(), id)
    }

    /// Revokes a token within `by`'s scope; one beyond it is not found.
    pub fn revoke_token_as(&self, by: &Principal, id: &str) -> Result<(), Error> {
        if !self.tokens_as(by)?.iter().any(|t| t.id == id) {
            return Err(Error::NotFound(format!("no token `{id}`")));
        }
        let (id, now) = (id.to_string(), self.now());
        self.write(move |tx| Ok(tx.revoke_token(&id, now)?))?;
        Ok(())
    }

    /// Every token (hashes and secrets are never returned).
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        Ok(self.store().tokens()?)
    }

    /// The tokens `by` may see: those whose every namespace is one of its own.
    pub fn tokens_as(&self, by: &Principal) -> Result<Vec<TokenRecord>, Error> {
        let mut all = self.tokens()?;
        all.retain(|t| by.covers(&t.namespaces));
        Ok(all)
    }

    /// The principal a bearer secret stands for; `None` when unknown or revoked.
    pub fn authenticate(&self, secret: &str) -> Result<Option<Principal>, Error> {
        let Some(t) = self.store().token_by_hash(&hash(secret))? else {
            return Ok(None);
        };
        if t.revoked_at.is_some() {
            return Ok(None);
        }
        let role = Role::parse(&t.role).ok_or_else(|| {
            Error::Store(cairn_store::Error::Corrupt(format!(
                "bad role `{}`",
                t.role
            )))
        })?;
        let namespaces = if t.namespaces.iter().any(|n| n == "*") {
            None
        } else {
            Some(t.namespaces)
        };
        Ok(Some(Principal {
            subject: t.subject,
            token: Some(t.id),
            role,
            namespaces,
        }))
    }
}
