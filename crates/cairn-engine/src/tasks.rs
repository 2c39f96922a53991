//! Tasks for workers: enqueued and cancelled with their states (see `unit`), claimed with a
//! lease, heartbeated, completed or failed, retried with exponential backoff and jitter,
//! reclaimed when a lease expires. Every attempt is recorded (worker, start, end, outcome,
//! duration, tokens, cost), in the task's attempts and in the instance's history.
//!
//! The outcome reaches the instance as `task.done` (payload: the output, plus `task`:
//! id, attempt, state, action) or `task.failed` (payload: `error`, `attempts`, `task`).
//! A completion that is late, stale (after a reclaim), repeated, or for a cancelled task
//! changes nothing and is refused with the reason, so the worker knows.

use std::time::Duration;

use cairn_core::Event;
use cairn_core::machine::RetryPolicy;
use cairn_store::{AttemptRecord, HistoryKind, InstanceRecord, Store, TaskRecord, TaskStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::machines::Machines;
use crate::unit::Unit;
use crate::{Actor, Error, unit};

/// The default lease when a task declares no timeout.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The shortest and longest lease a claim or heartbeat may ask for.
pub const LEASE_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(24 * 3600));

/// Refuses a lease outside [`LEASE_RANGE`] (never clamped or wrapped).
pub fn check_lease(lease: Duration) -> Result<(), Error> {
    let (min, max) = LEASE_RANGE;
    if lease < min || lease > max {
        return Err(Error::Invalid(format!(
            "a lease is {} to {} ms; asked for {} ms",
            min.as_millis(),
            max.as_millis(),
            lease.as_millis()
        )));
    }
    Ok(())
}

/// A task handed to a worker.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Claimed {
    /// The task's id.
    pub id: String,
    /// Its instance's namespace.
    pub namespace: String,
    /// Its instance.
    pub instance: String,
    /// The state that owns it.
    pub state: String,
    /// Its queue.
    pub queue: String,
    /// What to do (the state's `action`).
    pub action: String,
    /// Its input.
    pub input: Value,
    /// From 1; with the id, the idempotency key of the worker's own side effects.
    pub attempt: u32,
    /// How many attempts it may take.
    pub max_attempts: u32,
    /// When the lease ends unless renewed.
    pub lease_expires_at: DateTime<Utc>,
    /// The per-attempt timeout the state declares.
    #[serde(skip)]
    pub timeout_ms: Option<u64>,
}

impl Claimed {
    /// A claimed task as the API gives it.
    pub fn to_api(&self) -> cairn_api::Claimed {
        cairn_api::Claimed {
            id: self.id.clone(),
            namespace: self.namespace.clone(),
            instance: self.instance.clone(),
            state: self.state.clone(),
            queue: self.queue.clone(),
            action: self.action.clone(),
            input: self.input.clone(),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            lease_expires_at: self.lease_expires_at,
        }
    }
}

/// Token and cost figures a worker reports with an outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Tokens the attempt used, as the worker reported them.
    pub tokens: Option<i64>,
    /// What the attempt cost, as the worker reported it.
    pub cost: Option<f64>,
}

/// What became of a task after a completion or failure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskOutcome {
    /// The task after the outcome.
    pub task: TaskRecord,
    /// Whether the failure will be retried (the task is pending again).
    pub retrying: bool,
    /// An identical repeat of an outcome that had applied already: answered as applied,
    /// and nothing changed.
    pub repeated: bool,
}

fn policy(t: &TaskRecord) -> RetryPolicy {
    serde_json::from_value(t.retry.clone()).unwrap_or(RetryPolicy {
        max_attempts: 1,
        backoff: cairn_core::definition::Backoff::Exponential,
        initial_ms: 1000,
        max_ms: None,
        jitter: 0.0,
    })
}

