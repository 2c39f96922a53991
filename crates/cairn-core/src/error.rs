//! Load and validation errors: every problem found in a definition, each with the file,
//! line and column, the state path it concerns and a stable kind.
//!
//! Loading never stops at the first problem: [`LoadError`] carries all of them, in
//! source order.

use std::fmt;

use crate::source::Pos;

/// What kind of problem a [`Diagnostic`] reports. The `code` of each is stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiagnosticKind {
    /// The text is not valid YAML, TOML or JSON.
    Syntax,
    /// A field has the wrong type or a value is out of range.
    InvalidValue,
    /// A field is not part of the definition format.
    UnknownField,
    /// A required field is missing.
    MissingField,
    /// A transition names a state that does not exist.
    UnknownTarget,
    /// A transition target names more than one state.
    AmbiguousTarget,
    /// A compound state (or the machine) has no `initial`.
    MissingInitial,
    /// `initial` names something other than a child state.
    InvalidInitial,
    /// No transition or initial path ever enters the state.
    UnreachableState,
    /// Two states declare the same `id`.
    DuplicateId,
    /// A CEL expression does not parse.
    InvalidExpression,
    /// A CEL expression names a variable that does not exist.
    UnknownVariable,
    /// A CEL expression reads a variable that holds nothing yet (`records`).
    UnavailableVariable,
    /// A duration (timer, timeout, backoff) does not parse.
    InvalidDuration,
    /// A final state has child states.
    FinalWithChildren,
    /// A final state declares transitions, timers or work.
    FinalWithTransitions,
    /// A parallel state has no regions.
    ParallelWithoutRegions,
    /// A state name is empty or holds `.` or `#`.
    InvalidName,
    /// The input JSON Schema is not a valid schema.
    InvalidSchema,
    /// The definition or one of its expressions is over a limit (`limits.*` settings):
    /// too deep, too long.
    LimitExceeded,
    /// A state asks for work (a task, an approval, a child, a map) and neither it, an
    /// ancestor nor a descendant has a transition for one of the work's outcomes.
    UnhandledOutcome,
}

/// Whether a finding refuses the definition or only warns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The definition is refused.
    Error,
    /// The definition loads; `cairn validate` prints it (and `--strict` fails on it).
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl DiagnosticKind {
    /// The stable, kebab-case code of the kind.
    pub fn code(self) -> &'static str {
        match self {
            DiagnosticKind::Syntax => "syntax",
            DiagnosticKind::InvalidValue => "invalid-value",
            DiagnosticKind::UnknownField => "unknown-field",
            DiagnosticKind::MissingField => "missing-field",
            DiagnosticKind::UnknownTarget => "unknown-target",
            DiagnosticKind::AmbiguousTarget => "ambiguous-target",
            DiagnosticKind::MissingInitial => "missing-initial",
            DiagnosticKind::InvalidInitial => "invalid-initial",
            DiagnosticKind::UnreachableState => "unreachable-state",
            DiagnosticKind::DuplicateId => "duplicate-id",
            DiagnosticKind::InvalidExpression => "invalid-expression",
            DiagnosticKind::UnknownVariable => "unknown-variable",
            DiagnosticKind::UnavailableVariable => "unavailable-variable",
            DiagnosticKind::InvalidDuration => "invalid-duration",
            DiagnosticKind::FinalWithChildren => "final-with-children",
            DiagnosticKind::FinalWithTransitions => "final-with-transitions",
            DiagnosticKind::ParallelWithoutRegions => "parallel-without-regions",
            DiagnosticKind::InvalidName => "invalid-name",
            DiagnosticKind::InvalidSchema => "invalid-schema",
            DiagnosticKind::LimitExceeded => "limit-exceeded",
            DiagnosticKind::UnhandledOutcome => "unhandled-outcome",
        }
    }
}

/// One problem in a definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// What kind of finding it is.
    pub kind: DiagnosticKind,
    /// Whether it refuses the definition or only warns.
    pub severity: Severity,
    /// The file name, when the definition came from one.
    pub file: Option<String>,
    /// Where it is.
    pub pos: Pos,
    /// The dotted path of the state concerned, if any (`""` never: the machine itself is `None`).
    pub state: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("<definition>");
        write!(
            f,
            "{file}:{}:{}: {}[{}]: ",
            self.pos.line,
            self.pos.col,
            self.severity.as_str(),
            self.kind.code()
        )?;
        if let Some(state) = &self.state {
            write!(f, "in state `{state}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A definition that could not be loaded: all its problems, in source order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// Every finding, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics while a definition is read and checked.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    pub file: Option<String>,
    pub list: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(
        &mut self,
        kind: DiagnosticKind,
        pos: Pos,
        state: Option<&str>,
        message: impl Into<String>,
    ) {
        self.list.push(Diagnostic {
            kind,
            severity: Severity::Error,
            file: self.file.clone(),
            pos,
            state: state.map(str::to_string),
            message: message.into(),
        });
    }

    pub fn into_result(mut self) -> Result<(), LoadError> {
        if self.list.is_empty() {
            Ok(())
        } else {
            self.list.sort_by_key(|d| d.pos);
            Err(LoadError {
                diagnostics: self.list,
            })
        }
    }
}

/// The candidate closest to `word` by edit distance, when it is close enough to be what
/// was meant (at most one edit in four characters, and at least one): the "did you mean"
/// of a message. Ties go to the first candidate.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let budget = (word.chars().count() / 4).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `; did you mean `X`?` or nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(word, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// Edit distance over characters, a swap of two neighbours counting as one edit
/// (optimal string alignment): `sumbit` is one edit from `submit`.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
