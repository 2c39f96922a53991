//! The PostgreSQL unit's side of [`cairn_store::ApprovalsTx`].

use super::*;

impl cairn_store::ApprovalsTx for PgTx<'_> {
    fn insert_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        sql::insert_approval(&mut self.db(), a)
    }
    fn approval(&mut self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        sql::approval(&mut self.db(), id)
    }
    fn update_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        sql::update_approval(&mut self.db(), a)
    }
    fn pending_approvals(&mut self, ns: &str, id: &str) -> Result<Vec<ApprovalRecord>, Error> {
        sql::approvals(
            &mut self.db(),
            ns,
            Some(cairn_store::ApprovalStatus::Pending),
            Some(id),
        )
    }
}
