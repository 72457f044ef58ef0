//! A process step's tasks: expanding globs into tasks, and deciding which must run.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::journal::{DoneRecord, Journal, JournalError, Stamp};
use crate::spec::ProcessStep;
use crate::spec::template::{Binding, Bindings, Layered};

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
    /// Two tasks writing one path: one result would be lost while both said up to date.
    #[error(
        "tasks `{first}` and `{second}` would both write `{output}`; give each task its own \
         outputs (`{{{{rel}}}}` or `{{{{name}}}}` tell apart inputs that share a `{{{{stem}}}}`)"
    )]
    SameOutput {
        output: String,
        first: String,
        second: String,
    },
}

/// Files matched by the globs under `root`, relative, sorted and unique.
///
/// A walker of our own rather than the glob crate: it reads each directory once and takes file
/// types from the directory entries, so listing a million inputs costs no `stat` per file.
/// `*`, `?`, `[...]` match within one path component (names starting with `.` only when the
/// pattern does); `**` matches any number of directories.
pub fn matches(root: &Path, globs: &[String]) -> Result<Vec<String>, ExpandError> {
    let mut out = Vec::new();
    for g in globs {
        walk_match(root, "", &compile(g)?, &mut out)?;
    }
    // One glob over uniform names comes out of the walk sorted already; checking is O(n).
    if !out.is_sorted() {
        out.sort_unstable();
    }
    out.dedup();
    Ok(out)
}

fn compile(g: &str) -> Result<Vec<Comp>, ExpandError> {
    g.split('/')
        .filter(|c| !c.is_empty())
        .map(|c| {
            if c == "**" {
                Ok(Comp::AnyDirs)
            } else if c.contains(['*', '?', '[']) {
                glob::Pattern::new(c)
                    .map(Comp::Pattern)
                    .map_err(|e| ExpandError::Glob {
                        pattern: g.to_string(),
                        message: e.msg.to_string(),
                    })
            } else {
                Ok(Comp::Literal(c.to_string()))
            }
        })
        .collect()
}

/// Whether a relative path (of a file that does not exist yet) is one `glob` would match, by
/// the rules the walk in [`matches`] applies.
pub fn glob_matches(glob: &str, rel: &str) -> bool {
    fn go(comps: &[Comp], parts: &[&str]) -> bool {
        match (comps.first(), parts.first()) {
            (None, None) => true,
            // A trailing `**`: any file below, through no hidden name.
            (Some(Comp::AnyDirs), _) if comps.len() == 1 => {
                !parts.is_empty() && parts.iter().all(|p| !p.starts_with('.'))
            }
            (Some(Comp::AnyDirs), _) => {
                // Zero directories, or one more (not hidden); the last part is the file.
                go(&comps[1..], parts)
                    || (parts.len() > 1 && !parts[0].starts_with('.') && go(comps, &parts[1..]))
            }
            (Some(Comp::Literal(l)), Some(p)) => l == p && go(&comps[1..], &parts[1..]),
            (Some(Comp::Pattern(pat)), Some(p)) => {
                pat.matches_with(p, MATCH) && go(&comps[1..], &parts[1..])
            }
            _ => false,
        }
    }
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    compile(glob).is_ok_and(|comps| go(&comps, &parts))
}

enum Comp {
    Literal(String),
    Pattern(glob::Pattern),
    AnyDirs,
}

const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// File or directory, following symlinks only when the entry is one.
fn kind(root: &Path, rel: &str, ft: Option<std::fs::FileType>) -> (bool, bool) {
    match ft {
        Some(ft) if !ft.is_symlink() => (ft.is_file(), ft.is_dir()),
        _ => match std::fs::metadata(root.join(rel)) {
            Ok(m) => (m.is_file(), m.is_dir()),
            Err(_) => (false, false),
        },
    }
}

fn entries(root: &Path, rel: &str) -> Result<Vec<(String, std::fs::FileType)>, ExpandError> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        match e.file_name().into_string() {
            Ok(name) => out.push((name, ft)),
            Err(name) => {
                return Err(ExpandError::NotUtf8 {
                    path: join(rel, &name.to_string_lossy()),
                });
            }
        }
    }
    Ok(out)
}