/// The delay before attempt `attempt + 1`, with jitter from a hash of the task id and
/// attempt: spread, yet the same on every node and every replay.
pub fn backoff(p: &RetryPolicy, task_id: &str, attempt: u32) -> chrono::Duration {
    let base = match p.backoff {
        cairn_core::definition::Backoff::Fixed => p.initial_ms as f64,
        cairn_core::definition::Backoff::Exponential => {
            p.initial_ms as f64 * 2f64.powi(attempt.saturating_sub(1).min(30) as i32)
        }
    };
    let capped = p.max_ms.map_or(base, |m| base.min(m as f64));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in task_id.bytes().chain(attempt.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    chrono::Duration::milliseconds((capped * (1.0 - p.jitter.clamp(0.0, 1.0) * u)).round() as i64)
}

/// A lease detects a dead worker, so it is short and renewed by heartbeats; the task's
/// `timeout` caps the whole attempt. The lease is the shorter of the two.
fn lease_for(t: &TaskRecord, lease: Duration) -> chrono::Duration {
    let lease = chrono::Duration::milliseconds(lease.as_millis() as i64);
    match t.timeout_ms {
        Some(ms) => lease.min(chrono::Duration::milliseconds(ms as i64)),
        None => lease,
    }
}

fn task_meta(t: &TaskRecord) -> Value {
    json!({"id": t.id, "attempt": t.attempt, "state": t.state, "action": t.action})
}

/// Who reports an attempt's outcome: `by` (a token's subject, with the token beside it)
/// when given, else the worker that holds the lease. The worker's name stays on the
/// attempt either way.
fn reporter(t: &TaskRecord, by: Option<&Actor>) -> Actor {
    by.cloned()
        .unwrap_or_else(|| Actor::from(t.lease_owner.clone().unwrap_or_default()))
}

/// Ends the current attempt of `t` with `outcome` and records it in history. The
/// instance is saved unless `save` is false (the caller saves it later in the unit).
#[allow(clippy::too_many_arguments)]
fn end_attempt(
    tx: &mut Unit<'_>,
    inst: Option<&mut InstanceRecord>,
    t: &TaskRecord,
    outcome: &str,
    error: Option<&str>,
    usage: &Usage,
    by: &Actor,
    now: DateTime<Utc>,
    save: bool,
) -> Result<(), Error> {
    let worker = t.lease_owner.clone().unwrap_or_default();
    let started = t.updated_at;
    tx.attempt_ended(&t.namespace, &t.queue, outcome);
    tx.put_attempt(&AttemptRecord {
        task_id: t.id.clone(),
        attempt: t.attempt,
        namespace: t.namespace.clone(),
        instance_id: t.instance_id.clone(),
        worker: worker.clone(),
        started_at: started,
        ended_at: Some(now),
        outcome: Some(outcome.to_string()),
        error: error.map(str::to_string),
        tokens: usage.tokens,
        cost: usage.cost,
    })?;
    if let Some(inst) = inst {
        let record = json!({
            "task": t.id, "attempt": t.attempt, "action": t.action, "state": t.state, "worker": worker,
            "started_at": started, "ended_at": now, "outcome": outcome, "error": error,
            "duration_ms": (now - started).num_milliseconds(), "tokens": usage.tokens, "cost": usage.cost,
        });
        if save {
            unit::record_history(tx, inst, HistoryKind::Attempt, by, "", record.clone(), now)?;
        } else {
            unit::append_history(tx, inst, HistoryKind::Attempt, by, "", record.clone(), now)?;
        }
        unit::log(tx, inst, "task_attempt", record, now)?;
    }
    Ok(())
}

/// The most outcomes one [`Batch`] may report.
pub const MAX_OUTCOMES: usize = 1000;

/// The most tasks one claim may take.
pub const MAX_CLAIM: usize = 1000;

/// What a worker reports of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// The attempt succeeded with this output: `task.done` reaches the instance.
    Completed {
        /// The output, `task.done`'s payload.
        output: Value,
    },
    /// The attempt failed; retried by the task's policy when `retryable`, else (or when
    /// attempts run out) `task.failed` reaches the instance.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
        /// An object added to `task.failed`'s payload (an `exec` task's exit code...).
        details: Value,
    },
}

