//! The PostgreSQL unit's side of [`cairn_store::TokensTx`].

use super::*;

impl cairn_store::TokensTx for PgTx<'_> {
    fn insert_token(&mut self, t: &TokenRecord) -> Result<(), Error> {
        sql::insert_token(&mut self.db(), t)
    }
    fn revoke_token(&mut self, id: &str, at: DateTime<Utc>) -> Result<bool, Error> {
        sql::revoke_token(&mut self.db(), id, at)
    }
}
