//! Copying a whole store into another (`cairn migrate-store`), as a contract of the
//! store crates: a source exports each table's rows, a destination imports them all in
//! one transaction. The binary names no table; the list is [`TABLES`], here.

use crate::Error;

/// Every table of a store, parents before what refers to them: the order a copy loads
/// them in.
pub const TABLES: &[&str] = &[
    "machines",
    "instances",
    "instance_labels",
    "history",
    "idempotency",
    "log",
    "timers",
    "approvals",
    "checkpoints",
    "inbox",
    "tasks",
    "task_attempts",
    "tokens",
    "children",
    "outbox",
    "triggers",
    "schedules",
    "maps",
    "meta",
    "figures",
];

/// `name` as one of [`TABLES`]; any other name is not a table of a Cairn store.
pub fn table(name: &str) -> Result<&'static str, Error> {
    TABLES
        .iter()
        .find(|t| **t == name)
        .copied()
        .ok_or_else(|| Error::NotFound(format!("no table `{name}` in a Cairn store")))
}

/// A row as the backends exchange it: each column's value as text, `None` for NULL, in
/// the order of the columns named with it.
pub type Row = [Option<String>];

/// What [`Export::export`] passes each row to: the table's column names and the row.
pub type RowSink<'a> = dyn FnMut(&[String], &Row) -> Result<(), Error> + 'a;

/// A store whose tables can be read out whole.
///
/// # Contract
/// - `export` passes every row of a table of [`TABLES`] to `row`, with the table's column
///   names; values are text as the backend stores them (JSON as its text, times as
///   RFC 3339, booleans and numbers as their literals) and a destination casts them to
///   its column types. It returns how many rows it passed.
/// - `count` is the number of rows `export` would pass.
/// - Nothing writes to the store meanwhile (the caller holds it: on SQLite, the data
///   directory's lock).
pub trait Export {
    /// Passes every row of `table` to `row`.
    fn export(&self, table: &str, row: &mut RowSink<'_>) -> Result<u64, Error>;

    /// How many rows `table` holds.
    fn count(&self, table: &str) -> Result<u64, Error>;
}

/// A store that can take a whole copy of another.
///
/// # Contract
/// - `import` refuses (`Error::Conflict`, nothing written) unless every table of
///   [`TABLES`] is empty, then copies every table of `source` in one transaction: all of
///   it, or nothing. `progress` is called once per row copied.
/// - What the copy holds is what the source held: instances, history, log positions (so
///   event streams resume where they were), figures; the destination's own bookkeeping
///   (sequences, pending figure changes) is set to match.
/// - It returns the rows copied per table, in [`TABLES`] order.
pub trait Import {
    /// Copies `source` into this empty store.
    fn import(
        &self,
        source: &dyn Export,
        progress: &mut dyn FnMut(),
    ) -> Result<Vec<(&'static str, u64)>, Error>;
}