/// One attempt's outcome, as a worker reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The task.
    pub task: String,
    /// The attempt the worker was given.
    pub attempt: u32,
    /// What became of it.
    pub report: Report,
    /// What it used.
    pub usage: Usage,
}

impl Outcome {
    fn outcome(&self) -> &'static str {
        match self.report {
            Report::Completed { .. } => "completed",
            Report::Failed { .. } => "failed",
        }
    }
}

/// A claim: up to `batch` tasks of `queues` for `worker`, each leased for `lease` (or
/// the task's shorter timeout).
#[derive(Clone, Debug, PartialEq)]
pub struct NextClaim {
    /// The queues to take tasks from.
    pub queues: Vec<String>,
    /// The worker, recorded on each attempt.
    pub worker: String,
    /// How many tasks at most (1 to [`MAX_CLAIM`]).
    pub batch: usize,
    /// The lease of each attempt.
    pub lease: Duration,
}

/// Outcomes, and a claim of the next tasks, in one unit of work.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The outcomes, each applied (or refused) on its own.
    pub outcomes: Vec<Outcome>,
    /// Tasks to claim once the outcomes are applied, in the same unit: a task the outcomes
    /// enqueued can be among them.
    pub claim: Option<NextClaim>,
    /// Only tasks of these namespaces (a token's scope), when given: other tasks are
    /// unknown to the caller.
    pub namespaces: Option<Vec<String>>,
    /// Who reports (a token's subject), rather than the worker holding the lease.
    pub by: Option<Actor>,
}

/// What became of one outcome of a [`Batch`].
#[derive(Debug)]
pub struct OutcomeResult {
    /// The task it was for.
    pub task: String,
    /// The attempt it was for.
    pub attempt: u32,
    /// Applied (or an identical repeat of one that was), or refused with the reason.
    pub result: Result<TaskOutcome, Error>,
}

/// What a [`Batch`] did.
#[derive(Debug, Default)]
pub struct Reported {
    /// One per outcome, in the order given.
    pub outcomes: Vec<OutcomeResult>,
    /// The tasks claimed.
    pub claimed: Vec<Claimed>,
}

impl<S: Store> Engine<S> {
    /// Claims up to `batch` tasks of `queues` for `worker`, reclaiming expired leases
    /// first. Each claim starts a new attempt with a lease (the task's timeout, else
    /// `lease`).
    pub fn claim(
        &self,
        queues: &[String],
        worker: &str,
        batch: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        self.claim_in(queues, None, worker, batch, lease)
    }

    /// [`Engine::claim`], only tasks of `namespaces` when given (a token's scope).
    pub fn claim_in(
        &self,
        queues: &[String],
        namespaces: Option<Vec<String>>,
        worker: &str,
        batch: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        refuse_reserved(queues)?;
        self.claim_any(queues, namespaces, worker, batch, lease)
    }

    /// Claims from any queue, the built-in executors' reserved queues included (for
    /// the runtime that runs them; workers use [`Engine::claim`]).
    pub fn claim_reserved(
        &self,
        queues: &[String],
        worker: &str,
        batch: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        self.claim_any(queues, None, worker, batch, lease)
    }

