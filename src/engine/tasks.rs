//! A process step's tasks: expanding globs into tasks, and deciding which must run.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::journal::{DoneRecord, Journal, JournalError, Stamp};
use crate::spec::ProcessStep;
use crate::spec::template::{Binding, Bindings};

/// Key of the single task of a step without `foreach`.
pub const SINGLE: &str = "-";

#[derive(Debug, Clone)]
pub struct Task {
    /// The input's path relative to the file system root, or [`SINGLE`].
    pub key: String,
    pub command: String,
    /// Relative paths whose stamps make up the task's fingerprint.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    #[error("cannot expand `{pattern}`: {message}")]
    Glob { pattern: String, message: String },
    #[error("{path}: file names must be UTF-8 to be used in commands")]
    NotUtf8 { path: String },
    #[error("template refers to `{0}`, which has no value here")]
    Unbound(String),
    #[error("output `{0}` would leave the file system")]
    Escape(String),
}

/// Files matched by the globs under `root`, relative, sorted and unique; directories skipped.
pub fn matches(root: &Path, globs: &[String]) -> Result<Vec<String>, ExpandError> {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let base = glob::Pattern::escape(&root.display().to_string());
    let mut out = Vec::new();
    for g in globs {
        let pattern = format!("{base}/{g}");
        let paths = glob::glob_with(&pattern, opts).map_err(|e| ExpandError::Glob {
            pattern: g.clone(),
            message: e.msg.to_string(),
        })?;
        for p in paths {
            let p = p.map_err(|e| ExpandError::Glob {
                pattern: g.clone(),
                message: e.to_string(),
            })?;
            if !p.is_file() {
                continue;
            }
            let rel = p.strip_prefix(root).unwrap_or(&p);
            let Some(rel) = rel.to_str() else {
                return Err(ExpandError::NotUtf8 {
                    path: rel.display().to_string(),
                });
            };
            out.push(rel.to_string());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn input_bindings(root: &Path, rel: &str, b: &mut Bindings) {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let stem = name.split('.').next().unwrap_or(name);
    let stem = if stem.is_empty() { name } else { stem };
    b.insert(
        "input".into(),
        Binding::One(root.join(rel).display().to_string()),
    );
    b.insert("rel".into(), Binding::One(rel.to_string()));
    b.insert("name".into(), Binding::One(name.to_string()));
    b.insert("stem".into(), Binding::One(stem.to_string()));
    b.insert("dir".into(), Binding::One(dir.to_string()));
}

/// Expands a process step into its tasks (one per `foreach` match, or one).
pub fn expand(
    step_name: &str,
    p: &ProcessStep,
    root: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<Task>, ExpandError> {
    let shared = matches(root, &p.inputs)?;
    let mut base = Bindings::new();
    base.insert("fs".into(), Binding::One(root.display().to_string()));
    base.insert("step".into(), Binding::One(step_name.to_string()));
    base.insert(
        "inputs".into(),
        Binding::Many(
            shared
                .iter()
                .map(|r| root.join(r).display().to_string())
                .collect(),
        ),
    );
    for (k, v) in vars {
        base.insert(format!("vars.{k}"), Binding::One(v.clone()));
    }
    let keys: Vec<Option<String>> = if p.foreach.is_empty() {
        vec![None]
    } else {
        matches(root, &p.foreach)?.into_iter().map(Some).collect()
    };
    let mut tasks = Vec::with_capacity(keys.len());
    for key in keys {
        let mut b = base.clone();
        let mut inputs = Vec::with_capacity(shared.len() + 1);
        if let Some(rel) = &key {
            input_bindings(root, rel, &mut b);
            inputs.push(rel.clone());
        }
        inputs.extend(shared.iter().cloned());
        let mut outputs = Vec::with_capacity(p.outputs.len());
        for t in &p.outputs {
            let out = t.render_raw(&b).map_err(ExpandError::Unbound)?;
            let out = out.trim_start_matches('/').to_string();
            if crate::mover::names::check(&out).is_err() {
                return Err(ExpandError::Escape(out));
            }
            outputs.push(out);
        }
        let abs: Vec<String> = outputs
            .iter()
            .map(|o| root.join(o).display().to_string())
            .collect();
        if let Some(first) = abs.first() {
            b.insert("output".into(), Binding::One(first.clone()));
        }
        b.insert("outputs".into(), Binding::Many(abs));
        let command = p.command.render_shell(&b).map_err(ExpandError::Unbound)?;
        tasks.push(Task {
            key: key.unwrap_or_else(|| SINGLE.to_string()),
            command,
            inputs,
            outputs,
        });
    }
    Ok(tasks)
}

pub fn stamp(root: &Path, rel: &str) -> Option<Stamp> {
    let m = std::fs::metadata(root.join(rel)).ok()?;
    Some(Stamp {
        path: rel.to_string(),
        size: m.size(),
        mtime_ns: crate::journal::mtime_ns(&m),
    })
}

/// Why a task will run. `explain` prints these; the engine only needs to know "run or not".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Why {
    NeverRun,
    CommandChanged {
        before: String,
        now: String,
    },
    InputAdded {
        path: String,
    },
    InputRemoved {
        path: String,
    },
    InputChanged {
        path: String,
        before: String,
        now: String,
    },
    OutputMissing {
        path: String,
    },
    OutputChanged {
        path: String,
    },
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NeverRun => write!(f, "it has never completed"),
            Why::CommandChanged { before, now } => {
                write!(
                    f,
                    "its command changed\n    before: {before}\n    now:    {now}"
                )
            }
            Why::InputAdded { path } => write!(f, "input {path} is new"),
            Why::InputRemoved { path } => write!(f, "input {path} is gone"),
            Why::InputChanged { path, before, now } => {
                write!(f, "input {path} changed ({before} → {now})")
            }
            Why::OutputMissing { path } => write!(f, "output {path} is missing"),
            Why::OutputChanged { path } => {
                write!(f, "output {path} was modified after the task wrote it")
            }
        }
    }
}

fn describe(s: &Stamp) -> String {
    let secs = s.mtime_ns / 1_000_000_000;
    format!(
        "{} bytes, mtime {secs}.{:09}",
        s.size,
        (s.mtime_ns % 1_000_000_000).abs()
    )
}

/// What the task's fingerprint looks like now.
pub struct Current {
    pub inputs: Vec<Stamp>,
}

pub fn current(root: &Path, task: &Task) -> Current {
    Current {
        inputs: task.inputs.iter().filter_map(|r| stamp(root, r)).collect(),
    }
}

/// Every reason the task must run (empty: up to date), comparing with its last success.
pub fn reasons(root: &Path, task: &Task, now: &Current, done: Option<&DoneRecord>) -> Vec<Why> {
    let Some(done) = done else {
        return vec![Why::NeverRun];
    };
    let mut why = Vec::new();
    if done.command != task.command {
        why.push(Why::CommandChanged {
            before: done.command.clone(),
            now: task.command.clone(),
        });
    }
    let before: BTreeMap<&str, &Stamp> = done.inputs.iter().map(|s| (s.path.as_str(), s)).collect();
    let after: BTreeMap<&str, &Stamp> = now.inputs.iter().map(|s| (s.path.as_str(), s)).collect();
    for (path, s) in &after {
        match before.get(path) {
            None => why.push(Why::InputAdded {
                path: path.to_string(),
            }),
            Some(b) if b != s => why.push(Why::InputChanged {
                path: path.to_string(),
                before: describe(b),
                now: describe(s),
            }),
            _ => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        why.push(Why::InputRemoved {
            path: path.to_string(),
        });
    }
    for out in &task.outputs {
        match (
            stamp(root, out),
            done.outputs.iter().find(|s| &s.path == out),
        ) {
            (None, _) => why.push(Why::OutputMissing { path: out.clone() }),
            (Some(now), Some(then)) if &now != then => {
                why.push(Why::OutputChanged { path: out.clone() })
            }
            (Some(_), None) => why.push(Why::OutputChanged { path: out.clone() }),
            _ => {}
        }
    }
    why
}

/// A task to run, its current fingerprint and the first reason it must run.
pub type ToRun = (Task, Current, Why);

/// Tasks of a step split into those to run and the number up to date.
pub fn triage(
    journal: &Journal,
    pipeline: &str,
    step: &str,
    root: &Path,
    tasks: Vec<Task>,
) -> Result<(Vec<ToRun>, usize), JournalError> {
    let mut run = Vec::new();
    let mut fresh = 0;
    for task in tasks {
        let now = current(root, &task);
        let done = journal.done(pipeline, step, &task.key)?;
        match reasons(root, &task, &now, done.as_ref()).into_iter().next() {
            Some(why) => run.push((task, now, why)),
            None => fresh += 1,
        }
    }
    Ok((run, fresh))
}

/// Where a task attempt's output goes: `logs/<pipeline>/<run>/<step>/<task>.<attempt>.{out,err}`.
pub fn log_paths(
    state: &Path,
    pipeline: &str,
    run: u64,
    step: &str,
    key: &str,
    attempt: u32,
) -> (PathBuf, PathBuf) {
    let dir = state
        .join("logs")
        .join(pipeline)
        .join(run.to_string())
        .join(step);
    let name = format!("{}.{attempt}", log_name(key));
    (
        dir.join(format!("{name}.out")),
        dir.join(format!("{name}.err")),
    )
}

/// A task key as one safe file name: path separators and odd bytes percent-encoded.
fn log_name(key: &str) -> String {
    let mut s = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.starts_with('.') {
        s.replace_range(0..1, "%2E");
    }
    s
}
