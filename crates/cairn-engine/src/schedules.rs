//! Cron schedules that start instances.
//!
//! A schedule keeps its next tick. When the tick is due, one unit of work writes the start
//! to the outbox (the instance's id is the schedule's name and the tick's time, so a start
//! delivered twice is one instance) and moves the next tick past now: a tick runs once.
//! Ticks missed while the server was down run once when it is back (`catch_up: once`, the
//! default), never several times, or not at all (`skip`).

use std::str::FromStr;

use cairn_api::Schedule;
use cairn_store::{OutboxRecord, ScheduleRecord, Store};
use chrono::{DateTime, Utc};
use croner::Cron;
use serde_json::json;

use crate::Error;
use crate::engine::Engine;

/// A tick later than this is "missed" (the server was down), not just late.
const GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

struct Parsed {
    cron: Cron,
    tz: chrono_tz::Tz,
    catch_up: bool,
}

fn parse(s: &Schedule) -> Result<Parsed, Error> {
    let bad = |m: String| Error::Invalid(format!("schedule `{}`: {m}", s.name));
    if s.name.is_empty()
        || s.name.len() > 100
        || !s
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad(
            "a name is 1-100 letters, digits, `-`, `_` or `.`".into()
        ));
    }
    if s.machine.is_empty() {
        return Err(bad("`machine` is required".into()));
    }
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(&s.cron)
        .or_else(|_| Cron::from_str(&s.cron))
        .map_err(|e| bad(format!("`cron` `{}`: {e}", s.cron)))?;
    let tz = match s.timezone.as_deref() {
        None => chrono_tz::UTC,
        Some(z) => z.parse().map_err(|_| {
            bad(format!(
                "`timezone` `{z}` is not an IANA time zone (e.g. Europe/Paris, America/New_York, UTC)"
            ))
        })?,
    };
    let catch_up = match s.catch_up.as_deref() {
        None | Some("once") => true,
        Some("skip") => false,
        Some(other) => return Err(bad(format!("`catch_up` `{other}`: expected once or skip"))),
    };
    if let Some(input) = &s.input
        && !input.is_object()
    {
        return Err(bad("`input` must be a JSON object".into()));
    }
    Ok(Parsed { cron, tz, catch_up })
}

/// The first tick strictly after `after`.
fn next_after(p: &Parsed, after: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    p.cron
        .find_next_occurrence(&after.with_timezone(&p.tz), false)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Invalid(format!("the schedule has no next tick: {e}")))
}

fn definition(r: &ScheduleRecord) -> Option<Schedule> {
    let mut s: Schedule = serde_json::from_value(r.definition.clone()).ok()?;
    s.next_at = Some(r.next_at);
    s.last_at = r.last_at;
    s.created_at = Some(r.created_at);
    Some(s)
}

impl<S: Store> Engine<S> {
    /// Stores a schedule after checking its name, cron expression, time zone, catch-up
    /// policy and input; its first tick is the first after now.
    pub fn add_schedule(&self, ns: &str, mut schedule: Schedule) -> Result<Schedule, Error> {
        crate::ids::check_namespace(ns)?;
        let p = parse(&schedule)?;
        let now = self.now();
        let next = next_after(&p, now)?;
        schedule.next_at = None;
        schedule.last_at = None;
        schedule.created_at = None;
        let record = ScheduleRecord {
            namespace: ns.to_string(),
            name: schedule.name.clone(),
            definition: serde_json::to_value(&schedule).unwrap_or_default(),
            next_at: next,
            last_at: None,
            created_at: now,
        };
        let name = schedule.name.clone();
        self.write(move |tx| {
            tx.insert_schedule(&record).map_err(|e| match e {
                cairn_store::Error::Conflict(_) => {
                    Error::Conflict(format!("schedule `{name}` exists; remove it first"))
                }
                other => Error::Store(other),
            })
        })?;
        schedule.next_at = Some(next);
        schedule.created_at = Some(now);
        Ok(schedule)
    }

    /// The namespace's schedules, by name, with their next and last ticks.
    pub fn schedules(&self, ns: &str) -> Result<Vec<Schedule>, Error> {
        Ok(self
            .store()
            .schedules(ns)?
            .iter()
            .filter_map(definition)
            .collect())
    }

    /// Removes a schedule.
    pub fn remove_schedule(&self, ns: &str, name: &str) -> Result<(), Error> {
        let (ns2, name2) = (ns.to_string(), name.to_string());
        if !self.write(move |tx| Ok(tx.delete_schedule(&ns2, &name2)?))? {
            return Err(Error::NotFound(format!(
                "no schedule `{name}` in namespace `{ns}`"
            )));
        }
        Ok(())
    }

    /// Runs every schedule whose tick is due: one start per schedule, however many ticks
    /// were missed, written with the move of its next tick. Returns how many started.
    pub fn fire_due_schedules(&self) -> Result<usize, Error> {
        let now = self.now();
        if !self.store().schedules_due(now)? {
            return Ok(0);
        }
        self.write(move |tx| {
            let mut started = 0;
            for mut r in tx.due_schedules(now, 1000)? {
                let Some(s) = definition(&r) else { continue };
                let Ok(p) = parse(&s) else { continue };
                let due = r.next_at;
                // The latest tick at or before now: what runs when ticks were missed.
                let tick = p
                    .cron
                    .find_previous_occurrence(&now.with_timezone(&p.tz), true)
                    .map(|t| t.with_timezone(&Utc))
                    .map_or(due, |t| t.max(due));
                let missed = now - due > GRACE;
                if p.catch_up || !missed {
                    let id = format!("{}-{}", s.name, tick.format("%Y%m%dT%H%M%SZ"));
                    tx.push_outbox(&OutboxRecord {
                        seq: 0,
                        kind: "start".into(),
                        hops: 0,
                        namespace: r.namespace.clone(),
                        instance_id: id,
                        event: s.machine.clone(),
                        payload: s.input.clone().unwrap_or_else(|| json!({})),
                        actor: format!("schedule:{}", s.name),
                        reason: String::new(),
                        source: format!("schedule:{}@{}", s.name, tick.to_rfc3339()),
                        created_at: now,
                    })?;
                    r.last_at = Some(tick);
                    started += 1;
                }
                r.next_at = next_after(&p, now)?;
                tx.update_schedule(&r)?;
                tx.append_log(&cairn_store::NewLogEntry {
                    namespace: r.namespace.clone(),
                    instance_id: String::new(),
                    kind: "schedule_ticked".into(),
                    version: 0,
                    data: json!({"schedule": s.name, "tick": tick, "ran": p.catch_up || !missed, "missed": missed, "next_at": r.next_at}),
                    created_at: now,
                })?;
            }
            Ok(started)
        })
    }
}
