//! SQL of tokens.

use cairn_store::{Error, TokenRecord};
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::*;

pub(crate) fn token_row(r: &Row) -> Result<TokenRecord, Error> {
    Ok(TokenRecord {
        id: get(r, "id")?,
        name: get(r, "name")?,
        hash: get(r, "hash")?,
        role: get(r, "role")?,
        namespaces: json_of(r, "namespaces")?,
        created_at: get(r, "created_at")?,
        revoked_at: get(r, "revoked_at")?,
        subject: get(r, "subject")?,
    })
}

pub fn insert_token<C: GenericClient>(db: &mut Db<C>, t: &TokenRecord) -> Result<(), Error> {
    let r = db.exec(
        "INSERT INTO tokens (id, name, hash, role, namespaces, created_at, revoked_at, subject) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&t.id, &t.name, &t.hash, &t.role, &Json(&t.namespaces), &t.created_at, &t.revoked_at, &t.subject],
    );
    unique(r, || format!("token `{}` exists", t.id)).map(|_| ())
}

pub fn revoke_token<C: GenericClient>(
    db: &mut Db<C>,
    id: &str,
    at: DateTime<Utc>,
) -> Result<bool, Error> {
    Ok(db.exec(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        &[&id, &at],
    )? > 0)
}

pub fn token_by_hash<C: GenericClient>(
    db: &mut Db<C>,
    hash: &str,
) -> Result<Option<TokenRecord>, Error> {
    db.opt(
        "SELECT id, name, hash, role, namespaces, created_at, revoked_at, subject FROM tokens WHERE hash = $1",
        &[&hash],
    )?
    .as_ref()
    .map(token_row)
    .transpose()
}

pub fn tokens<C: GenericClient>(db: &mut Db<C>) -> Result<Vec<TokenRecord>, Error> {
    rows(
        db.query(
            "SELECT id, name, hash, role, namespaces, created_at, revoked_at, subject FROM tokens ORDER BY created_at, id",
            &[],
        )?,
        token_row,
    )
}
