//! What is recorded, read out: an instance's export, and the namespace's statistics
//! from maintained figures.

use std::collections::HashMap;

use cairn_store::Store;

use crate::Error;
use crate::engine::Engine;

pub use cairn_api::Stats;

impl<S: Store> Engine<S> {
    /// Everything recorded of one instance, as wire types.
    pub fn export(&self, ns: &str, id: &str) -> Result<cairn_api::Export, Error> {
        use crate::wire;
        let inst = self.get(ns, id)?;
        let mut usage = cairn_api::Usage::default();
        let mut tasks = Vec::new();
        for t in self.store().tasks(ns, None, None, Some(id))? {
            let attempts: Vec<cairn_api::Attempt> = self
                .store()
                .attempts(&t.id)?
                .iter()
                .map(wire::attempt)
                .collect();
            for a in &attempts {
                usage.attempts += 1;
                usage.tokens += a.tokens.unwrap_or(0);
                usage.cost += a.cost.unwrap_or(0.0);
            }
            tasks.push(cairn_api::TaskWithAttempts {
                task: wire::task(&t),
                attempts,
            });
        }
        Ok(cairn_api::Export {
            instance: wire::instance(&inst),
            history: self.history(ns, id)?.iter().map(wire::transition).collect(),
            checkpoints: self
                .store()
                .checkpoints(ns, id)?
                .iter()
                .map(wire::checkpoint)
                .collect(),
            approvals: self
                .store()
                .approvals(ns, None, Some(id))?
                .iter()
                .map(wire::approval)
                .collect(),
            timers: self
                .store()
                .timers(ns, id)?
                .iter()
                .map(wire::timer)
                .collect(),
            tasks,
            usage,
        })
    }

    /// What the instance waits for now: pending approvals, timers, open tasks with their
    /// attempts, children still running, and the events a pause holds back.
    pub fn waiting(&self, ns: &str, id: &str) -> Result<cairn_api::Waiting, Error> {
        use crate::wire;
        self.get(ns, id)?;
        let store = self.store();
        let mut tasks = Vec::new();
        for t in store.tasks(ns, None, None, Some(id))? {
            if !matches!(
                t.status,
                cairn_store::TaskStatus::Pending | cairn_store::TaskStatus::Leased
            ) {
                continue;
            }
            tasks.push(cairn_api::TaskWithAttempts {
                task: wire::task(&t),
                attempts: store.attempts(&t.id)?.iter().map(wire::attempt).collect(),
            });
        }
        let mut timers = store.timers(ns, id)?;
        timers.sort_by_key(|t| t.due_at);
        let mut children_by_status = std::collections::BTreeMap::new();
        let mut children = Vec::new();
        let mut after = None;
        // Every child is counted, a page at a time; the unfinished are listed (100 at most).
        loop {
            let page = store.instances(&cairn_store::InstanceFilter {
                namespace: ns.to_string(),
                parent: Some(id.to_string()),
                after: after.clone(),
                limit: 1000,
                ..Default::default()
            })?;
            for c in &page.items {
                *children_by_status
                    .entry(c.status.as_str().to_string())
                    .or_insert(0u64) += 1;
                if !c.status.is_finished() && children.len() < 100 {
                    children.push(cairn_api::WaitingChild {
                        id: c.id.clone(),
                        machine: c.machine.clone(),
                        status: c.status.as_str().to_string(),
                        configuration: c.configuration.clone(),
                    });
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(cairn_api::Waiting {
            approvals: store
                .approvals(ns, Some(cairn_store::ApprovalStatus::Pending), Some(id))?
                .iter()
                .map(wire::approval)
                .collect(),
            timers: timers.iter().map(wire::timer).collect(),
            tasks,
            children_by_status,
            children,
            queued: store.inbox(ns, id)?.into_iter().map(|e| e.event).collect(),
        })
    }

    /// Instances by machine and status, transitions, and mean time spent in each state.
    pub fn stats(&self, ns: &str) -> Result<Stats, Error> {
        // Maintained by the units that change what they count: a read of a few rows.
        let mut stats = Stats::default();
        // (machine, state) -> (total ms, visits)
        let mut time: HashMap<(String, String), (i64, i64)> = HashMap::new();
        for f in self.store().figures(Some(ns))? {
            let n = u64::try_from(f.value).unwrap_or(0);
            match f.kind.as_str() {
                "instances" if n > 0 => {
                    stats
                        .instances
                        .entry(f.name)
                        .or_default()
                        .insert(f.detail, n);
                }
                "transitions" => stats.transitions = n,
                "dwell_ms" => time.entry((f.name, f.detail)).or_default().0 = f.value,
                "dwell_visits" => time.entry((f.name, f.detail)).or_default().1 = f.value,
                _ => {}
            }
        }
        for ((machine, state), (total, n)) in time {
            if n > 0 {
                stats
                    .mean_time_in_state_ms
                    .entry(machine)
                    .or_default()
                    .insert(state, (total as f64 / n as f64 * 10.0).round() / 10.0);
            }
        }
        Ok(stats)
    }
}
