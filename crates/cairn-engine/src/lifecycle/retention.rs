//! Deletion and retention: an instance with everything of it and its tree, finished
//! instances by age in bounded units, history compaction, log trimming, and vacuum.

use cairn_store::{CheckpointRecord, HistoryKind, Store};
use serde_json::json;

use crate::Error;
use crate::engine::Engine;
use crate::unit::{self, Unit};

/// The most log entries one unit of log retention removes.
pub const LOG_TRIM_STEP: usize = 5_000;

/// How old history and finished instances are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove finished instances last updated longer ago than this.
    pub finished_after: Option<chrono::Duration>,
    /// Fold all but this many of an instance's newest history records into a base record.
    pub max_history: Option<usize>,
}

impl<S: Store> Engine<S> {
    /// Deletes an instance and everything recorded of it.
    /// Deletes an instance with everything recorded of it, and its children (and theirs)
    /// with it, in one unit of work; each gets an `instance_deleted` log entry. What it
    /// sent to others stays and is delivered.
    pub fn delete(&self, ns: &str, id: &str) -> Result<(), Error> {
        let (ns, id) = (ns.to_string(), id.to_string());
        let now = self.now();
        self.write(move |tx| {
            if delete_tree(tx, &ns, &id, now)? {
                Ok(())
            } else {
                Err(Error::no_instance(&ns, &id))
            }
        })
    }

    /// Finished instances last updated longer ago than `age`, oldest first.
    pub fn finished_before(&self, ns: &str, age: chrono::Duration) -> Result<Vec<String>, Error> {
        let cutoff = self.cutoff(age, "a retention age")?;
        Ok(self.store().finished_before(ns, cutoff, usize::MAX >> 1)?)
    }

