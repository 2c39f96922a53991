//! The store the settings choose (`cairn_store_any::AnyStore`: SQLite in the data
//! directory by default, PostgreSQL when `database` names one) and an engine on it
//! (`cairn_runtime::open`, timed by the database's clock on PostgreSQL).

use cairn_engine::Engine;
pub use cairn_store_any::AnyStore;

use crate::config::Settings;

/// Opens the store the settings name and an engine on it.
pub fn engine(
    settings: &Settings,
    config: cairn_engine::Config,
) -> Result<Engine<AnyStore>, cairn_engine::Error> {
    let sqlite = cairn_store_any::SqliteOptions {
        wal_limit: settings.sqlite.wal_limit,
        ..Default::default()
    };
    cairn_runtime::open(&settings.data, settings.database.as_deref(), sqlite, config)
}
