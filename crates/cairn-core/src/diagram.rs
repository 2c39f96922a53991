//! Renders a machine as a Mermaid `stateDiagram-v2` or a Graphviz `dot` graph, with the
//! active states of an instance highlighted when a configuration is given.

use std::fmt::Write;

use crate::machine::{Kind, Machine, StateId};

/// Output syntaxes of [`render`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagramFormat {
    /// Mermaid `stateDiagram-v2`.
    Mermaid,
    /// Graphviz DOT.
    Dot,
}

impl DiagramFormat {
    /// The format a name stands for (`mermaid`, `dot`).
    pub fn parse(s: &str) -> Option<DiagramFormat> {
        match s {
            "mermaid" => Some(DiagramFormat::Mermaid),
            "dot" => Some(DiagramFormat::Dot),
            _ => None,
        }
    }
}

fn node_id(m: &Machine, s: StateId) -> String {
    let p = &m.states[s].path;
    format!("s_{}", p.replace(['.', '-', ' '], "_"))
}

fn active_set(m: &Machine, active_leaves: &[String]) -> Vec<bool> {
    let mut active = vec![false; m.states.len()];
    for leaf in active_leaves {
        let mut cur = m.state_by_path(leaf);
        while let Some(s) = cur {
            active[s] = true;
            cur = m.states[s].parent;
        }
    }
    active
}

fn label(m: &Machine, t: usize) -> String {
    let tr = &m.transitions[t];
    let mut l = tr.event.clone().unwrap_or_else(|| "always".into());
    if let Some(g) = tr.guard {
        let _ = write!(l, " [{}]", m.expr(g).source);
    }
    l.replace('"', "'")
}

/// Renders `m`; states on the path to any of `active_leaves` are highlighted.
pub fn render(m: &Machine, format: DiagramFormat, active_leaves: &[String]) -> String {
    let active = active_set(m, active_leaves);
    match format {
        DiagramFormat::Mermaid => mermaid(m, &active),
        DiagramFormat::Dot => dot(m, &active),
    }
}

fn mermaid(m: &Machine, active: &[bool]) -> String {
    let mut out = String::from("stateDiagram-v2\n");
    fn block(m: &Machine, s: StateId, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        let node = &m.states[s];
        if let Some(init) = node.initial {
            let _ = writeln!(out, "{pad}[*] --> {}", node_id(m, init));
        }
        for (i, &c) in node.children.iter().enumerate() {
            let child = &m.states[c];
            let id = node_id(m, c);
            let _ = writeln!(out, "{pad}state \"{}\" as {id}", child.name);
            if !child.children.is_empty() {
                let _ = writeln!(out, "{pad}state {id} {{");
                block(m, c, depth + 1, out);
                let _ = writeln!(out, "{pad}}}");
            }
            if child.kind == Kind::Final {
                let _ = writeln!(out, "{pad}{id} --> [*]");
            }
            if node.kind == Kind::Parallel && i + 1 < node.children.len() {
                let _ = writeln!(out, "{pad}--");
            }
        }
    }
    block(m, 0, 1, &mut out);
    for t in 0..m.transitions.len() {
        let tr = &m.transitions[t];
        let (Some(target), true) = (tr.target, tr.source != 0) else {
            continue;
        };
        let _ = writeln!(
            out,
            "  {} --> {}: {}",
            node_id(m, tr.source),
            node_id(m, target),
            label(m, t)
        );
    }
    let actives: Vec<String> = (1..m.states.len())
        .filter(|s| active[*s])
        .map(|s| node_id(m, s))
        .collect();
    if !actives.is_empty() {
        out.push_str("  classDef active fill:#f9d71c,stroke:#333,stroke-width:2px\n");
        let _ = writeln!(out, "  class {} active", actives.join(","));
    }
    out
}

fn dot(m: &Machine, active: &[bool]) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  compound=true;\n  node [shape=box, style=rounded];\n",
        m.name()
    );
    fn block(m: &Machine, s: StateId, depth: usize, active: &[bool], out: &mut String) {
        let pad = "  ".repeat(depth);
        for &c in &m.states[s].children {
            let child = &m.states[c];
            let id = node_id(m, c);
            if child.children.is_empty() {
                let shape = if child.kind == Kind::Final {
                    ", peripheries=2"
                } else {
                    ""
                };
                let fill = if active[c] {
                    ", style=\"rounded,filled\", fillcolor=\"#f9d71c\""
                } else {
                    ""
                };
                let _ = writeln!(out, "{pad}{id} [label=\"{}\"{shape}{fill}];", child.name);
            } else {
                let _ = writeln!(out, "{pad}subgraph cluster_{id} {{");
                let style = if child.kind == Kind::Parallel {
                    "dashed"
                } else {
                    "rounded"
                };
                let fill = if active[c] {
                    "filled\"; fillcolor=\"#fff3b0"
                } else {
                    style
                };
                let _ = writeln!(out, "{pad}  label=\"{}\"; style=\"{fill}\";", child.name);
                let _ = writeln!(out, "{pad}  {id} [label=\"\", shape=point];");
                block(m, c, depth + 1, active, out);
                let _ = writeln!(out, "{pad}}}");
            }
        }
    }
    block(m, 0, 1, active, &mut out);
    if let Some(init) = m.states[0].initial {
        let _ = writeln!(
            out,
            "  start [shape=point];\n  start -> {};",
            node_id(m, init)
        );
    }
    for t in 0..m.transitions.len() {
        let tr = &m.transitions[t];
        let (Some(target), true) = (tr.target, tr.source != 0) else {
            continue;
        };
        let _ = writeln!(
            out,
            "  {} -> {} [label=\"{}\"];",
            node_id(m, tr.source),
            node_id(m, target),
            label(m, t)
        );
    }
    out.push_str("}\n");
    out
}
