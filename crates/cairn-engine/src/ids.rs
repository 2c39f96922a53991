//! Checks of the names clients choose (instance ids, namespaces), and the digests the
//! engine keeps of what it was given (an event's fingerprint for an idempotency key, a
//! definition's for "same content, same version").

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Error;

/// Identifies an event and payload for an idempotency key.
pub(crate) fn fingerprint(event: &str, payload: &Value) -> String {
    digest(&format!("{event}\u{0}{payload}"))
}

/// The SHA-256 of `text`, in hex.
pub(crate) fn digest(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// An instance id: 1-200 characters without spaces, `/` or control characters.
pub(crate) fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty()
        || id.len() > 200
        || id
            .chars()
            .any(|c| c.is_control() || c == '/' || c.is_whitespace())
    {
        return Err(Error::Invalid(format!(
            "instance id `{id}` must be 1-200 characters without spaces, `/` or control characters"
        )));
    }
    Ok(())
}

/// A namespace: 1-100 characters of letters, digits, `-`, `_` and `.`.
pub(crate) fn check_namespace(ns: &str) -> Result<(), Error> {
    if ns.is_empty()
        || ns.len() > 100
        || !ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::Invalid(format!(
            "namespace `{ns}` must be 1-100 characters of letters, digits, `-`, `_` and `.`"
        )));
    }
    Ok(())
}
