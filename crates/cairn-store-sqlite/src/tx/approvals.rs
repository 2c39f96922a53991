//! The SQLite writer's side of [`cairn_store::ApprovalsTx`].

use super::*;

impl cairn_store::ApprovalsTx for SqlTx<'_> {
    fn insert_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        lc::insert_approval(self.conn, a)
    }
    fn approval(&mut self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        lc::approval(self.conn, id)
    }
    fn update_approval(&mut self, a: &ApprovalRecord) -> Result<(), Error> {
        lc::update_approval(self.conn, a)
    }
    fn pending_approvals(&mut self, ns: &str, id: &str) -> Result<Vec<ApprovalRecord>, Error> {
        lc::pending_approvals(self.conn, ns, id)
    }
}
