//! Opening an engine on a store: the embedded SQLite store of a data directory, or
//! PostgreSQL, timed by the database's clock so that nodes with skewed clocks agree on
//! what is due.

use std::path::Path;
use std::sync::Arc;

use cairn_engine::{Clock, Config, Engine, Error, SystemClock};
use cairn_store_any::{AnyStore, PgStore, SqliteOptions, SqliteStore};
use chrono::{DateTime, Utc};

/// The database's clock.
struct DbClock(PgStore);

impl Clock for DbClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// Opens the store named by `database` (a PostgreSQL URL), or else the SQLite store of
/// the data directory `data`, and an engine on it.
pub fn open(
    data: &Path,
    database: Option<&str>,
    sqlite: SqliteOptions,
    config: Config,
) -> Result<Engine<AnyStore>, Error> {
    let store = AnyStore::open_with(data, database, sqlite)?;
    let clock: Arc<dyn Clock> = match store.postgres() {
        Some(pg) => Arc::new(DbClock(pg.clone())),
        None => Arc::new(SystemClock),
    };
    let config = Config {
        // Other nodes may share a PostgreSQL database.
        shared_store: store.postgres().is_some(),
        ..config
    };
    Ok(Engine::new(store, clock, config))
}

/// Opens an engine on the embedded SQLite store of a data directory.
pub fn open_sqlite(
    dir: &Path,
    options: SqliteOptions,
    config: Config,
) -> Result<Engine<SqliteStore>, Error> {
    let store = SqliteStore::open(dir, options)?;
    Ok(Engine::new(store, Arc::new(SystemClock), config))
}
