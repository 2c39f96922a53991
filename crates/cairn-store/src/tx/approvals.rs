//! [`ApprovalsTx`]: approvals.

use crate::*;

/// Approvals. Part of [`Tx`], whose contract holds for every method.
pub trait ApprovalsTx {
    /// Records a pending approval.
    fn insert_approval(&mut self, approval: &ApprovalRecord) -> Result<(), Error>;
    /// One approval by id.
    fn approval(&mut self, id: &str) -> Result<Option<ApprovalRecord>, Error>;
    /// Replaces an approval (its status and decisions).
    fn update_approval(&mut self, approval: &ApprovalRecord) -> Result<(), Error>;
    /// The instance's pending approvals, oldest first.
    fn pending_approvals(
        &mut self,
        namespace: &str,
        instance_id: &str,
    ) -> Result<Vec<ApprovalRecord>, Error>;
}
