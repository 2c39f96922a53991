//! SQL of approvals.

use cairn_store::{ApprovalRecord, ApprovalStatus, Error};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::*;

pub(crate) const APPROVAL_COLS: &str = "id, namespace, instance_id, state, prompt, approvers, quorum, status, decisions, created_at, decided_at, decided_by, reason";

pub(crate) fn approval_row(r: &Row) -> Result<ApprovalRecord, Error> {
    let st: &str = get(r, "status")?;
    Ok(ApprovalRecord {
        id: get(r, "id")?,
        namespace: get(r, "namespace")?,
        instance_id: get(r, "instance_id")?,
        state: get(r, "state")?,
        prompt: get(r, "prompt")?,
        approvers: json_of(r, "approvers")?,
        quorum: get::<i32>(r, "quorum")? as u32,
        status: ApprovalStatus::parse(st)
            .ok_or_else(|| Error::Corrupt(format!("bad approval status `{st}`")))?,
        decisions: json_of(r, "decisions")?,
        created_at: get(r, "created_at")?,
        decided_at: get(r, "decided_at")?,
        decided_by: get(r, "decided_by")?,
        reason: get(r, "reason")?,
    })
}

pub fn insert_approval<C: GenericClient>(db: &mut Db<C>, a: &ApprovalRecord) -> Result<(), Error> {
    let r = db.exec(
        &format!("INSERT INTO approvals ({APPROVAL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"),
        &[
            &a.id,
            &a.namespace,
            &a.instance_id,
            &a.state,
            &a.prompt,
            &Json(&a.approvers),
            &(a.quorum as i32),
            &a.status.as_str(),
            &Json(&a.decisions),
            &a.created_at,
            &a.decided_at,
            &a.decided_by,
            &a.reason,
        ],
    );
    unique(r, || format!("approval `{}` exists", a.id)).map(|_| ())
}

pub fn update_approval<C: GenericClient>(db: &mut Db<C>, a: &ApprovalRecord) -> Result<(), Error> {
    let n = db.exec(
        "UPDATE approvals SET status = $2, decisions = $3, decided_at = $4, decided_by = $5, reason = $6 WHERE id = $1",
        &[&a.id, &a.status.as_str(), &Json(&a.decisions), &a.decided_at, &a.decided_by, &a.reason],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::NotFound(format!("approval `{}`", a.id)))
    }
}

pub fn approval<C: GenericClient>(
    db: &mut Db<C>,
    id: &str,
) -> Result<Option<ApprovalRecord>, Error> {
    db.opt(
        &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(approval_row)
    .transpose()
}

pub fn approvals<C: GenericClient>(
    db: &mut Db<C>,
    ns: &str,
    st: Option<ApprovalStatus>,
    id: Option<&str>,
) -> Result<Vec<ApprovalRecord>, Error> {
    rows(
        db.query(
            &format!("SELECT {APPROVAL_COLS} FROM approvals WHERE namespace = $1 AND ($2::text IS NULL OR status = $2) \
             AND ($3::text IS NULL OR instance_id = $3) ORDER BY created_at, id"),
            &[&ns, &st.map(|s| s.as_str()), &id],
        )?,
        approval_row,
    )
}
