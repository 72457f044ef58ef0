//! Test harness: a scratch workspace holding a pipeline, its container and its state, driven
//! through the real `stage` binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const STAGE: &str = env!("CARGO_BIN_EXE_stage");

/// The first line of `out` that `pick` finds something in, within `within`; the output is
/// read to its end on a thread of its own, so the service never blocks on a full pipe.
fn first_line<T: Send + 'static>(
    out: impl std::io::Read + Send + 'static,
    within: std::time::Duration,
    pick: impl Fn(&str) -> Option<T> + Send + 'static,
) -> Option<T> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(v) = pick(&line) {
                let _ = tx.send(v);
            }
        }
    });
    rx.recv_timeout(within).ok()
}

/// The port a service started on port 0 announces in its output, as the number after
/// `marker` on some line; `None` when none came `within`.
pub fn announced_port(
    out: impl std::io::Read + Send + 'static,
    marker: &'static str,
    within: std::time::Duration,
) -> Option<u16> {
    first_line(out, within, move |line| {
        line.split(marker)
            .nth(1)
            .and_then(|p| p.trim().parse::<u16>().ok())
    })
}

/// Whether some line of `out` contains `needle` within `within`.
pub fn announced_line(
    out: impl std::io::Read + Send + 'static,
    needle: &'static str,
    within: std::time::Duration,
) -> bool {
    first_line(out, within, move |line| line.contains(needle).then_some(())).is_some()
}

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// Copies the repository's genomics example (pipeline and data) into the workspace.
    pub fn genomics(&self) -> PathBuf {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy_dir(
            &repo.join("pipelines/data/genomics/reference"),
            &self.path().join("pipelines/data/genomics/reference"),
        );
        copy_dir(
            &repo.join("pipelines/data/genomics/samples"),
            &self.path().join("pipelines/data/genomics/samples"),
        );
        let text = std::fs::read_to_string(repo.join("pipelines/genomics.yaml")).unwrap();
        self.write("pipelines/genomics.yaml", text)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(STAGE);
        c.current_dir(self.path())
            .arg("--state-dir")
            .arg(self.state())
            .args(args)
            .env_remove("STAGE_CRASH_AT")
            .env_remove("STAGE_FAIL_AT")
            .env("NO_COLOR", "1")
            .env("STAGE_LOG", std::env::var("STAGE_LOG").unwrap_or_default());
        c
    }

    pub fn stage(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run stage")
    }

    /// Every file under `rel`, relative path → bytes.
    pub fn tree(&self, rel: &str) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let base = self.path().join(rel);
        collect(&base, &base, &mut out);
        out
    }
}

fn collect(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(base, &p, out);
        } else {
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// Task states of the latest run, from `stage status --output json --tasks`.
pub fn task_states(ws: &Workspace, pipeline: &Path) -> BTreeMap<String, String> {
    // Right after a SIGKILL the state lock can stay held for a moment: a child that was
    // between fork and exec when stage died still has the lock's descriptor until it execs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let o = loop {
        let o = ws.stage(&[
            "status",
            "--output",
            "json",
            "--tasks",
            pipeline.to_str().unwrap(),
        ]);
        if o.status.code() != Some(3) || std::time::Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    let mut out = BTreeMap::new();
    if let Some(steps) = v["steps"].as_array() {
        for s in steps {
            let step = s["step"]["name"].as_str().unwrap_or_default().to_string();
            for t in s["tasks"].as_array().into_iter().flatten() {
                out.insert(
                    format!("{step}/{}", t["key"].as_str().unwrap_or_default()),
                    t["state"].as_str().unwrap_or_default().to_string(),
                );
            }
        }
    }
    out
}

/// Asserts that `haystack` (stdout or stderr bytes) contains `needle`, showing it if not.
#[track_caller]
pub fn assert_has(haystack: &[u8], needle: &str) {
    let t = text(haystack);
    assert!(t.contains(needle), "expected {needle:?} in:\n{t}");
}

/// Asserts that no process working under `dir` (a test's workspace: tasks run in its file
/// system) has a command line holding `pattern`, waiting up to 20 s for stragglers to die (a
/// remote kill is TERM, a second's grace, then KILL). Reads /proc itself: nothing outside the
/// test's own directory is looked at, so parallel tests and the rest of the machine never
/// match.
#[track_caller]
pub fn assert_no_process(dir: &Path, pattern: &str) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = processes_under(&dir, pattern);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running under {}: {left:?}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every process on the machine: its id and command line (arguments joined by spaces).
pub fn processes() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        found.push((pid, cmd.trim().to_string()));
    }
    found
}

pub fn processes_under(dir: &Path, pattern: &str) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|(pid, cmd)| {
            cmd.contains(pattern)
                && std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .map(|(pid, cmd)| format!("{pid}: {cmd}"))
        .collect()
}

/// Waits (at most 30 s) until the file has at least `n` lines.
#[track_caller]
pub fn wait_for_lines(path: &Path, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(path)
        .map(|c| c.lines().count())
        .unwrap_or(0)
        < n
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never reached {n} lines",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