    fn claim_any(
        &self,
        queues: &[String],
        namespaces: Option<Vec<String>>,
        worker: &str,
        batch: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, Error> {
        let claim = NextClaim {
            queues: queues.to_vec(),
            worker: worker.to_string(),
            batch,
            lease,
        };
        check_claim(&claim)?;
        // Nothing to claim or reclaim: answer from a read, not a write unit.
        if !self
            .store()
            .task_work(queues, namespaces.as_deref(), self.now())?
        {
            return Ok(Vec::new());
        }
        let now = self.now();
        let machines = self.machine_cache();
        let reclaim = self.reclaim_due(now);
        self.write(move |tx| {
            if reclaim {
                reclaim_in(tx, &machines, now)?;
            }
            claim_in_unit(tx, &claim, namespaces.as_deref(), now)
        })
    }

    /// Applies a batch in one unit of work: each outcome in a part of its own (a stale or
    /// refused outcome is undone alone and answered with its reason, the others apply),
    /// then the claim, which can take the tasks the outcomes just enqueued. An identical
    /// repeat of an outcome that already applied (a retry after a lost answer) is answered
    /// as applied, with `repeated`. Outcomes are applied in the order of their instances
    /// (namespace, id), whatever order they came in, so two batches never wait on each
    /// other's instance locks in a circle; the answer keeps the order given.
    ///
    /// Refused as a whole, before anything is written: more than [`MAX_OUTCOMES`]
    /// outcomes, or a malformed claim. The built-in executors' queues cannot be claimed.
    pub fn report(&self, batch: Batch) -> Result<Reported, Error> {
        if batch.outcomes.len() > MAX_OUTCOMES {
            return Err(Error::Invalid(format!(
                "a batch reports at most {MAX_OUTCOMES} outcomes; this one has {}",
                batch.outcomes.len()
            )));
        }
        if let Some(c) = &batch.claim {
            refuse_reserved(&c.queues)?;
        }
        self.report_any(batch)
    }

    fn report_any(&self, batch: Batch) -> Result<Reported, Error> {
        let Batch {
            outcomes,
            claim,
            namespaces,
            by,
        } = batch;
        if let Some(c) = &claim {
            check_claim(c)?;
        }
        if outcomes.is_empty() {
            let claimed = match claim {
                Some(c) => self.claim_any(&c.queues, namespaces, &c.worker, c.batch, c.lease)?,
                None => Vec::new(),
            };
            return Ok(Reported {
                outcomes: Vec::new(),
                claimed,
            });
        }
        let ids: Vec<(String, u32)> = outcomes
            .iter()
            .map(|o| (o.task.clone(), o.attempt))
            .collect();
        // Checked before the unit: an outcome too large is refused alone. The unit fills in
        // the rest.
        let mut results: Vec<Option<Result<TaskOutcome, Error>>> = outcomes
            .iter()
            .map(|o| self.check_outcome(o).err().map(Err))
            .collect();
        let now = self.now();
        let machines = self.machine_cache();
        let reclaim = claim.is_some() && self.reclaim_due(now);
        let (results, claimed) = self.write(move |tx| {
            // Each outcome's instance (one read for all), to apply them in a fixed order.
            let wanted: Vec<String> = outcomes
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_none())
                .map(|(o, _)| o.task.clone())
                .collect();
            let owners: std::collections::HashMap<String, (String, String)> = tx
                .task_instances(&wanted)?
                .into_iter()
                .map(|(id, ns, inst)| (id, (ns, inst)))
                .collect();
            let mut order = Vec::with_capacity(outcomes.len());
            for (i, o) in outcomes.iter().enumerate() {
                if results[i].is_some() {
                    continue;
                }
                match owners.get(&o.task) {
                    Some((ns, inst)) if namespaces.as_ref().is_none_or(|n| n.contains(ns)) => {
                        order.push((ns.clone(), inst.clone(), i));
                    }
                    _ => results[i] = Some(Err(no_task(&o.task))),
                }
            }
            order.sort();
            for (ns, instance, i) in order {
                let o = &outcomes[i];
                let r = tx.part(|tx| {
                    apply_outcome(tx, &machines, (&ns, &instance), o, by.as_ref(), now)
                })?;
                results[i] = Some(r);
            }
            let claimed = match &claim {
                Some(c) => {
                    // A reclaim that fails is left to the next claim; this batch goes on.
                    if reclaim {
                        let _ = tx.part(|tx| reclaim_in(tx, &machines, now))?;
                    }
                    claim_in_unit(tx, c, namespaces.as_deref(), now)?
                }
                None => Vec::new(),
            };
            Ok((results, claimed))
        })?;
        let outcomes = ids
            .into_iter()
            .zip(results)
            .map(|((task, attempt), r)| OutcomeResult {
                result: r.unwrap_or_else(|| Err(no_task(&task))),
                task,
                attempt,
            })
            .collect();
        Ok(Reported { outcomes, claimed })
    }