fn walk_match(
    root: &Path,
    rel: &str,
    comps: &[Comp],
    out: &mut Vec<String>,
) -> Result<(), ExpandError> {
    let Some((first, rest)) = comps.split_first() else {
        return Ok(());
    };
    match first {
        Comp::Literal(name) => {
            let child = join(rel, name);
            let (file, dir) = kind(root, &child, None);
            if rest.is_empty() {
                if file {
                    out.push(child);
                }
            } else if dir {
                walk_match(root, &child, rest, out)?;
            }
        }
        Comp::Pattern(p) => {
            for (name, ft) in entries(root, rel)? {
                if !p.matches_with(&name, MATCH) {
                    continue;
                }
                let child = join(rel, &name);
                let (file, dir) = kind(root, &child, Some(ft));
                if rest.is_empty() {
                    if file {
                        out.push(child);
                    }
                } else if dir {
                    walk_match(root, &child, rest, out)?;
                }
            }
        }
        Comp::AnyDirs => {
            if rest.is_empty() {
                // A trailing `**`: every file below.
                for (name, ft) in entries(root, rel)? {
                    if name.starts_with('.') {
                        continue;
                    }
                    let child = join(rel, &name);
                    let (file, dir) = kind(root, &child, Some(ft));
                    if file {
                        out.push(child);
                    } else if dir {
                        walk_match(root, &child, comps, out)?;
                    }
                }
                return Ok(());
            }
            walk_match(root, rel, rest, out)?;
            for (name, ft) in entries(root, rel)? {
                if name.starts_with('.') {
                    continue;
                }
                let child = join(rel, &name);
                if kind(root, &child, Some(ft)).1 {
                    walk_match(root, &child, comps, out)?;
                }
            }
        }
    }
    Ok(())
}

fn input_bindings(root: &Path, rel: &str, b: &mut Vec<(&'static str, Binding)>) {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let stem = name.split('.').next().unwrap_or(name);
    let stem = if stem.is_empty() { name } else { stem };
    b.push(("input", Binding::One(root.join(rel).display().to_string())));
    b.push(("rel", Binding::One(rel.to_string())));
    b.push(("name", Binding::One(name.to_string())));
    b.push(("stem", Binding::One(stem.to_string())));
    b.push(("dir", Binding::One(dir.to_string())));
}

/// A process step's tasks, rendered one at a time: a million inputs cost a million keys in
/// memory, not a million rendered commands.
pub struct Expansion<'a> {
    step: &'a ProcessStep,
    root: PathBuf,
    base: Bindings,
    shared: Vec<String>,
    keys: Vec<Option<String>>,
}

/// Expands a process step's globs (one task per `foreach` match, or one task).
pub fn expand<'a>(
    step_name: &str,
    p: &'a ProcessStep,
    root: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<Expansion<'a>, ExpandError> {
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
    let e = Expansion {
        step: p,
        root: root.to_path_buf(),
        base,
        shared,
        keys,
    };
    e.check_outputs_unique()?;
    Ok(e)
}

