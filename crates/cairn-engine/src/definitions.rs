//! What a namespace defines: machines (applied as versions, deleted when unused,
//! repaired) and triggers between them.

use std::sync::Arc;

use cairn_api::Trigger;
use cairn_core::{Format, Machine};
use cairn_store::{MachineRecord, NewLogEntry, Store, TriggerRecord};
use serde::Serialize;
use serde_json::json;

use crate::engine::Engine;
use crate::ids::{check_namespace, digest};
use crate::{Error, Role, armed};

/// The result of applying a definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The machine's name.
    pub machine: String,
    /// The version applied (or found, when the definition was unchanged).
    pub version: u32,
    /// False when the content equalled the latest version (nothing was written).
    pub created: bool,
    /// What validation found that does not refuse the definition.
    pub warnings: Vec<cairn_api::Finding>,
}

impl<S: Store> Engine<S> {
    /// Applies a definition: identical content to the latest version is a no-op, changed
    /// content becomes the next version. Instances stay on the version they started on.
    pub fn apply(
        &self,
        ns: &str,
        text: &str,
        format: Option<Format>,
        file: Option<&str>,
    ) -> Result<Applied, Error> {
        self.apply_as(ns, text, format, file, Role::Admin)
    }

    /// [`Engine::apply`] on behalf of `role`: a machine whose tasks run commands
    /// (`task.exec`) needs an admin and commands on the allowlist; every secret its
    /// executors name must be configured.
    pub fn apply_as(
        &self,
        ns: &str,
        text: &str,
        format: Option<Format>,
        file: Option<&str>,
        role: Role,
    ) -> Result<Applied, Error> {
        check_namespace(ns)?;
        let machine = Machine::load_with(text, format, file, &self.config().limits)?;
        self.config().executors.check(&machine, role)?;
        let definition = machine.to_json();
        let canonical = definition.to_string();
        let digest = digest(&canonical);
        let name = machine.name().to_string();
        let warnings: Vec<_> = machine.warnings.iter().map(crate::wire::finding).collect();
        let ns = ns.to_string();
        let now = self.now();
        self.write(move |tx| {
            let latest = tx.machine(&ns, &name, None)?;
            if let Some(l) = &latest
                && l.digest == digest
            {
                return Ok(Applied {
                    machine: name,
                    version: l.version,
                    created: false,
                    warnings,
                });
            }
            // Never a number a deleted version had.
            let version = tx.max_machine_version(&ns, &name)?.map_or(1, |v| v + 1);
            tx.insert_machine(&MachineRecord {
                namespace: ns.clone(),
                name: name.clone(),
                version,
                digest,
                definition,
                created_at: now,
            })?;
            tx.append_log(&NewLogEntry {
                namespace: ns,
                instance_id: String::new(),
                kind: "machine".into(),
                version: version as u64,
                data: json!({"machine": name}),
                created_at: now,
            })?;
            Ok(Applied {
                machine: name,
                version,
                created: true,
                warnings,
            })
        })
    }

    /// The latest version of every machine in the namespace.
    pub fn machines(&self, ns: &str) -> Result<Vec<MachineRecord>, Error> {
        Ok(self.store().machines(ns)?)
    }

    /// Deletes a machine version no instance runs on (in any status): it is no longer
    /// listed or startable, and its number is never given again. Refused (conflict) while
    /// an instance uses it.
    pub fn delete_machine(&self, ns: &str, name: &str, version: u32) -> Result<(), Error> {
        let (ns, name, now) = (ns.to_string(), name.to_string(), self.now());
        self.write(move |tx| {
            if tx.machine(&ns, &name, Some(version))?.is_none() {
                return Err(Error::NotFound(format!(
                    "machine `{name}` has no version {version} in namespace `{ns}`"
                )));
            }
            let users = tx.machine_in_use(&ns, &name, version)?;
            if users > 0 {
                return Err(Error::Conflict(format!(
                    "machine `{name}` version {version} runs {users} instance{}; delete or migrate {} first",
                    if users == 1 { "" } else { "s" },
                    if users == 1 { "it" } else { "them" }
                )));
            }
            tx.delete_machine(&ns, &name, version, now)?;
            tx.append_log(&NewLogEntry {
                namespace: ns,
                instance_id: String::new(),
                kind: "machine_deleted".into(),
                version: version as u64,
                data: json!({"machine": name, "version": version}),
                created_at: now,
            })?;
            Ok(())
        })
    }

