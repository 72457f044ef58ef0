//! The pipeline file: parse, decode, validate, and publish its JSON Schema.

pub mod decode;
pub mod diagnostic;
pub mod model;
pub mod pipeline;
pub mod schema;
pub mod template;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use diagnostic::SpecError;
pub use model::*;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read pipeline file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] SpecError),
}

/// Reads and validates a pipeline file; every problem is reported at once.
pub fn load(path: &Path) -> Result<Pipeline, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let mut p = diagnostic::Problems::default();
            p.add(
                yaml::Span::new(offset, offset + 1),
                "the pipeline file is not valid UTF-8",
            );
            return Err(p.into_error(path, Arc::new(text)).into());
        }
    };
    parse_str(path, text, &|k| std::env::var(k).ok())
}

/// Validates pipeline text; `env` looks up environment variables (injectable for tests).
pub fn parse_str(
    path: &Path,
    text: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, LoadError> {
    let text = Arc::new(text);
    let mut cx = decode::Cx::new(env);
    let root = match yaml::parse(&text) {
        Ok(root) => root,
        Err(e) => {
            let line_start = text[..e.offset].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[e.offset..]
                .find('\n')
                .map_or(text.len(), |i| e.offset + i);
            let hint = if text[line_start..line_end].contains("{{") {
                "YAML reads an unquoted `{{` as the start of a mapping: quote values that use templates, e.g. \"results/{{stem}}.txt\""
            } else {
                "check indentation and that every `[`, `{` and quote is closed"
            };
            cx.problems.hint(
                yaml::Span::new(e.offset, e.offset + 1),
                format!("YAML syntax error: {}", e.message),
                hint,
            );
            return Err(cx.problems.into_error(path, text).into());
        }
    };
    let pipeline = pipeline::decode(&mut cx, &root, path);
    match pipeline {
        Some(p) if cx.problems.is_empty() => Ok(p),
        _ => {
            if cx.problems.is_empty() {
                cx.problems.add(root.span, "the pipeline is incomplete");
            }
            Err(cx.problems.into_error(path, text).into())
        }
    }
}
