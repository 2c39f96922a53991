//! [`PgClient`]: a synchronous connection that pipelines.
//!
//! `tokio-postgres` driven by a single-threaded runtime of the connection's own, as the
//! `postgres` crate does, with one thing more: writes whose answer a unit does not need at
//! once ([`PgClient::later`]: the history record, log entries, the task's update) are
//! held and sent together with the unit's next statement that needs an answer (a read,
//! `COMMIT`), in one round trip. PostgreSQL runs them in order; each is still its own
//! statement with its own checks. A held write that fails makes the statement that
//! carried it fail with the held write's error (named as it would have been at once), so
//! the unit fails as it would have.
//!
//! Savepoints ride along the same way. One case needs care: when a held write of a kept
//! part fails in the same round trip as the next part's `SAVEPOINT`, that savepoint was
//! never made, and rolling back "to the part" would undo the kept part instead; so the
//! client is then broken for the rest of the unit (every call fails, the unit rolls back).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cairn_store::Error;
use futures_util::{SinkExt, Stream};
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{AsyncMessage, Notification, Row, Statement, ToStatement};

use crate::db_err;

type Conn = Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>>;
type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// A parameter already encoded for its statement's type.
#[derive(Debug)]
struct Encoded(Option<Bytes>);

impl ToSql for Encoded {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    tokio_postgres::types::to_sql_checked!();
}

/// What a held write must do, checked when its answer comes.
pub(crate) struct Expect {
    /// The error a unique violation becomes (none: the driver's, as `db_err` maps it).
    pub conflict: Option<String>,
    /// The error when it touches another number of rows than it must (it checks that
    /// itself, with `cairn_expect_rows`: see migration 9).
    pub miscount: Option<Error>,
}

impl Expect {
    /// Nothing but what the driver says.
    pub fn none() -> Expect {
        Expect {
            conflict: None,
            miscount: None,
        }
    }
}

/// The SQLSTATE `cairn_expect_rows` raises.
const MISCOUNT: &str = "CR001";