    /// Now less `age`, when that is a time.
    fn cutoff(
        &self,
        age: chrono::Duration,
        what: &str,
    ) -> Result<chrono::DateTime<chrono::Utc>, Error> {
        (age >= chrono::Duration::zero())
            .then(|| self.now().checked_sub_signed(age))
            .flatten()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{what} is 0 to about 262,000 years; {} ms is not",
                    age.num_milliseconds()
                ))
            })
    }

    /// Folds all but the newest `keep` history records of an instance into a base record
    /// (and a checkpoint named `compacted@<seq>`), so `verify` still replays from there.
    /// Returns how many records were removed.
    pub fn compact(&self, ns: &str, id: &str, keep: usize) -> Result<u64, Error> {
        if keep == 0 {
            return Err(Error::Invalid(
                "history compaction keeps at least one record".into(),
            ));
        }
        let (ns, id) = (ns.to_string(), id.to_string());
        let now = self.now();
        self.write(move |tx| {
            let inst = crate::unit::load_instance(tx, &ns, &id)?;
            let first_kept = inst.history_seq.saturating_sub(keep as u64 - 1).max(1);
            let Some(mut base) = tx.history_at(&ns, &id, first_kept)? else {
                return Ok(0);
            };
            if base.kind == HistoryKind::Base || base.kind == HistoryKind::Start && first_kept == 1
            {
                return Ok(0);
            }
            let removed = tx.delete_history_before(&ns, &id, first_kept)?;
            if removed == 0 && base.kind.is_base() {
                return Ok(0);
            }
            base.kind = HistoryKind::Base;
            tx.replace_history(&base)?;
            let name = format!("compacted@{first_kept}");
            if tx.checkpoint(&ns, &id, &name)?.is_none() {
                tx.insert_checkpoint(&CheckpointRecord {
                    namespace: ns.clone(),
                    instance_id: id.clone(),
                    name,
                    seq: base.seq,
                    version: base.version,
                    configuration: base.to_configuration.clone(),
                    context: base.context.clone(),
                    status: base.status,
                    created_at: now,
                })?;
            }
            unit::log(
                tx,
                &inst,
                "compacted",
                json!({"removed": removed, "base_seq": first_kept}),
                now,
            )?;
            Ok(removed)
        })
    }

    /// The namespaces that hold instances, from the figures the units keep (a read of a
    /// few rows, never a list of instances): where retention has work to look for.
    pub fn namespaces(&self) -> Result<Vec<String>, Error> {
        let mut out: Vec<String> = self
            .store()
            .figures(None)?
            .into_iter()
            .filter(|f| f.kind == "instances" && f.value > 0)
            .map(|f| f.namespace)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Applies a retention policy to a namespace: removes old finished instances and
    /// compacts long histories. Returns (instances removed, history records removed).
    pub fn enforce_retention(&self, ns: &str, policy: &Retention) -> Result<(u64, u64), Error> {
        let mut removed = 0;
        if let Some(age) = policy.finished_after {
            // A page of the oldest at a time, deleted RETENTION_STEP to a unit: retention
            // keeps up with a writer that finishes thousands of instances a second, and
            // no unit holds the writer longer than a group commit.
            let cutoff = self.cutoff(age, "a retention age")?;
            loop {
                let page = self.store().finished_before(ns, cutoff, RETENTION_PAGE)?;
                let last = page.len() < RETENTION_PAGE;
                for chunk in page.chunks(RETENTION_STEP) {
                    let (ns, ids, now) = (ns.to_string(), chunk.to_vec(), self.now());
                    removed += self.write(move |tx| {
                        let mut n = 0;
                        for id in &ids {
                            // Gone already, with its parent: nothing to do.
                            if delete_tree(tx, &ns, id, now)? {
                                n += 1;
                            }
                        }
                        Ok(n)
                    })?;
                }
                if last {
                    break;
                }
            }
        }
        let mut folded = 0;
        if let Some(keep) = policy.max_history {
            for (_, id) in self.instance_ids(Some(ns))? {
                let inst = self.get(ns, &id)?;
                if inst.history_seq as usize > keep {
                    folded += self.compact(ns, &id, keep)?;
                }
            }
        }
        Ok((removed, folded))
    }

    /// Log retention: removes log entries older than `older_than` and those beyond the
    /// newest `keep`, oldest first, in units of at most [`LOG_TRIM_STEP`] entries (so no
    /// unit holds the writer longer than a group commit), and moves the log's horizon.
    /// An event stream resuming from below the horizon is told so (`reset`). Returns how
    /// many entries were removed.
    pub fn trim_log(
        &self,
        older_than: Option<chrono::Duration>,
        keep: Option<u64>,
    ) -> Result<u64, Error> {
        let before = older_than
            .map(|age| self.cutoff(age, "a log retention age"))
            .transpose()?;
        if before.is_none() && keep.is_none() {
            return Ok(0);
        }
        let mut removed = 0;
        loop {
            let n = self.write(move |tx| Ok(tx.trim_log(before, keep, LOG_TRIM_STEP)?))?;
            removed += n;
            if n < LOG_TRIM_STEP as u64 {
                return Ok(removed);
            }
        }
    }

    /// Gives the space deletions freed back, in bounded steps that never hold the writer
    /// up longer than a unit of work (see `Store::vacuum`).
    pub fn vacuum(&self) -> Result<cairn_api::Vacuum, Error> {
        let started = std::time::Instant::now();
        let v = self.store().vacuum()?;
        Ok(cairn_api::Vacuum {
            bytes_before: v.before.bytes,
            bytes_after: v.after.bytes,
            free_bytes_before: v.before.free_bytes,
            free_bytes_after: v.after.free_bytes,
            steps: v.steps,
            longest_step_ms: v.longest_step_us as f64 / 1000.0,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// Finished instances retention deletes in one unit.
pub const RETENTION_STEP: usize = 64;
/// Finished instances retention lists at a time.
const RETENTION_PAGE: usize = 4096;

/// Deletes an instance and the tree it spawned (children first), logging
/// `instance_deleted` for each, inside the unit; false when there is no such instance.
fn delete_tree(
    tx: &mut Unit<'_>,
    ns: &str,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, Error> {
    let Some(root) = tx.instance(ns, id)? else {
        return Ok(false);
    };
    // The whole tree, parents before children; deleted children first.
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let links = tx.children(ns, &tree[i].id)?;
        for link in links {
            if let Some(child) = tx.instance(ns, &link.child_id)?
                && !tree.iter().any(|t| t.id == child.id)
            {
                tree.push(child);
            }
        }
        i += 1;
    }
    for inst in tree.iter().rev() {
        tx.delete_instance(ns, &inst.id)?;
        unit::log(
            tx,
            inst,
            "instance_deleted",
            json!({"machine": inst.machine, "parent": inst.parent}),
            now,
        )?;
    }
    Ok(true)
}