impl Expansion<'_> {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn tasks(&self) -> impl Iterator<Item = Result<Task, ExpandError>> + '_ {
        self.keys.iter().map(|k| self.task(k.as_deref()))
    }

    /// The key of task `i` (its input's relative path, or [`SINGLE`]).
    pub fn key(&self, i: usize) -> &str {
        self.keys
            .get(i)
            .and_then(|k| k.as_deref())
            .unwrap_or(SINGLE)
    }

    /// Task `i`, rendered.
    pub fn task_at(&self, i: usize) -> Result<Task, ExpandError> {
        self.task(self.keys.get(i).and_then(|k| k.as_deref()))
    }

    /// The task a `foreach` step would have for an input that does not exist yet.
    pub fn task_for(&self, key: &str) -> Result<Task, ExpandError> {
        self.task(Some(key))
    }

    /// Refuses two tasks that render one output path. Only a 64-bit hash of each path is
    /// held (16 bytes a task); a shared hash is rendered again to tell a real clash.
    fn check_outputs_unique(&self) -> Result<(), ExpandError> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        if self.keys.len() < 2 || self.step.outputs.is_empty() {
            return Ok(());
        }
        let hasher = BuildHasherDefault::<DefaultHasher>::default();
        let mut seen: HashMap<u64, usize> = HashMap::with_capacity(self.keys.len());
        for (i, key) in self.keys.iter().enumerate() {
            let mut own = Vec::with_capacity(5);
            for out in self.outputs(key.as_deref(), &mut own)? {
                let h = hasher.hash_one(&out);
                let Some(&j) = seen.get(&h) else {
                    seen.insert(h, i);
                    continue;
                };
                let mut theirs = Vec::with_capacity(5);
                if j != i
                    && self
                        .outputs(self.keys[j].as_deref(), &mut theirs)?
                        .contains(&out)
                {
                    return Err(ExpandError::SameOutput {
                        output: out,
                        first: self.key(j).to_string(),
                        second: self.key(i).to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The task's outputs, relative; `own` receives its input's bindings.
    fn outputs(
        &self,
        key: Option<&str>,
        own: &mut Vec<(&'static str, Binding)>,
    ) -> Result<Vec<String>, ExpandError> {
        if let Some(rel) = key {
            input_bindings(&self.root, rel, own);
        }
        let mut outputs = Vec::with_capacity(self.step.outputs.len());
        for t in &self.step.outputs {
            let b = Layered {
                top: own,
                base: &self.base,
            };
            let out = t.render_raw(&b).map_err(ExpandError::Unbound)?;
            let out = out.trim_start_matches('/').to_string();
            if crate::mover::names::check(&out).is_err() {
                return Err(ExpandError::Escape(out));
            }
            outputs.push(out);
        }
        Ok(outputs)
    }

    fn task(&self, key: Option<&str>) -> Result<Task, ExpandError> {
        let root = &self.root;
        let mut own: Vec<(&'static str, Binding)> = Vec::with_capacity(7);
        let mut inputs = Vec::with_capacity(self.shared.len() + 1);
        let outputs = self.outputs(key, &mut own)?;
        if let Some(rel) = key {
            inputs.push(rel.to_string());
        }
        inputs.extend(self.shared.iter().cloned());
        let abs: Vec<String> = outputs
            .iter()
            .map(|o| root.join(o).display().to_string())
            .collect();
        if let Some(first) = abs.first() {
            own.push(("output", Binding::One(first.clone())));
        }
        own.push(("outputs", Binding::Many(abs)));
        let b = Layered {
            top: &own,
            base: &self.base,
        };
        let command = self
            .step
            .command
            .render_shell(&b)
            .map_err(ExpandError::Unbound)?;
        Ok(Task {
            key: key.unwrap_or(SINGLE).to_string(),
            command,
            inputs,
            outputs,
        })
    }
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
    /// A task that runs before it in this run will write one of its inputs.
    Upstream {
        path: String,
        by: String,
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
            Why::Upstream { path, by } => write!(f, "input {path} will be written by {by}"),
        }
    }
}

/// `61728 bytes, modified 2026-11-26 07:13:08.602038423Z`: nanoseconds shown, since a
/// `touch` within the same second is a change too.
fn describe(s: &Stamp) -> String {
    let secs = s.mtime_ns.div_euclid(1_000_000_000);
    let nanos = s.mtime_ns.rem_euclid(1_000_000_000);
    let when = crate::clock::readable(secs.max(0) as u64);
    format!(
        "{} bytes, modified {}.{nanos:09}Z",
        s.size,
        when.trim_end_matches('Z')
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

/// A task to run (its index in the expansion) and the first reason it must.
pub type ToRun = (usize, Why);

/// A step's tasks split into those to run and the number up to date. A task that never
/// completed is decided from its key alone; only the others are rendered and their inputs
/// stat'ed, so planning a million new inputs costs a journal lookup each.
pub fn triage(
    journal: &Journal,
    pipeline: &str,
    step: &str,
    root: &Path,
    expansion: &Expansion,
) -> Result<(Vec<ToRun>, usize), TriageError> {
    let mut run = Vec::new();
    let mut fresh = 0;
    // Keys are sorted and so is the journal: walk both in step (a merge join) instead of a
    // point lookup per task.
    let mut done_records = journal.done_scan(pipeline, step).peekable();
    for i in 0..expansion.len() {
        let key = expansion.key(i);
        let mut found = None;
        while let Some(next) = done_records.peek() {
            match next {
                Ok((k, _)) if k.as_str() < key => {
                    done_records.next();
                }
                Ok((k, _)) if k.as_str() == key => {
                    found = done_records.next().transpose()?.map(|(_, d)| d);
                    break;
                }
                Ok(_) => break,
                Err(_) => {
                    done_records.next().transpose()?;
                }
            }
        }
        let why = match found {
            None => Some(Why::NeverRun),
            Some(done) => {
                let task = expansion.task_at(i)?;
                reasons(root, &task, &current(root, &task), Some(&done))
                    .into_iter()
                    .next()
            }
        };
        match why {
            Some(why) => run.push((i, why)),
            None => fresh += 1,
        }
    }
    Ok((run, fresh))
}

#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Expand(#[from] ExpandError),
}

/// Where a step's task logs go: `logs/<pipeline>/<run>/<step>/`.
pub fn log_dir(state: &Path, pipeline: &str, run: u64, step: &str) -> PathBuf {
    state
        .join("logs")
        .join(pipeline)
        .join(run.to_string())
        .join(step)
}

/// A task attempt's output files in its step's log directory: `<task>.<attempt>.{out,err}`.
pub fn log_files(dir: &Path, key: &str, attempt: u32) -> (PathBuf, PathBuf) {
    let name = format!("{}.{attempt}", log_name(key));
    (
        dir.join(format!("{name}.out")),
        dir.join(format!("{name}.err")),
    )
}

/// The last `lines` lines of a task log (from its last 4 KiB: enough for an error message,
/// bounded for a log of gigabytes).
pub fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A task key as one safe file name: path separators and odd bytes percent-encoded.
fn log_name(key: &str) -> String {
    let mut s = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    if s.starts_with('.') {
        s.replace_range(0..1, "%2E");
    }
    // A file name holds 255 bytes, with `.ATTEMPT.out` still to come; encoding can triple a
    // name's length. A long one keeps its start (for people) and a digest of the whole
    // (for uniqueness).
    if s.len() > LOG_NAME_MAX {
        let mut cut = LOG_NAME_MAX - 34;
        // Never inside a `%XX`.
        while s[..cut].ends_with('%') || s[..cut.saturating_sub(1)].ends_with('%') {
            cut -= 1;
        }
        s = format!("{}~{}", &s[..cut], crate::digest::md5_hex(key.as_bytes()));
    }
    s
}

/// Bytes of a log name before `.ATTEMPT.{out,err}`: room for attempts into the millions.
const LOG_NAME_MAX: usize = 230;

#[cfg(test)]
mod tests {
    #[test]
    fn a_path_matches_a_glob_as_the_walk_would() {
        use super::glob_matches as m;
        assert!(m("checksums/**/*.sha256", "checksums/a/b/c.sha256"));
        assert!(m("checksums/**/*.sha256", "checksums/c.sha256"));
        assert!(m("results/qc/*.tsv", "results/qc/S1.tsv"));
        assert!(!m("results/qc/*.tsv", "results/qc/x/S1.tsv"));
        assert!(!m("results/qc/*.tsv", "results/qc/.S1.tsv"));
        assert!(!m("results/*", "results"));
        assert!(m("in/a.txt", "in/a.txt"));
        assert!(!m("**/x", "x/y"));
        assert!(m("out/**", "out/a/b"));
        assert!(!m("out/**", "out/.git/b"));
        assert!(!m("**/*.tsv", ".cache/a.tsv"));
    }

    #[test]
    fn a_changed_input_reads_as_a_date_to_the_nanosecond() {
        let s = super::Stamp {
            path: "a".into(),
            size: 5,
            mtime_ns: 1_795_633_265_000_000_001,
        };
        assert_eq!(
            super::describe(&s),
            "5 bytes, modified 2026-11-25 19:01:05.000000001Z"
        );
    }

    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        d
    }

    fn m(root: &Path, g: &str) -> Vec<String> {
        matches(root, &[g.to_string()]).unwrap()
    }

    #[test]
    fn globs_match_like_a_shell_with_globstar() {
        let d = tree(&[
            "a/x.txt",
            "a/y.csv",
            "a/.hidden.txt",
            "a/b/z.txt",
            "a/b/c/w.txt",
            "top.txt",
        ]);
        let r = d.path();
        assert_eq!(m(r, "a/*.txt"), ["a/x.txt"]);
        assert_eq!(m(r, "a/.*.txt"), ["a/.hidden.txt"]);
        assert_eq!(m(r, "a/**/*.txt"), ["a/b/c/w.txt", "a/b/z.txt", "a/x.txt"]);
        assert_eq!(
            m(r, "a/**"),
            ["a/b/c/w.txt", "a/b/z.txt", "a/x.txt", "a/y.csv"]
        );
        assert_eq!(m(r, "*/b/?.txt"), ["a/b/z.txt"]);
        assert_eq!(m(r, "top.txt"), ["top.txt"]);
        assert!(m(r, "a/b").is_empty(), "directories are not inputs");
        assert!(m(r, "missing/*").is_empty());
        assert_eq!(
            matches(r, &["a/*.txt".into(), "a/x.*".into()]).unwrap(),
            ["a/x.txt"]
        );
    }

    #[test]
    fn log_names_are_single_safe_components() {
        assert_eq!(log_name("samples/S1.fastq.gz"), "samples%2FS1.fastq.gz");
        assert_eq!(log_name("../x"), "%2E.%2Fx");
        assert_eq!(log_name("a b\n"), "a%20b%0A");
        let long = format!("in/{}", "ü".repeat(2000));
        let name = log_name(&long);
        assert!(name.len() <= LOG_NAME_MAX, "{}", name.len());
        assert!(name.starts_with("in%2F%C3%BC"));
        assert_ne!(name, log_name(&format!("{long}x")));
    }
}
