//! SQL for every record, written once for units of work (on a `Transaction`) and for
//! reads (on a pooled `Client`): each function takes a [`Db`], a connection with its cache
//! of prepared statements. One file per aggregate, as the `Tx` implementations in
//! `src/tx/` (definitions, instances, history, timers, approvals, tasks, tokens, the
//! outbox); this file holds what they share.

use std::collections::HashMap;

use cairn_core::Status;
use cairn_store::Error;
use tokio_postgres::types::{FromSql, Json, ToSql};
use tokio_postgres::{Row, Statement};

use crate::conn::{Expect, PgClient};

/// Statements this process has sent to PostgreSQL: queries, writes, transaction control
/// and savepoints (several may share a round trip: `conn::ROUND_TRIPS`).
/// `cairn_store_statements_total` in the metrics.
pub(crate) static STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one statement sent.
pub(crate) fn sent() {
    STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Prepared statements of one connection, by SQL text.
pub(crate) type Stmts = HashMap<String, Statement>;

/// What can run SQL: a pooled connection, inside a unit or not.
pub(crate) trait GenericClient {
    fn pg(&mut self) -> &mut PgClient;
}

impl GenericClient for PgClient {
    fn pg(&mut self) -> &mut PgClient {
        self
    }
}

/// A connection and its prepared statements.
pub(crate) struct Db<'a, C: GenericClient> {
    pub c: &'a mut C,
    pub stmts: &'a mut Stmts,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Db<'_, C> {
    fn stmt(&mut self, sql: &str) -> Result<Statement, Error> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.c.pg().prepare(sql)?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub fn query(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<Row>, Error> {
        let s = self.stmt(sql)?;
        sent();
        if sql.starts_with("SELECT") {
            self.c.pg().read(&s, p)
        } else {
            self.c.pg().query(&s, p)
        }
    }

    pub fn opt(&mut self, sql: &str, p: Params<'_>) -> Result<Option<Row>, Error> {
        Ok(self.query(sql, p)?.into_iter().next())
    }

    pub fn exec(&mut self, sql: &str, p: Params<'_>) -> Result<u64, Error> {
        let s = self.stmt(sql)?;
        sent();
        self.c.pg().execute(&s, p)
    }

    /// A write sent with the unit's next round trip (see `conn`): in a unit only, where a
    /// read or the commit follows. Its errors come from that statement, as `expect` says.
    pub fn later(&mut self, sql: &str, p: Params<'_>, expect: Expect) -> Result<(), Error> {
        let s = self.stmt(sql)?;
        sent();
        self.c.pg().later(&s, p, expect)
    }
}

pub(crate) fn get<'a, T: FromSql<'a>>(r: &'a Row, col: &str) -> Result<T, Error> {
    r.try_get(col)
        .map_err(|e| Error::Corrupt(format!("column `{col}`: {e}")))
}

fn json_of<T: serde::de::DeserializeOwned>(r: &Row, col: &str) -> Result<T, Error> {
    get::<Json<T>>(r, col).map(|j| j.0)
}

fn status(s: &str) -> Result<Status, Error> {
    Status::parse(s).ok_or_else(|| Error::Corrupt(format!("bad status `{s}`")))
}

fn rows<T>(rs: Vec<Row>, f: fn(&Row) -> Result<T, Error>) -> Result<Vec<T>, Error> {
    rs.iter().map(f).collect()
}

/// Turns a unique violation into a conflict naming the record.
fn unique<T>(r: Result<T, Error>, what: impl FnOnce() -> String) -> Result<T, Error> {
    match r {
        Err(Error::Conflict(_)) => Err(Error::Conflict(what())),
        other => other,
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

mod approvals;
mod definitions;
mod history;
mod instances;
mod outbox;
mod tasks;
mod timers;
mod tokens;

pub(crate) use approvals::*;
pub(crate) use definitions::*;
pub(crate) use history::*;
pub(crate) use instances::*;
pub(crate) use outbox::*;
pub(crate) use tasks::*;
pub(crate) use timers::*;
pub(crate) use tokens::*;