    fn check_outcome(&self, o: &Outcome) -> Result<(), Error> {
        match &o.report {
            Report::Completed { output } => self.check_size("the task output", output),
            Report::Failed { details, .. } => self.check_size("the failure details", details),
        }
    }

    /// Extends a lease; refused when the attempt is stale.
    pub fn heartbeat(&self, id: &str, attempt: u32, lease: Duration) -> Result<TaskRecord, Error> {
        check_lease(lease)?;
        let id = id.to_string();
        let now = self.now();
        self.write(move |tx| {
            let mut t = leased(tx, &id, attempt)?;
            // Renewed by the lease, but never past the attempt's timeout.
            let mut expires = now + chrono::Duration::milliseconds(lease.as_millis() as i64);
            if let Some(ms) = t.timeout_ms {
                expires = expires.min(t.updated_at + chrono::Duration::milliseconds(ms as i64));
            }
            t.lease_expires_at = Some(expires);
            tx.update_task(&t)?;
            Ok(t)
        })
    }

    /// Completes an attempt with its output; `task.done` reaches the instance.
    pub fn complete(
        &self,
        id: &str,
        attempt: u32,
        output: Value,
        usage: Usage,
    ) -> Result<TaskOutcome, Error> {
        self.complete_as(id, attempt, output, usage, None)
    }

    /// [`Engine::complete`], reported by `by` (a token's subject) rather than the worker.
    pub fn complete_as(
        &self,
        id: &str,
        attempt: u32,
        output: Value,
        usage: Usage,
        by: Option<Actor>,
    ) -> Result<TaskOutcome, Error> {
        self.one(
            Outcome {
                task: id.to_string(),
                attempt,
                report: Report::Completed { output },
                usage,
            },
            by,
        )
    }

    /// One outcome in a unit of its own, which a refusal rolls back whole.
    fn one(&self, o: Outcome, by: Option<Actor>) -> Result<TaskOutcome, Error> {
        self.check_outcome(&o)?;
        let now = self.now();
        let machines = self.machine_cache();
        self.write(move |tx| {
            let t = tx
                .task(&o.task)?
                .ok_or_else(|| Error::NotFound(format!("no task `{}`", o.task)))?;
            apply_outcome(
                tx,
                &machines,
                (&t.namespace, &t.instance_id),
                &o,
                by.as_ref(),
                now,
            )
        })
    }

    /// Fails an attempt. A retryable failure with attempts left is retried after the
    /// policy's backoff; otherwise `task.failed` reaches the instance.
    pub fn fail(
        &self,
        id: &str,
        attempt: u32,
        error: &str,
        retryable: bool,
        usage: Usage,
    ) -> Result<TaskOutcome, Error> {
        self.fail_with(id, attempt, error, retryable, usage, Value::Null)
    }

    /// [`Engine::fail`], reported by `by` (a token's subject) rather than the worker.
    pub fn fail_as(
        &self,
        id: &str,
        attempt: u32,
        error: &str,
        retryable: bool,
        usage: Usage,
        by: Option<Actor>,
    ) -> Result<TaskOutcome, Error> {
        self.one(
            failure(id, attempt, error, retryable, usage, Value::Null),
            by,
        )
    }

    /// [`Engine::fail`] with `details` (an object) added to `task.failed`'s payload when
    /// attempts run out, e.g. an `exec` task's exit code and output.
    pub fn fail_with(
        &self,
        id: &str,
        attempt: u32,
        error: &str,
        retryable: bool,
        usage: Usage,
        details: Value,
    ) -> Result<TaskOutcome, Error> {
        self.one(failure(id, attempt, error, retryable, usage, details), None)
    }

