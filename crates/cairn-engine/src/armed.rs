//! Triggers compiled: each namespace's trigger definitions checked, their CEL compiled
//! once, and cached beside the compiled machines (`machines::Machines`). What a trigger
//! does when it matches is `triggers.rs`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_api::Trigger;
use cairn_core::expr::{self, Compiled};
use cairn_core::{Status, is_reserved_event};
use cairn_store::Tx;

use crate::Error;

/// The longest chain of triggers feeding each other.
pub const MAX_HOPS: u32 = 16;

/// A trigger with its expressions compiled.
pub(crate) struct Armed {
    pub def: Trigger,
    pub status: Option<Status>,
    pub when: Option<Compiled>,
    pub input: Option<Compiled>,
    pub id: Option<Compiled>,
    pub to: Option<Compiled>,
    pub payload: Option<Compiled>,
}

/// A namespace's triggers and when they were loaded.
type Loaded = (std::time::Instant, Arc<Vec<Armed>>);

/// Each namespace's compiled triggers, loaded on first use and after a change made here;
/// with a `ttl` (other nodes may change them too), also once they are that old.
pub(crate) struct Cache {
    loaded: Mutex<HashMap<String, Loaded>>,
    ttl: Option<std::time::Duration>,
}

impl Cache {
    pub(crate) fn new(ttl: Option<std::time::Duration>) -> Cache {
        Cache {
            loaded: Mutex::default(),
            ttl,
        }
    }

    pub(crate) fn of(&self, tx: &mut dyn Tx, ns: &str) -> Result<Arc<Vec<Armed>>, Error> {
        let fresh = |at: &std::time::Instant| self.ttl.is_none_or(|t| at.elapsed() < t);
        if let Some(list) = self.loaded.lock().ok().and_then(|m| {
            m.get(ns)
                .filter(|(at, _)| fresh(at))
                .map(|(_, l)| Arc::clone(l))
        }) {
            return Ok(list);
        }
        let list: Vec<Armed> = tx
            .triggers(ns)?
            .iter()
            .filter_map(|r| serde_json::from_value(r.definition.clone()).ok())
            .filter_map(|t| compile(t, None).ok())
            .collect();
        let list = Arc::new(list);
        if let Ok(mut m) = self.loaded.lock() {
            m.insert(
                ns.to_string(),
                (std::time::Instant::now(), Arc::clone(&list)),
            );
        }
        Ok(list)
    }

    pub(crate) fn forget(&self, ns: &str) {
        if let Ok(mut m) = self.loaded.lock() {
            m.remove(ns);
        }
    }
}

/// Checks and compiles a trigger: within `limits` when it is being added, as stored
/// (no limit refuses it) when `None`.
pub(crate) fn compile(def: Trigger, limits: Option<&cairn_core::Limits>) -> Result<Armed, Error> {
    let env = expr::standard_env();
    let field = |what: &str, src: &Option<String>| -> Result<Option<Compiled>, Error> {
        src.as_deref()
            .map(|s| {
                match limits {
                    Some(l) => expr::compile(&env, s, l),
                    None => expr::compile_stored(&env, s, &[]),
                }
                .map_err(|e| {
                    let shown: String = s.chars().take(60).collect();
                    Error::Invalid(format!("trigger `{}`: `{what}` `{shown}`: {e}", def.name))
                })
            })
            .transpose()
    };
    let bad = |m: String| Error::Invalid(format!("trigger `{}`: {m}", def.name));
    if def.name.is_empty()
        || def.name.len() > 100
        || !def
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad(
            "a name is 1-100 letters, digits, `-`, `_` or `.`".into()
        ));
    }
    if def.machine.is_empty() {
        return Err(bad("`machine` (the source machine) is required".into()));
    }
    let status = match (&def.on_state, &def.on_status) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(bad("give exactly one of `on_state` and `on_status`".into()));
        }
        (Some(s), None) if s.is_empty() => return Err(bad("`on_state` is empty".into())),
        (Some(_), None) => None,
        (None, Some(s)) => match Status::parse(s) {
            Some(st) => Some(st),
            None => {
                return Err(bad(format!(
                    "`on_status` `{s}`: expected running, paused, completed, failed or cancelled"
                )));
            }
        },
    };
    let (input, id, to, payload) = match (&def.start, &def.send) {
        (Some(st), None) => {
            if st.machine.is_empty() {
                return Err(bad("`start.machine` is required".into()));
            }
            (
                field("start.input", &st.input)?,
                field("start.id", &st.id)?,
                None,
                None,
            )
        }
        (None, Some(se)) => {
            if se.event.is_empty() {
                return Err(bad("`send.event` is required".into()));
            }
            if is_reserved_event(&se.event) {
                return Err(bad(format!(
                    "`send.event` `{}` is reserved: the engine delivers it",
                    se.event
                )));
            }
            (
                None,
                None,
                field("send.to", &Some(se.to.clone()))?,
                field("send.payload", &se.payload)?,
            )
        }
        _ => return Err(bad("give exactly one of `start` and `send`".into())),
    };
    Ok(Armed {
        when: field("when", &def.when)?,
        def,
        status,
        input,
        id,
        to,
        payload,
    })
}

/// Whether `t` matches the states just entered or the status just ended with.
pub(crate) fn matches(t: &Armed, entered: &[&str], ended: Option<Status>) -> bool {
    if let Some(s) = &t.def.on_state {
        return entered.iter().any(|e| {
            e == s || (e.starts_with(s.as_str()) && e.as_bytes().get(s.len()) == Some(&b'.'))
        });
    }
    t.status.is_some() && t.status == ended
}