enum Held {
    /// A prepared statement and its encoded parameters.
    Write {
        stmt: Statement,
        params: Vec<Encoded>,
        expect: Expect,
    },
    /// A statement without parameters, sent as a simple query (`BEGIN`, `SAVEPOINT`).
    Simple(&'static str),
}

/// One connection, its runtime, its notifications and the writes it holds.
pub(crate) struct PgClient {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    conn: Conn,
    notes: VecDeque<Notification>,
    held: Vec<Held>,
    /// Whether a unit (a transaction begun by `begin_unit`) is open.
    unit: bool,
    /// The unit's open part, if any.
    part: Option<Part>,
    /// Why the unit on this connection can only roll back (see the module's text).
    broken: Option<Error>,
}

/// A part of a unit: where its held writes begin, and whether its savepoint was made.
/// The savepoint is made only when something of the part is sent: a part whose writes
/// are all still held is undone by dropping them.
struct Part {
    start: usize,
    saved: bool,
}

const SAVEPOINT: &str = "SAVEPOINT part";

/// Round trips this process has made to PostgreSQL.
pub(crate) static ROUND_TRIPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

fn closed() -> Error {
    Error::Database("the database connection closed".into())
}

impl PgClient {
    /// Connects as `config` says.
    pub fn connect(config: &tokio_postgres::Config) -> Result<PgClient, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Database(format!("a runtime for the connection: {e}")))?;
        let (client, mut connection) = rt
            .block_on(config.connect(tokio_postgres::NoTls))
            .map_err(db_err)?;
        let conn: Conn = Box::pin(futures_util::stream::poll_fn(move |cx| {
            connection.poll_message(cx)
        }));
        Ok(PgClient {
            rt,
            client,
            conn,
            notes: VecDeque::new(),
            held: Vec::new(),
            unit: false,
            part: None,
            broken: None,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Holds a write of the prepared `stmt` until the next round trip (see the module's
    /// text); its parameters are encoded now.
    pub fn later(
        &mut self,
        stmt: &Statement,
        params: Params<'_>,
        expect: Expect,
    ) -> Result<(), Error> {
        if stmt.params().len() != params.len() {
            return Err(Error::Database(format!(
                "a statement with {} parameters was given {}",
                stmt.params().len(),
                params.len()
            )));
        }
        let mut buf = BytesMut::new();
        let mut encoded = Vec::with_capacity(params.len());
        for (p, ty) in params.iter().zip(stmt.params()) {
            match p
                .to_sql_checked(ty, &mut buf)
                .map_err(|e| Error::Database(format!("encoding a parameter of type {ty}: {e}")))?
            {
                IsNull::Yes => encoded.push(Encoded(None)),
                IsNull::No => encoded.push(Encoded(Some(buf.split().freeze()))),
            }
        }
        self.held.push(Held::Write {
            stmt: stmt.clone(),
            params: encoded,
            expect,
        });
        Ok(())
    }

    /// Holds a statement without parameters (`BEGIN`, `SAVEPOINT part`) until the next
    /// round trip.
    pub fn later_simple(&mut self, sql: &'static str) {
        self.held.push(Held::Simple(sql));
    }

    /// Begins a unit: its `BEGIN` is held for its first round trip.
    pub fn begin_unit(&mut self) {
        self.unit = true;
        self.later_simple("BEGIN");
    }

    /// Commits the unit, with what it still holds; a unit that fails to commit is rolled
    /// back.
    pub fn commit_unit(&mut self) -> Result<(), Error> {
        let r = self.batch_execute("COMMIT");
        if r.is_err() {
            self.rollback_unit();
        }
        self.unit = false;
        r
    }

    pub fn in_unit(&self) -> bool {
        self.unit
    }

    /// Rolls the unit back (a unit whose `BEGIN` is still held never reached the server).
    pub fn rollback_unit(&mut self) {
        let unsent = matches!(self.held.first(), Some(Held::Simple("BEGIN")));
        self.held.clear();
        self.part = None;
        self.broken = None;
        self.unit = false;
        if !unsent {
            crate::sql::sent();
            let _ = self.batch_execute("ROLLBACK");
        }
    }

    /// Begins a part of the unit (see [`Part`]).
    pub fn begin_part(&mut self) {
        self.part = Some(Part {
            start: self.held.len(),
            saved: false,
        });
    }

    /// Ends the open part, keeping what it did.
    pub fn keep_part(&mut self) {
        self.part = None;
    }

    /// Ends the open part, undoing what it did: its held writes are dropped, and if its
    /// savepoint was made the server rolls back to it (with the next round trip).
    pub fn undo_part(&mut self) {
        match self.part.take() {
            Some(Part { saved: true, .. }) => {
                self.held.clear();
                crate::sql::sent();
                self.held.push(Held::Simple("ROLLBACK TO SAVEPOINT part"));
            }
            Some(Part {
                start,
                saved: false,
            }) => self.held.truncate(start),
            None => {}
        }
    }

    pub fn prepare(&mut self, sql: &str) -> Result<Statement, Error> {
        self.with_held(false, |c| c.prepare(sql))
    }

    /// A statement that may write (and returns rows).
    pub fn query<S: ?Sized + ToStatement + Sync>(
        &mut self,
        stmt: &S,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Error> {
        self.with_held(true, |c| c.query(stmt, params))
    }

    /// A `SELECT` (it may lock rows, but writes nothing a part would have to undo).
    pub fn read<S: ?Sized + ToStatement + Sync>(
        &mut self,
        stmt: &S,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Error> {
        self.with_held(false, |c| c.query(stmt, params))
    }

    pub fn query_one<S: ?Sized + ToStatement + Sync>(
        &mut self,
        stmt: &S,
        params: Params<'_>,
    ) -> Result<Row, Error> {
        self.with_held(true, |c| c.query_one(stmt, params))
    }

    pub fn execute<S: ?Sized + ToStatement + Sync>(
        &mut self,
        stmt: &S,
        params: Params<'_>,
    ) -> Result<u64, Error> {
        self.with_held(true, |c| c.execute(stmt, params))
    }

    pub fn batch_execute(&mut self, sql: &str) -> Result<(), Error> {
        self.with_held(true, |c| c.batch_execute(sql))
    }

    /// Sends the held writes and then `main`'s statement, in one round trip; `main`'s
    /// answer, or the first error in order (a held write's, named as it says).
    /// `writes`: whether `main` may write (then an open part needs its savepoint first).
    ///
    /// A statement that fails aborts PostgreSQL's transaction: only a rollback to a
    /// savepoint made before it recovers. So a failure is recoverable only inside a part
    /// whose savepoint was made before the failing statement (the caller then undoes the
    /// part); any other failure leaves the unit broken: every later call, and the commit,
    /// fails with it (a `COMMIT` of an aborted transaction would silently roll back).
    fn with_held<'s, T, F>(
        &'s mut self,
        writes: bool,
        main: impl FnOnce(&'s tokio_postgres::Client) -> F,
    ) -> Result<T, Error>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>> + 's,
    {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let mut saved_at = None;
        if let Some(p) = &mut self.part
            && !p.saved
            && (writes || self.held.len() > p.start)
        {
            crate::sql::sent();
            self.held.insert(p.start, Held::Simple(SAVEPOINT));
            p.saved = true;
            saved_at = Some(p.start);
        }
        ROUND_TRIPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let held = std::mem::take(&mut self.held);
        let count = held.len();
        let client = &self.client;
        let mut sent: Vec<(Boxed<'_>, Option<Result<u64, tokio_postgres::Error>>)> =
            Vec::with_capacity(held.len());
        for h in &held {
            let fut: Boxed<'_> = match h {
                Held::Write { stmt, params, .. } => Box::pin(async move {
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                    client.execute(stmt, &refs).await
                }),
                Held::Simple(sql) => {
                    Box::pin(async move { client.batch_execute(sql).await.map(|()| 0) })
                }
            };
            sent.push((fut, None));
        }
        let main = main(client);
        let mut main = std::pin::pin!(main);
        let mut out: Option<Result<T, tokio_postgres::Error>> = None;
        let conn = &mut self.conn;
        let notes = &mut self.notes;
        let mut after_close = 0;
        self.rt.block_on(std::future::poll_fn(|cx| {
            let closed = drive(conn, notes, cx);
            // In order: each held statement is written before the next one and `main`.
            let mut waiting = false;
            for (fut, done) in sent.iter_mut() {
                if done.is_none() {
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(r) => *done = Some(r),
                        Poll::Pending => waiting = true,
                    }
                }
            }
            if out.is_none()
                && let Poll::Ready(r) = main.as_mut().poll(cx)
            {
                out = Some(r);
            }
            if !waiting && out.is_some() {
                return Poll::Ready(true);
            }
            if closed {
                // What was waiting fails once the connection is gone; give it a poll.
                after_close += 1;
                if after_close > 2 {
                    return Poll::Ready(false);
                }
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }));
        let results: Vec<Option<Result<u64, tokio_postgres::Error>>> =
            sent.into_iter().map(|(_, r)| r).collect();
        // The first statement that failed, in order: a held write (named as it says), or
        // `main`.
        let mut failed: Option<(usize, Error)> = None;
        for (i, (h, r)) in held.into_iter().zip(results).enumerate() {
            let e = match (h, r) {
                (_, None) => closed(),
                (Held::Simple(_), Some(Err(e))) => db_err(e),
                (Held::Write { expect, .. }, Some(Err(e))) => {
                    let miscounted = e.code().is_some_and(|c| c.code() == MISCOUNT);
                    match (db_err(e), expect.conflict, expect.miscount) {
                        (_, _, Some(m)) if miscounted => m,
                        (Error::Conflict(_), Some(c), _) => Error::Conflict(c),
                        (e, _, _) => e,
                    }
                }
                (_, Some(Ok(_))) => continue,
            };
            failed = Some((i, e));
            break;
        }
        let out = match (failed, out) {
            (None, Some(Ok(v))) => return Ok(v),
            (Some(f), _) => f,
            (None, Some(Err(e))) => (count, db_err(e)),
            (None, None) => (count, closed()),
        };
        let (at, e) = out;
        let recoverable = match &self.part {
            Some(p) if p.saved => saved_at.is_none_or(|s| s < at),
            _ => false,
        };
        if !recoverable && self.unit {
            self.broken = Some(e.clone());
        }
        Err(e)
    }

    /// Starts `COPY ... FROM STDIN`; write the rows to the returned writer, then finish it.
    pub fn copy_in(&mut self, sql: &str) -> Result<CopyIn<'_>, Error> {
        let client = &self.client;
        // The sink borrows nothing from the client once made.
        let sink = until(
            &self.rt,
            &mut self.conn,
            &mut self.notes,
            client.copy_in::<_, Bytes>(sql),
        )?;
        Ok(CopyIn {
            c: self,
            sink: Box::pin(sink),
            buf: BytesMut::new(),
        })
    }

    /// Waits up to `timeout` for notifications; those that came.
    pub fn notifications(&mut self, timeout: Duration) -> Result<Vec<Notification>, Error> {
        if self.notes.is_empty() {
            let conn = &mut self.conn;
            let notes = &mut self.notes;
            let wait = async {
                std::future::poll_fn(|cx| {
                    if drive(conn, notes, cx) {
                        return Poll::Ready(Err(closed()));
                    }
                    if notes.is_empty() {
                        Poll::Pending
                    } else {
                        Poll::Ready(Ok(()))
                    }
                })
                .await
            };
            if let Ok(r) = self
                .rt
                .block_on(async { tokio::time::timeout(timeout, wait).await })
            {
                r?;
            }
        }
        Ok(self.notes.drain(..).collect())
    }
}

/// Runs `fut` to its end while driving the connection (its I/O and notifications).
fn until<T>(
    rt: &tokio::runtime::Runtime,
    conn: &mut Conn,
    notes: &mut VecDeque<Notification>,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    let mut fut = std::pin::pin!(fut);
    rt.block_on(std::future::poll_fn(|cx| {
        let closed = drive(conn, notes, cx);
        match fut.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r.map_err(db_err)),
            Poll::Pending if closed => Poll::Ready(Err(self::closed())),
            Poll::Pending => Poll::Pending,
        }
    }))
}

/// Rows going into a `COPY ... FROM STDIN`, sent in blocks.
pub(crate) struct CopyIn<'c> {
    c: &'c mut PgClient,
    sink: Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    buf: BytesMut,
}

impl CopyIn<'_> {
    /// Adds `data` to the copy.
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), Error> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 16 {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), Error> {
        let block = self.buf.split().freeze();
        let c = &mut *self.c;
        until(&c.rt, &mut c.conn, &mut c.notes, self.sink.send(block))
    }

    /// Ends the copy; the rows copied.
    pub fn finish(mut self) -> Result<u64, Error> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        let c = &mut *self.c;
        until(
            &c.rt,
            &mut c.conn,
            &mut c.notes,
            self.sink.as_mut().finish(),
        )
    }
}

