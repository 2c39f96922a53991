//! API tokens: created with a subject, a role and the namespaces they may use, shown once,
//! kept only as a SHA-256 hash, revocable. The server resolves a bearer token to a
//! [`Principal`]; the principal decides who a change is recorded as ([`crate::Actor`]).
//!
//! A scoped admin administers its own namespaces only: it never mints a token wider or
//! stronger than itself, and never sees or revokes a token beyond its scope.

use cairn_store::{Store, TokenRecord};

use crate::engine::Engine;
use crate::ids::{check_namespace, digest};
use crate::{Error, Principal, Role, check_subject};

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
            .find(|n| n.as_str() != "*" && check_namespace(n).is_err())
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
            hash: digest(&secret),
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
        let Some(t) = self.store().token_by_hash(&digest(secret))? else {
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
