//! The store the settings choose (`cairn_store_any::AnyStore`: SQLite in the data
//! directory by default, PostgreSQL when `database` names one) and an engine on it
//! (`cairn_runtime::open`, timed by the database's clock on PostgreSQL), and the server's
//! context on it (for `cairn serve` and the embedded client alike).

use std::sync::Arc;

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

/// The server's context on `engine`: with the backend's backup (SQLite: written beside
/// the data, then streamed to the client and removed; PostgreSQL has its own tools and
/// `/v1/backup` answers "not supported") and its metrics. `cairn serve` and the embedded
/// client build it the same way.
pub fn server_context(
    engine: Engine<AnyStore>,
    server_settings: cairn_server::Settings,
    settings: &Settings,
) -> Arc<cairn_server::Ctx<AnyStore>> {
    let store = engine.store().clone();
    let backup = store.postgres().is_none().then(|| {
        let write =
            Arc::new(move |file: &std::path::Path| store.backup(file)) as cairn_server::BackupFn;
        (write, settings.data.clone())
    });
    let stats_store = engine.store().clone();
    let store_metrics: Arc<dyn Fn() -> String + Send + Sync> =
        Arc::new(move || stats_store.metrics());
    cairn_server::Ctx::with_hooks(engine, server_settings, backup, Some(store_metrics))
}
