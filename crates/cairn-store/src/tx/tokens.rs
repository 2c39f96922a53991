//! [`TokensTx`]: aPI tokens.

use crate::*;

/// API tokens. Part of [`Tx`], whose contract holds for every method.
pub trait TokensTx {
    /// Records a token.
    fn insert_token(&mut self, token: &TokenRecord) -> Result<(), Error>;
    /// Marks a token revoked; whether it existed.
    fn revoke_token(&mut self, id: &str, at: chrono::DateTime<chrono::Utc>) -> Result<bool, Error>;
}
