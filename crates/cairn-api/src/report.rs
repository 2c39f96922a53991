//! Human-readable renderings of an export: the Markdown report and the JSONL trace.

use std::fmt::Write;

use crate::Export;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A Markdown report of one instance: summary, context, history, approvals, checkpoints.
pub fn markdown(e: &Export) -> String {
    let i = &e.instance;
    let mut out = String::new();
    let _ = writeln!(out, "# Instance `{}`\n", i.id);
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| machine | `{}` version {} |",
        i.machine, i.machine_version
    );
    let _ = writeln!(out, "| namespace | `{}` |", i.namespace);
    let _ = writeln!(out, "| status | **{}** |", i.status);
    let _ = writeln!(
        out,
        "| configuration | {} |",
        i.configuration
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "| version | {} |", i.version);
    let _ = writeln!(out, "| created | {} |", i.created_at.to_rfc3339());
    let _ = writeln!(out, "| updated | {} |", i.updated_at.to_rfc3339());
    if let Some(err) = &i.last_error {
        let _ = writeln!(out, "| last error | {} |", cell(err));
    }
    if !i.labels.is_empty() {
        let l: Vec<String> = i.labels.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        let _ = writeln!(out, "| labels | {} |", l.join(", "));
    }
    let _ = writeln!(
        out,
        "\n## Context\n\n```json\n{}\n```\n",
        serde_json::to_string_pretty(&i.context).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "## History\n\n| seq | version | what | from | to | status | actor | reason | at |\n|---|---|---|---|---|---|---|---|---|"
    );
    for t in &e.history {
        let what = match (&t.event, t.kind.as_str()) {
            (Some(ev), _) => format!("`{ev}`"),
            (None, kind) => kind.to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.seq,
            t.version,
            what,
            cell(&t.from.join(", ")),
            cell(&t.to.join(", ")),
            t.status,
            cell(&t.actor),
            cell(&t.reason),
            t.at.to_rfc3339()
        );
    }
    if !e.approvals.is_empty() {
        let _ = writeln!(
            out,
            "\n## Approvals\n\n| state | status | prompt | decisions | decided by | reason | requested |\n|---|---|---|---|---|---|---|"
        );
        for a in &e.approvals {
            let decisions: Vec<String> = a
                .decisions
                .iter()
                .map(|d| {
                    format!(
                        "{} {}{}",
                        d.actor,
                        if d.approve { "approved" } else { "rejected" },
                        if d.reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", d.reason)
                        }
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                a.state,
                a.status,
                cell(a.prompt.as_deref().unwrap_or("")),
                cell(&decisions.join("; ")),
                cell(a.decided_by.as_deref().unwrap_or("")),
                cell(a.reason.as_deref().unwrap_or("")),
                a.created_at.to_rfc3339()
            );
        }
    }
    if !e.checkpoints.is_empty() {
        let _ = writeln!(
            out,
            "\n## Checkpoints\n\n| name | version | configuration | taken |\n|---|---|---|---|"
        );
        for k in &e.checkpoints {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                cell(&k.name),
                k.version,
                cell(&k.configuration.join(", ")),
                k.created_at.to_rfc3339()
            );
        }
    }
    if !e.timers.is_empty() {
        let _ = writeln!(
            out,
            "\n## Pending timers\n\n| event | state | due |\n|---|---|---|"
        );
        for t in &e.timers {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} |",
                t.event,
                t.state,
                t.due_at.to_rfc3339()
            );
        }
    }
    out
}

/// One JSON object per history record, oldest first.
pub fn jsonl(e: &Export) -> String {
    let mut out = String::new();
    for t in &e.history {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("instance".into(), serde_json::json!(e.instance.id));
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}
