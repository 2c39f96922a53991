//! Source trees with positions: YAML, TOML and JSON read into one [`Node`] tree that
//! remembers the line and column of every value, so validation can point at the text.
//!
//! This module knows nothing about machines; `definition` reads a [`Node`] into the
//! definition model. JSON is checked by `serde_json` first (for its precise syntax
//! errors) and then read by the YAML 1.2 parser, of which JSON is a subset.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A position in a source text, both 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The syntax a definition is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML.
    Yaml,
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

impl Format {
    /// The format a file name implies, by its extension.
    pub fn from_path(path: &str) -> Option<Format> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// The format a media type names (`application/json`, `application/yaml`, ...).
    pub fn from_media_type(media: &str) -> Option<Format> {
        let media = media.split(';').next()?.trim().to_ascii_lowercase();
        if media.ends_with("json") {
            Some(Format::Json)
        } else if media.ends_with("yaml") || media.ends_with("yml") {
            Some(Format::Yaml)
        } else if media.ends_with("toml") {
            Some(Format::Toml)
        } else {
            None
        }
    }

    /// Guesses the format of a text with no name: JSON if it opens with `{`, TOML if
    /// its first meaningful line is `key = value` or a `[table]`, else YAML.
    pub fn sniff(text: &str) -> Format {
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        if first.starts_with('{') {
            Format::Json
        } else if first.starts_with('[')
            || first
                .split_once('=')
                .is_some_and(|(k, _)| !k.contains(':') && !k.trim().is_empty())
        {
            Format::Toml
        } else {
            Format::Yaml
        }
    }
}

/// A value with the position it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where it starts.
    pub pos: Pos,
    /// What it holds.
    pub value: NodeValue,
}

/// The value of a [`Node`]: the JSON data model, with maps in document order.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    /// Null.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// Entries in document order: key, position of the key, value.
    Map(Vec<(String, Pos, Node)>),
}

impl Node {
    /// A short name of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a map",
        }
    }

    /// The node as plain JSON.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A syntax error: the text could not be read as its format at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

/// Reads `text` in `format` into a [`Node`] tree.
pub fn parse(text: &str, format: Format) -> Result<Node, SyntaxError> {
    match format {
        Format::Yaml => parse_yaml(text),
        Format::Json => parse_json(text),
        Format::Toml => parse_toml(text),
    }
}

fn parse_json(text: &str) -> Result<Node, SyntaxError> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(SyntaxError {
            pos: Pos {
                line: e.line() as u32,
                col: e.column() as u32,
            },
            message: format!("invalid JSON: {}", strip_position(&e.to_string())),
        });
    }
    parse_yaml(text)
}

fn strip_position(message: &str) -> &str {
    message
        .rsplit_once(" at line ")
        .map(|(m, _)| m)
        .unwrap_or(message)
}

struct YamlReader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
}

fn marker_pos(m: &saphyr_parser::Marker) -> Pos {
    Pos {
        line: m.line() as u32,
        col: m.col() as u32 + 1,
    }
}

fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    let mut reader = YamlReader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
    };
    let mut root = None;
    loop {
        let (event, span) = reader.next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                if root.is_some() {
                    return Err(SyntaxError {
                        pos: marker_pos(&span.start),
                        message: "a definition file holds one YAML document; found a second".into(),
                    });
                }
                let (event, span) = reader.next()?;
                root = Some(reader.node(event, span)?);
            }
            Event::StreamEnd => break,
            _ => {
                return Err(SyntaxError {
                    pos: marker_pos(&span.start),
                    message: "unexpected YAML event outside a document".into(),
                });
            }
        }
    }
    Ok(root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        value: NodeValue::Null,
    }))
}

