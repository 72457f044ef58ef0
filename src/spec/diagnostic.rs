//! Problems found in a pipeline file, each with its place in the file and a hint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

use super::yaml::Span;

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub message: String,
    pub hint: Option<String>,
    #[serde(skip)]
    pub span: Span,
    pub line: usize,
    pub column: usize,
}

/// Everything wrong with one pipeline file.
#[derive(Debug, thiserror::Error)]
#[error("{} has {} problem{}", .path.display(), .problems.len(), if .problems.len() == 1 { "" } else { "s" })]
pub struct SpecError {
    pub path: PathBuf,
    pub source_text: Arc<String>,
    pub problems: Vec<Problem>,
}

impl SpecError {
    /// One miette report per problem, so each gets its own snippet with `file:line:col`.
    pub fn reports(&self) -> Vec<miette::Report> {
        let src = NamedSource::new(self.path.display().to_string(), self.source_text.clone());
        self.problems
            .iter()
            .map(|p| {
                miette::Report::new(Located {
                    problem: p.clone(),
                    src: src.clone(),
                })
            })
            .collect()
    }
}

/// Problems further along their line than this are shown without a snippet.
const MAX_SNIPPET_COLUMN: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("{}", problem.message)]
struct Located {
    problem: Problem,
    src: NamedSource<Arc<String>>,
}

impl Diagnostic for Located {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.problem
            .hint
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        // A snippet of a line this long is no help to read, and the renderer cannot draw
        // columns past 65,535: the `file:line:col` line says where.
        (self.problem.column <= MAX_SNIPPET_COLUMN).then_some(&self.src as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.problem.column > MAX_SNIPPET_COLUMN {
            return None;
        }
        let s = self.problem.span;
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some("here".into()),
            s.start,
            s.len().max(1),
        ))))
    }
}

/// Collects problems while decoding, so all of them are reported at once.
#[derive(Debug, Default)]
pub struct Problems {
    items: Vec<(Span, String, Option<String>)>,
}

impl Problems {
    pub fn add(&mut self, span: Span, message: impl Into<String>) {
        self.items.push((span, message.into(), None));
    }
    pub fn hint(&mut self, span: Span, message: impl Into<String>, hint: impl Into<String>) {
        self.items.push((span, message.into(), Some(hint.into())));
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn into_error(mut self, path: &Path, text: Arc<String>) -> SpecError {
        self.items.sort_by_key(|(s, _, _)| s.start);
        let problems = self
            .items
            .into_iter()
            .map(|(span, message, hint)| {
                let (line, column) = line_col(&text, span.start);
                Problem {
                    message,
                    hint,
                    span,
                    line,
                    column,
                }
            })
            .collect();
        SpecError {
            path: path.to_path_buf(),
            source_text: text,
            problems,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    // A byte-order mark is no column an editor shows.
    let bom = usize::from(line_start == 0 && before.starts_with('\u{feff}'));
    (line, before[line_start..].chars().count() + 1 - bom)
}

/// "did you mean" for a misspelt key or value.
pub fn suggest<'a>(word: &str, choices: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    choices
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
