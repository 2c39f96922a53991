//! The SQLite writer's side of [`cairn_store::TokensTx`].

use super::*;

impl cairn_store::TokensTx for SqlTx<'_> {
    fn insert_token(&mut self, t: &cairn_store::TokenRecord) -> Result<(), Error> {
        crate::tasks::insert_token(self.conn, t)
    }
    fn revoke_token(&mut self, id: &str, at: DateTime<Utc>) -> Result<bool, Error> {
        crate::tasks::revoke_token(self.conn, id, at)
    }
}