    /// Ends attempts whose lease expired, retrying or failing them like a retryable
    /// failure. Returns how many leases were reclaimed.
    pub fn reclaim_expired(&self) -> Result<usize, Error> {
        let now = self.now();
        let machines = self.machine_cache();
        self.write(move |tx| reclaim_in(tx, &machines, now))
    }

    /// Tasks of a namespace, filtered.
    pub fn tasks(
        &self,
        ns: &str,
        queue: Option<&str>,
        status: Option<TaskStatus>,
        instance: Option<&str>,
    ) -> Result<Vec<TaskRecord>, Error> {
        Ok(self.store().tasks(ns, queue, status, instance)?)
    }
}

fn no_task(id: &str) -> Error {
    Error::NotFound(format!("no task `{id}`"))
}

fn failure(
    id: &str,
    attempt: u32,
    error: &str,
    retryable: bool,
    usage: Usage,
    details: Value,
) -> Outcome {
    Outcome {
        task: id.to_string(),
        attempt,
        report: Report::Failed {
            error: error.to_string(),
            retryable,
            details,
        },
        usage,
    }
}

/// Workers cannot claim the built-in executors' queues.
fn refuse_reserved(queues: &[String]) -> Result<(), Error> {
    if let Some(q) = queues
        .iter()
        .find(|q| q.starts_with(cairn_core::machine::RESERVED_QUEUE_PREFIX))
    {
        return Err(Error::Invalid(format!(
            "queue `{q}` belongs to a built-in executor, which runs its tasks inside the server; workers cannot claim them"
        )));
    }
    Ok(())
}

fn check_claim(c: &NextClaim) -> Result<(), Error> {
    if c.queues.is_empty() {
        return Err(Error::Invalid("claim at least one queue".into()));
    }
    check_lease(c.lease)?;
    if c.worker.is_empty() || c.worker.len() > 200 {
        return Err(Error::Invalid("a worker name is 1-200 characters".into()));
    }
    if c.batch == 0 || c.batch > MAX_CLAIM {
        return Err(Error::Invalid(format!(
            "a claim takes 1 to {MAX_CLAIM} tasks; asked for {}",
            c.batch
        )));
    }
    Ok(())
}

