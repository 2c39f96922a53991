//! The store the settings choose (`cairn_store_any::AnyStore`: SQLite in the data
//! directory by default, PostgreSQL when `database` names one) and an engine on it, timed
//! by the database's clock on PostgreSQL.

use std::sync::Arc;

use cairn_engine::{Clock, Engine};
pub use cairn_store_any::AnyStore;
use cairn_store_any::PgStore;
use chrono::{DateTime, Utc};

use crate::config::Settings;

/// The database's clock, so nodes with skewed clocks agree on what is due.
struct DbClock(PgStore);

impl Clock for DbClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// Opens the store the settings name and an engine on it.
pub fn engine(
    settings: &Settings,
    config: cairn_engine::Config,
) -> Result<Engine<AnyStore>, cairn_engine::Error> {
    let sqlite = cairn_store_any::SqliteOptions {
        wal_limit: settings.sqlite.wal_limit,
        ..Default::default()
    };
    let store = AnyStore::open_with(&settings.data, settings.database.as_deref(), sqlite)?;
    let clock: Arc<dyn Clock> = match store.postgres() {
        Some(pg) => Arc::new(DbClock(pg.clone())),
        None => Arc::new(cairn_engine::SystemClock),
    };
    let config = cairn_engine::Config {
        // Other nodes may share a PostgreSQL database.
        shared_store: store.postgres().is_some(),
        ..config
    };
    Ok(Engine::new(store, clock, config))
}