/// Polls the connection: writes what was sent, reads answers, keeps notifications;
/// whether it has closed.
fn drive(conn: &mut Conn, notes: &mut VecDeque<Notification>, cx: &mut Context<'_>) -> bool {
    loop {
        match conn.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => notes.push_back(n),
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => return true,
            Poll::Pending => return false,
        }
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn values(c: &mut PgClient) -> Vec<i32> {
        c.query("SELECT v FROM t ORDER BY v", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The rule of `with_held`: a failure is undone with its part only when the part's
    /// savepoint was made before it; any other leaves the unit able only to roll back,
    /// so a later `COMMIT` (which PostgreSQL would turn into a silent rollback) fails.
    #[test]
    fn a_failure_no_savepoint_covers_breaks_the_unit() {
        let db = crate::testing::TestDb::create().unwrap();
        let config = tokio_postgres::Config::from_str(&db.url).unwrap();
        let mut c = PgClient::connect(&config).unwrap();
        c.batch_execute("CREATE TABLE t (v int)").unwrap();
        let insert = c.prepare("INSERT INTO t VALUES ($1)").unwrap();

        // A part that fails in a read before anything of it was sent: no savepoint.
        c.begin_unit();
        c.later(&insert, &[&1i32], Expect::none()).unwrap();
        c.begin_part();
        assert!(c.read("SELECT 1 / 0", &[]).is_err());
        c.undo_part();
        let later = c.read("SELECT 1", &[]);
        assert!(later.is_err(), "the unit is broken: {later:?}");
        assert!(c.commit_unit().is_err());
        assert!(!c.in_unit());
        assert_eq!(values(&mut c), Vec::<i32>::new());

        // A part whose writes were sent with the failing read made its savepoint first:
        // undoing the part undoes the failure, and the unit commits the rest.
        c.begin_unit();
        c.later(&insert, &[&2i32], Expect::none()).unwrap();
        c.begin_part();
        c.later(&insert, &[&3i32], Expect::none()).unwrap();
        assert!(c.read("SELECT 1 / 0", &[]).is_err());
        c.undo_part();
        c.begin_part();
        c.later(&insert, &[&4i32], Expect::none()).unwrap();
        c.keep_part();
        // A part whose writes were all still held is undone by dropping them.
        c.begin_part();
        c.later(&insert, &[&5i32], Expect::none()).unwrap();
        c.undo_part();
        c.commit_unit().unwrap();
        assert_eq!(values(&mut c), vec![2, 4]);

        // A unit that never sent anything rolls back without a round trip.
        let trips = ROUND_TRIPS.load(std::sync::atomic::Ordering::Relaxed);
        c.begin_unit();
        c.later(&insert, &[&6i32], Expect::none()).unwrap();
        c.rollback_unit();
        assert_eq!(
            ROUND_TRIPS.load(std::sync::atomic::Ordering::Relaxed),
            trips
        );
        assert_eq!(values(&mut c), vec![2, 4]);
    }
}