/// Leases up to `c.batch` claimable tasks to `c.worker`, each a new attempt (recorded,
/// its lease running from `now`).
fn claim_in_unit(
    tx: &mut Unit<'_>,
    c: &NextClaim,
    namespaces: Option<&[String]>,
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>, Error> {
    let mut out = Vec::new();
    for mut t in tx.claimable_tasks(&c.queues, namespaces, now, c.batch)? {
        t.attempt += 1;
        t.status = TaskStatus::Leased;
        t.lease_owner = Some(c.worker.clone());
        let expires = now + lease_for(&t, c.lease);
        t.lease_expires_at = Some(expires);
        t.updated_at = now;
        tx.update_task(&t)?;
        tx.put_attempt(&AttemptRecord {
            task_id: t.id.clone(),
            attempt: t.attempt,
            namespace: t.namespace.clone(),
            instance_id: t.instance_id.clone(),
            worker: c.worker.clone(),
            started_at: now,
            ended_at: None,
            outcome: None,
            error: None,
            tokens: None,
            cost: None,
        })?;
        out.push(Claimed {
            max_attempts: policy(&t).max_attempts,
            lease_expires_at: expires,
            timeout_ms: t.timeout_ms,
            attempt: t.attempt,
            id: t.id,
            namespace: t.namespace,
            instance: t.instance_id,
            state: t.state,
            queue: t.queue,
            action: t.action,
            input: t.input,
        });
    }
    Ok(out)
}

/// Ends the attempts whose lease expired before `now` (up to 1000), each like a
/// retryable failure the engine reports.
fn reclaim_in(tx: &mut Unit<'_>, machines: &Machines, now: DateTime<Utc>) -> Result<usize, Error> {
    let expired = tx.expired_leases(now, 1000)?;
    let n = expired.len();
    for mut t in expired {
        let mut inst = tx.instance(&t.namespace, &t.instance_id)?;
        let error = format!("the lease of attempt {} expired", t.attempt);
        end_attempt(
            tx,
            inst.as_mut(),
            &t,
            "expired",
            Some(&error),
            &Usage::default(),
            &reporter(&t, None),
            now,
            true,
        )?;
        // Nobody reported this outcome: the engine's own event.
        after_failure(
            tx,
            machines,
            &mut t,
            inst.as_mut(),
            (&error, &Value::Null),
            true,
            &Actor::default(),
            now,
        )?;
    }
    Ok(n)
}

/// The task `id` if `attempt` is its current, leased attempt; else why not.
fn leased(tx: &mut Unit<'_>, id: &str, attempt: u32) -> Result<TaskRecord, Error> {
    let t = tx.task(id)?.ok_or_else(|| no_task(id))?;
    if t.status != TaskStatus::Leased || t.attempt != attempt {
        return Err(stale(&t, attempt));
    }
    Ok(t)
}

/// Why an outcome for `attempt` of `t` is refused, in the words of what happened to it.
fn stale(t: &TaskRecord, attempt: u32) -> Error {
    let why = if t.attempt > attempt {
        format!(
            "it timed out (its lease expired) and the task was handed out again, now at attempt {}",
            t.attempt
        )
    } else if t.status == TaskStatus::Cancelled {
        "the task was cancelled (its state was left, or the instance ended)".to_string()
    } else if t.attempt == attempt && matches!(t.status, TaskStatus::Completed | TaskStatus::Failed)
    {
        format!(
            "it was reported already, with another result: the task is {}",
            t.status.as_str()
        )
    } else {
        format!("the task is {} at attempt {}", t.status.as_str(), t.attempt)
    };
    Error::Conflict(format!(
        "task `{}` attempt {attempt} is stale: {why}; its result is discarded and nothing was changed",
        t.id
    ))
}

/// Whether `o` is exactly what was reported of its attempt already (a retry after a lost
/// answer): same outcome, error, usage and (completed) output.
fn repeats(tx: &mut Unit<'_>, t: &TaskRecord, o: &Outcome) -> Result<bool, Error> {
    if t.attempt < o.attempt {
        return Ok(false);
    }
    if let Report::Completed { output } = &o.report
        && (t.status != TaskStatus::Completed || t.output.as_ref() != Some(output))
    {
        return Ok(false);
    }
    let Some(a) = tx
        .attempts(&t.id)?
        .into_iter()
        .find(|a| a.attempt == o.attempt)
    else {
        return Ok(false);
    };
    let error = match &o.report {
        Report::Completed { .. } => None,
        Report::Failed { error, .. } => Some(error.as_str()),
    };
    Ok(a.outcome.as_deref() == Some(o.outcome())
        && a.error.as_deref() == error
        && a.tokens == o.usage.tokens
        && a.cost == o.usage.cost)
}

/// Applies one outcome: locks its instance (`key`: namespace and id, from a read of the
/// task), then checks the attempt under that lock, ends it, and delivers `task.done` or
/// `task.failed` (or schedules the retry).
fn apply_outcome(
    tx: &mut Unit<'_>,
    machines: &Machines,
    key: (&str, &str),
    o: &Outcome,
    by: Option<&Actor>,
    now: DateTime<Utc>,
) -> Result<TaskOutcome, Error> {
    let mut inst = tx.instance(key.0, key.1)?;
    // Read once under the lock: the current leased attempt, an identical repeat of what
    // was reported, or stale. The instance's open tasks are read (before any write), as
    // the step the outcome sets off cancels those of the states it leaves: it finds them
    // in the unit instead of reading them again after the outcome's writes.
    let mut open = tx.open_tasks(key.0, key.1)?;
    let mut t = match open.iter().position(|t| t.id == o.task) {
        Some(i) => open.remove(i),
        None => tx.task(&o.task)?.ok_or_else(|| no_task(&o.task))?,
    };
    if t.status != TaskStatus::Leased || t.attempt != o.attempt {
        if repeats(tx, &t, o)? {
            let retrying =
                matches!(o.report, Report::Failed { .. }) && t.status != TaskStatus::Failed;
            return Ok(TaskOutcome {
                task: t,
                retrying,
                repeated: true,
            });
        }
        return Err(stale(&t, o.attempt));
    }
    let by = reporter(&t, by);
    let attempt_seq = inst.as_ref().map_or(0, |i| i.history_seq + 1);
    // The attempt's record is appended without saving the instance: what the outcome sets
    // off (the transition, a failed instance) saves it, else it is saved at the end.
    let result = match &o.report {
        Report::Completed { output } => {
            end_attempt(
                tx,
                inst.as_mut(),
                &t,
                "completed",
                None,
                &o.usage,
                &by,
                now,
                false,
            )?;
            t.status = TaskStatus::Completed;
            t.output = Some(output.clone());
            t.lease_expires_at = None;
            t.updated_at = now;
            tx.update_task(&t)?;
            // The others stay open as they were, in the store's order.
            tx.know_open_tasks(key.0, key.1, open);
            if let Some(inst) = inst.as_mut() {
                let mut payload = match output.clone() {
                    Value::Object(m) => m,
                    other => {
                        let mut m = serde_json::Map::new();
                        m.insert("output".into(), other);
                        m
                    }
                };
                payload.entry("task").or_insert_with(|| task_meta(&t));
                let event = Event {
                    name: "task.done".into(),
                    payload: Value::Object(payload),
                    actor: by.name.clone(),
                    reason: String::new(),
                    to: Some(t.state.clone()),
                };
                crate::apply::deliver_system(tx, machines, inst, event, &by, now)?;
            }
            TaskOutcome {
                task: t,
                retrying: false,
                repeated: false,
            }
        }
        Report::Failed {
            error,
            retryable,
            details,
        } => {
            end_attempt(
                tx,
                inst.as_mut(),
                &t,
                "failed",
                Some(error),
                &o.usage,
                &by,
                now,
                false,
            )?;
            let retrying = after_failure(
                tx,
                machines,
                &mut t,
                inst.as_mut(),
                (error, details),
                *retryable,
                &by,
                now,
            )?;
            TaskOutcome {
                task: t,
                retrying,
                repeated: false,
            }
        }
    };
    if let Some(inst) = inst.as_ref()
        && inst.history_seq == attempt_seq
    {
        // Nothing after the attempt's record saved the instance (a retry is due, or the
        // instance is finished): save it now, with the record's sequence number.
        tx.update_instance(inst, inst.version)?;
    }
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
fn after_failure(
    tx: &mut Unit<'_>,
    machines: &Machines,
    t: &mut TaskRecord,
    inst: Option<&mut InstanceRecord>,
    (error, details): (&str, &Value),
    retryable: bool,
    by: &Actor,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let p = policy(t);
    t.error = Some(error.to_string());
    t.lease_owner = None;
    t.lease_expires_at = None;
    t.updated_at = now;
    if retryable && t.attempt < p.max_attempts {
        t.status = TaskStatus::Pending;
        t.available_at = now + backoff(&p, &t.id, t.attempt);
        tx.update_task(t)?;
        return Ok(true);
    }
    t.status = TaskStatus::Failed;
    tx.update_task(t)?;
    if let Some(inst) = inst {
        let mut payload = json!({"error": error, "attempts": t.attempt, "retryable": retryable, "task": task_meta(t)});
        if let (Value::Object(p), Value::Object(d)) = (&mut payload, details) {
            for (k, v) in d {
                p.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let event = Event {
            name: "task.failed".into(),
            payload,
            actor: by.name.clone(),
            reason: error.to_string(),
            to: Some(t.state.clone()),
        };
        crate::apply::deliver_system(tx, machines, inst, event, by, now)?;
    }
    Ok(false)
}
