//! Verifying instances: replaying each one's history through the step function must
//! reproduce every recorded version and the stored instance.

use cairn_api::Verified;
use cairn_core::{Env, Event, Snapshot, Status};
use cairn_store::{HistoryKind, HistoryRecord, InstanceRecord, Store};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::Error;
use crate::engine::Engine;
use crate::unit::instance_env;

impl<S: Store> Engine<S> {
    /// Verifies one instance, or every instance of the namespace when `id` is `None`,
    /// as the API reports it.
    pub fn verify_report(
        &self,
        ns: &str,
        id: Option<&str>,
    ) -> Result<cairn_api::VerifyReport, Error> {
        let ids = match id {
            Some(id) => vec![id.to_string()],
            None => self
                .instance_ids(Some(ns))?
                .into_iter()
                .map(|(_, id)| id)
                .collect(),
        };
        let results = ids
            .iter()
            .map(|id| self.verify(ns, id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(cairn_api::VerifyReport::new(results))
    }

    /// Replays an instance's history through the step function and checks that it
    /// reproduces every recorded version and the stored instance.
    pub fn verify(&self, ns: &str, id: &str) -> Result<Verified, Error> {
        let inst = self.get(ns, id)?;
        let history = self.history(ns, id)?;
        let problem = self.replay_problem(&inst, &history)?;
        Ok(Verified {
            namespace: ns.to_string(),
            id: id.to_string(),
            versions: history.len() as u64,
            ok: problem.is_none(),
            problem,
        })
    }

    fn replay_problem(
        &self,
        inst: &InstanceRecord,
        history: &[HistoryRecord],
    ) -> Result<Option<String>, Error> {
        let (_, machine) =
            self.machine(&inst.namespace, &inst.machine, Some(inst.machine_version))?;
        // Replay is never refused by a limit lowered since: what was applied, replays.
        let env_at = |t: DateTime<Utc>| Env {
            now: t,
            instance: instance_env(inst),
            records: json!({}),
            limits: cairn_core::Limits::CEILING,
        };
        let mismatch = |h: &HistoryRecord, s: &Snapshot| -> Option<String> {
            if h.to_configuration != s.configuration
                || h.context != s.context
                || h.status != s.status
            {
                Some(format!(
                    "seq {} (version {}): history records {:?} / {} / {} but replay gives {:?} / {} / {}",
                    h.seq,
                    h.version,
                    h.to_configuration,
                    h.context,
                    h.status.as_str(),
                    s.configuration,
                    s.context,
                    s.status.as_str()
                ))
            } else {
                None
            }
        };
        let mut snap: Option<Snapshot> = None;
        let mut version = 0;
        let first_seq = history.first().map_or(1, |h| h.seq);
        for (i, h) in history.iter().enumerate() {
            let expected = first_seq + i as u64;
            if h.seq != expected || (i == 0 && h.seq != 1 && h.kind != HistoryKind::Base) {
                return Ok(Some(format!(
                    "history has seq {} where {expected} was expected",
                    h.seq
                )));
            }
            let next = match (h.kind, &snap) {
                // A base (a fork's first record, or what compaction folded older history
                // into) is taken as given: replay starts from it.
                (HistoryKind::Base, _) => {
                    version = h.version;
                    Snapshot {
                        configuration: h.to_configuration.clone(),
                        context: h.context.clone(),
                        status: h.status,
                    }
                }
                (HistoryKind::Start, None) => {
                    match cairn_core::guarded(|| {
                        cairn_core::start(&machine, &h.payload, &env_at(h.created_at))
                    }) {
                        Ok(o) => o.snapshot,
                        Err(e) => {
                            return Ok(Some(format!("seq 1: replaying the start is refused: {e}")));
                        }
                    }
                }
                (HistoryKind::Start, Some(_)) | (_, None) => {
                    return Ok(Some(format!(
                        "seq {}: a `{}` record where the history {}",
                        h.seq,
                        h.kind.as_str(),
                        if snap.is_none() {
                            "should start"
                        } else {
                            "has started already"
                        }
                    )));
                }
                (HistoryKind::Event, Some(s)) => {
                    let ev = Event {
                        name: h.event.clone(),
                        payload: h.payload.clone(),
                        actor: h.actor.clone(),
                        reason: h.reason.clone(),
                        to: h.addressed_to.clone(),
                    };
                    // A paused instance applies its queued events on resume, as running.
                    let running = Snapshot {
                        status: Status::Running,
                        ..s.clone()
                    };
                    match cairn_core::guarded(|| {
                        cairn_core::step(&machine, &running, &ev, &env_at(h.created_at))
                    }) {
                        Ok(o) => o.snapshot,
                        Err(e) => {
                            return Ok(Some(format!(
                                "seq {}: replaying `{}` is refused: {e}",
                                h.seq, h.event
                            )));
                        }
                    }
                }
                (HistoryKind::Pause, Some(s)) => Snapshot {
                    status: Status::Paused,
                    ..s.clone()
                },
                (HistoryKind::Resume, Some(s)) => Snapshot {
                    status: Status::Running,
                    ..s.clone()
                },
                (HistoryKind::Cancel, Some(s)) => Snapshot {
                    status: Status::Cancelled,
                    ..s.clone()
                },
                (HistoryKind::Fail, Some(s)) => Snapshot {
                    status: Status::Failed,
                    ..s.clone()
                },
                (HistoryKind::Attempt, Some(s)) => s.clone(),
            };
            if h.kind.is_transition() {
                version += 1;
            }
            if h.version != version {
                return Ok(Some(format!(
                    "seq {}: records version {} where {version} was expected",
                    h.seq, h.version
                )));
            }
            if let Some(p) = mismatch(h, &next) {
                return Ok(Some(p));
            }
            snap = Some(next);
        }
        let Some(snap) = snap else {
            return Ok(Some("the instance has no history".into()));
        };
        let last_seq = history.last().map_or(0, |h| h.seq);
        if version != inst.version || last_seq != inst.history_seq {
            return Ok(Some(format!(
                "the instance is at version {} (seq {}) but its history ends at version {version} (seq {last_seq})",
                inst.version, inst.history_seq
            )));
        }
        if snap.configuration != inst.configuration
            || snap.context != inst.context
            || snap.status != inst.status
        {
            return Ok(Some(format!(
                "the stored instance {:?} / {} / {} differs from its replayed history {:?} / {} / {}",
                inst.configuration,
                inst.context,
                inst.status.as_str(),
                snap.configuration,
                snap.context,
                snap.status.as_str()
            )));
        }
        Ok(None)
    }
}
