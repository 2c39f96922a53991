//! API tokens: created with a role and the namespaces they may use, shown once, kept only
//! as a SHA-256 hash, revocable. The server resolves a bearer token to a [`Principal`].

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
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "worker" => Role::Worker,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Worker => "worker",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Who is asking: a token's role and namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
}

impl Principal {
    /// Everything: what a server without auth grants.
    pub fn unrestricted() -> Principal {
        Principal {
            name: "anonymous".into(),
            role: Role::Admin,
            namespaces: None,
        }
    }

    pub fn allows(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.iter().any(|x| x == namespace))
    }
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl<S: Store> Engine<S> {
    /// Creates a token; returns its record and the secret, which is shown only now.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        namespaces: Vec<String>,
    ) -> Result<(TokenRecord, String), Error> {
        if namespaces.is_empty() {
            return Err(Error::Invalid(
                "a token needs at least one namespace (or `*` for all)".into(),
            ));
        }
        let secret = format!(
            "cairn_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let record = TokenRecord {
            // Random, not time-ordered: a v7 prefix is a timestamp, and two tokens made
            // within one millisecond would share it.
            id: uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
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

    pub fn revoke_token(&self, id: &str) -> Result<(), Error> {
        let (id, now) = (id.to_string(), self.now());
        let found = self.write(move |tx| Ok(tx.revoke_token(&id, now)?))?;
        if found {
            Ok(())
        } else {
            Err(Error::NotFound("no such token".into()))
        }
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        Ok(self.store().tokens()?)
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
            name: t.name,
            role,
            namespaces,
        }))
    }
}