impl<'a> YamlReader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, saphyr_parser::Span), SyntaxError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(SyntaxError {
                pos: marker_pos(e.marker()),
                message: format!("invalid YAML: {}", e.info()),
            }),
            None => Err(SyntaxError {
                pos: Pos::default(),
                message: "unexpected end of YAML".into(),
            }),
        }
    }

    fn node(&mut self, event: Event<'a>, span: saphyr_parser::Span) -> Result<Node, SyntaxError> {
        let pos = marker_pos(&span.start);
        let (node, anchor) = match event {
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or(SyntaxError {
                    pos,
                    message: "alias to an unknown anchor".into(),
                })?;
                return Ok(Node { pos, ..node });
            }
            Event::Scalar(value, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !is_str_tag {
                    resolve_plain(value)
                } else {
                    NodeValue::Str(value.into_owned())
                };
                (Node { pos, value }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, span)?);
                }
                (
                    Node {
                        pos,
                        value: NodeValue::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(String, Pos, Node)> = Vec::new();
                loop {
                    let (event, span) = self.next()?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(event, span)?;
                    let key_pos = key.pos;
                    let key = match key.value {
                        NodeValue::Str(s) => s,
                        NodeValue::Int(i) => i.to_string(),
                        NodeValue::Float(f) => f.to_string(),
                        NodeValue::Bool(b) => b.to_string(),
                        NodeValue::Null => "null".to_string(),
                        _ => {
                            return Err(SyntaxError {
                                pos: key_pos,
                                message: "a map key must be a plain value, not a list or map"
                                    .into(),
                            });
                        }
                    };
                    if entries.iter().any(|(k, _, _)| *k == key) {
                        return Err(SyntaxError {
                            pos: key_pos,
                            message: format!("duplicate key `{key}`"),
                        });
                    }
                    let (event, span) = self.next()?;
                    let value = self.node(event, span)?;
                    entries.push((key, key_pos, value));
                }
                (
                    Node {
                        pos,
                        value: NodeValue::Map(entries),
                    },
                    anchor,
                )
            }
            _ => {
                return Err(SyntaxError {
                    pos,
                    message: "unexpected YAML structure".into(),
                });
            }
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(value: Cow<'_, str>) -> NodeValue {
    let s = value.as_ref();
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return NodeValue::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return NodeValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return NodeValue::Float(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = s.parse::<i64>()
    {
        return NodeValue::Int(i);
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return NodeValue::Int(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return NodeValue::Int(i);
    }
    if looks_like_float(digits)
        && let Ok(f) = s.parse::<f64>()
    {
        return NodeValue::Float(f);
    }
    NodeValue::Str(value.into_owned())
}

fn looks_like_float(s: &str) -> bool {
    // [0-9]* (.[0-9]*)? ([eE][-+]?[0-9]+)? with at least one digit in the mantissa
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !(digits_ok(int) && digits_ok(frac)) || int.len() + frac.len() == 0 {
        return false;
    }
    match exp {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits_ok(e)
        }
    }
}

struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn pos(&self, text: &str, offset: usize) -> Pos {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = text
            .get(start..offset.min(text.len()))
            .map_or(0, |s| s.chars().count());
        Pos {
            line: line as u32,
            col: col as u32 + 1,
        }
    }
}

fn parse_toml(text: &str) -> Result<Node, SyntaxError> {
    use toml::de::{DeTable, DeValue};
    let index = LineIndex::new(text);
    let table = DeTable::parse(text).map_err(|e| SyntaxError {
        pos: e
            .span()
            .map(|s| index.pos(text, s.start))
            .unwrap_or_default(),
        message: format!("invalid TOML: {}", e.message().trim()),
    })?;

    fn convert(value: &DeValue<'_>, pos: Pos, text: &str, index: &LineIndex) -> Node {
        let value = match value {
            DeValue::String(s) => NodeValue::Str(s.to_string()),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(v) => NodeValue::Int(v),
                Err(_) => NodeValue::Str(i.as_str().to_string()),
            },
            DeValue::Float(f) => {
                NodeValue::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN))
            }
            DeValue::Boolean(b) => NodeValue::Bool(*b),
            DeValue::Datetime(d) => NodeValue::Str(d.to_string()),
            DeValue::Array(items) => NodeValue::Seq(
                items
                    .iter()
                    .map(|v| convert(v.get_ref(), index.pos(text, v.span().start), text, index))
                    .collect(),
            ),
            DeValue::Table(t) => NodeValue::Map(convert_table(t, text, index)),
        };
        Node { pos, value }
    }

    fn convert_table(
        table: &DeTable<'_>,
        text: &str,
        index: &LineIndex,
    ) -> Vec<(String, Pos, Node)> {
        table
            .iter()
            .map(|(k, v)| {
                let key_pos = index.pos(text, k.span().start);
                let mut pos = index.pos(text, v.span().start);
                if v.span().start == 0 && v.span().end == 0 {
                    pos = key_pos;
                }
                (
                    k.get_ref().to_string(),
                    key_pos,
                    convert(v.get_ref(), pos, text, index),
                )
            })
            .collect()
    }

    Ok(Node {
        pos: Pos { line: 1, col: 1 },
        value: NodeValue::Map(convert_table(table.get_ref(), text, &index)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(n: &Node) -> String {
        match &n.value {
            NodeValue::Map(entries) => {
                let inner: Vec<String> = entries
                    .iter()
                    .map(|(k, p, v)| format!("{k}@{p}={}", show(v)))
                    .collect();
                format!("{{{}}}@{}", inner.join(", "), n.pos)
            }
            NodeValue::Seq(items) => {
                let inner: Vec<String> = items.iter().map(show).collect();
                format!("[{}]@{}", inner.join(", "), n.pos)
            }
            other => format!("{other:?}@{}", n.pos),
        }
    }

    #[test]
    fn yaml_positions_and_core_schema() {
        let n = parse(
            "a: 1\nb:\n  c: [x, 'y', 2.5]\n  on: true\nd: ~\ne: -7\nf: 0x1f\ng: 1e3\nh: \"3\"\n",
            Format::Yaml,
        )
        .unwrap();
        expect_test::expect![[r#"{a@1:1=Int(1)@1:4, b@2:1={c@3:3=[Str("x")@3:7, Str("y")@3:10, Float(2.5)@3:15]@3:6, on@4:3=Bool(true)@4:7}@3:3, d@5:1=Null@5:4, e@6:1=Int(-7)@6:4, f@7:1=Int(31)@7:4, g@8:1=Float(1000.0)@8:4, h@9:1=Str("3")@9:4}@1:1"#]]
            .assert_eq(&show(&n));
    }

    #[test]
    fn json_and_toml_agree_with_yaml() {
        let y = parse("a: {b: [1, 2.5, x]}\n", Format::Yaml).unwrap();
        let j = parse(r#"{"a": {"b": [1, 2.5, "x"]}}"#, Format::Json).unwrap();
        let t = parse("[a]\nb = [1, 2.5, \"x\"]\n", Format::Toml).unwrap();
        assert_eq!(y.to_json(), j.to_json());
        assert_eq!(y.to_json(), t.to_json());
        let t = parse("x = 1\n\n[s.a]\ny = 'z'\n", Format::Toml).unwrap();
        expect_test::expect![[
            r#"{x@1:1=Int(1)@1:5, s@3:2={a@3:4={y@4:1=Str("z")@4:5}@3:1}@3:2}@1:1"#
        ]]
        .assert_eq(&show(&t));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: 1\nb: [1, 2\n", Format::Yaml).unwrap_err();
        assert!(e.pos.line >= 2, "{e:?}");
        let e = parse("{\"a\": 1,\n \"b\": }", Format::Json).unwrap_err();
        assert_eq!(e.pos.line, 2, "{e:?}");
        let e = parse("a = 1\nb = = 2\n", Format::Toml).unwrap_err();
        assert_eq!(e.pos.line, 2, "{e:?}");
        let e = parse("a: 1\na: 2\n", Format::Yaml).unwrap_err();
        assert_eq!((e.pos.line, e.message.as_str()), (2, "duplicate key `a`"));
    }

    #[test]
    fn anchors_and_aliases() {
        let n = parse("a: &x {b: 1}\nc: *x\n", Format::Yaml).unwrap();
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a": {"b": 1}, "c": {"b": 1}})
        );
    }

    #[test]
    fn sniffing() {
        assert_eq!(Format::sniff("{\"a\":1}"), Format::Json);
        assert_eq!(Format::sniff("# c\nmachine = \"x\"\n"), Format::Toml);
        assert_eq!(Format::sniff("machine: x\n"), Format::Yaml);
        assert_eq!(Format::sniff("[states.a]\n"), Format::Toml);
    }
}