    /// Finds stored machine versions that cannot be read back (stored by an older Cairn
    /// before definitions had a depth limit) and, unless `dry_run`, deletes those no
    /// instance runs on. The ones still in use are reported with how many use them.
    pub fn repair(&self, dry_run: bool) -> Result<cairn_api::Repair, Error> {
        let mut report = cairn_api::Repair::default();
        for m in self.store().unreadable_machines()? {
            let users = {
                let (ns, name, v) = (m.namespace.clone(), m.name.clone(), m.version);
                self.write(move |tx| Ok(tx.machine_in_use(&ns, &name, v)?))?
            };
            let entry = cairn_api::Unreadable {
                namespace: m.namespace.clone(),
                machine: m.name.clone(),
                version: m.version,
                instances: users,
            };
            if users == 0 && !dry_run {
                self.delete_machine(&m.namespace, &m.name, m.version)?;
                report.deleted.push(entry);
            } else if users == 0 {
                report.deletable.push(entry);
            } else {
                report.in_use.push(entry);
            }
        }
        Ok(report)
    }

    /// A machine version (the latest when `None`), compiled.
    pub fn machine(
        &self,
        ns: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<(MachineRecord, Arc<Machine>), Error> {
        let record = self.store().machine(ns, name, version)?.ok_or_else(|| {
            Error::NotFound(match version {
                Some(v) => format!("machine `{name}` has no version {v} in namespace `{ns}`"),
                None => format!("no machine `{name}` in namespace `{ns}`"),
            })
        })?;
        let m = self.compiled().load(&record)?;
        Ok((record, m))
    }

    /// Stores a trigger after checking it (names, one source condition, one action, CEL
    /// that compiles, no reserved event).
    pub fn add_trigger(&self, ns: &str, trigger: Trigger) -> Result<Trigger, Error> {
        check_namespace(ns)?;
        let mut def = armed::compile(trigger, Some(&self.config().limits))?.def;
        let now = self.now();
        def.created_at = Some(now);
        let record = TriggerRecord {
            namespace: ns.to_string(),
            name: def.name.clone(),
            machine: def.machine.clone(),
            definition: serde_json::to_value(&def).unwrap_or_default(),
            created_at: now,
        };
        let machines = self.machine_cache();
        let (ns2, name) = (ns.to_string(), def.name.clone());
        let written = self.write(move |tx| {
            tx.insert_trigger(&record).map_err(|e| match e {
                cairn_store::Error::Conflict(_) => {
                    Error::Conflict(format!("trigger `{name}` exists; remove it first"))
                }
                other => Error::Store(other),
            })?;
            // Later units of the same commit see the trigger too.
            machines.triggers.forget(&ns2);
            Ok(())
        });
        // Committed or rolled back, the cache reloads from what the store holds.
        self.machine_cache().triggers.forget(ns);
        written?;
        Ok(def)
    }

    /// The namespace's triggers, by name.
    pub fn triggers(&self, ns: &str) -> Result<Vec<Trigger>, Error> {
        Ok(self
            .store()
            .triggers(ns)?
            .into_iter()
            .filter_map(|r| serde_json::from_value(r.definition).ok())
            .collect())
    }

    /// Removes a trigger.
    pub fn remove_trigger(&self, ns: &str, name: &str) -> Result<(), Error> {
        let (ns2, name2) = (ns.to_string(), name.to_string());
        let machines = self.machine_cache();
        let existed = self.write(move |tx| {
            let existed = tx.delete_trigger(&ns2, &name2)?;
            machines.triggers.forget(&ns2);
            Ok(existed)
        });
        self.machine_cache().triggers.forget(ns);
        let existed = existed?;
        if !existed {
            return Err(Error::NotFound(format!(
                "no trigger `{name}` in namespace `{ns}`"
            )));
        }
        Ok(())
    }
}
