//! What units compile once and share: machines by namespace, name and version (versions
//! are immutable, so a compiled machine never goes stale) and each namespace's triggers
//! (reloaded after a change).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_core::Machine;
use cairn_store::MachineRecord;

use crate::Error;
use crate::armed;

type MachineKey = (String, String, u32);

/// The compiled machines and triggers, and the limits what runs inside units keeps to.
pub(crate) struct Machines {
    compiled: Mutex<HashMap<MachineKey, Arc<Machine>>>,
    /// Each namespace's triggers, compiled.
    pub(crate) triggers: armed::Cache,
    /// The engine's limits, for what runs inside units (steps, triggers).
    pub(crate) limits: cairn_core::Limits,
}

impl Machines {
    /// An empty cache; with `ttl` (other processes change the store too), triggers are
    /// reloaded once they are that old.
    pub(crate) fn new(ttl: Option<std::time::Duration>, limits: cairn_core::Limits) -> Machines {
        Machines {
            compiled: Mutex::default(),
            triggers: armed::Cache::new(ttl),
            limits,
        }
    }

    /// A machine compiled already.
    pub(crate) fn get(&self, key: &MachineKey) -> Option<Arc<Machine>> {
        self.compiled.lock().ok()?.get(key).cloned()
    }

    /// A stored machine version, compiled (once).
    pub(crate) fn load(&self, record: &MachineRecord) -> Result<Arc<Machine>, Error> {
        let key = (
            record.namespace.clone(),
            record.name.clone(),
            record.version,
        );
        if let Some(m) = self.get(&key) {
            return Ok(m);
        }
        if record.definition.is_null() {
            return Err(Error::Conflict(format!(
                "machine `{}` version {} was stored by an older Cairn and cannot be read back; \
                 `cairn repair` removes it once no instance runs on it",
                record.name, record.version
            )));
        }
        let m = Arc::new(Machine::from_json(&record.definition)?);
        if let Ok(mut map) = self.compiled.lock() {
            map.insert(key, Arc::clone(&m));
        }
        Ok(m)
    }
}
