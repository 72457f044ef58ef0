use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::events::{Event, Reporter};

/// What a running `stage run` says about itself, for `stage status` from another terminal
/// (the journal is locked while a run holds it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub pid: u32,
    pub run: u64,
    pub pipeline: String,
    pub step: String,
    pub tasks_total: usize,
    pub tasks_done: usize,
    pub tasks_failed: usize,
    pub files: u64,
    pub bytes: u64,
    pub updated_ms: u64,
}

/// Keeps `STATE_DIR/progress.json` current, at most once a second, and removes it at the end.
pub struct SnapshotReporter {
    path: PathBuf,
    state: Mutex<(Progress, Option<Instant>)>,
}

const EVERY: Duration = Duration::from_secs(1);

impl SnapshotReporter {
    pub fn new(state_dir: &std::path::Path) -> Self {
        SnapshotReporter {
            path: state_dir.join("progress.json"),
            state: Mutex::new((
                Progress {
                    pid: std::process::id(),
                    ..Progress::default()
                },
                None,
            )),
        }
    }

    /// Reads the snapshot a running `stage run` keeps, if any.
    pub fn read(state_dir: &std::path::Path) -> Option<Progress> {
        let text = std::fs::read(state_dir.join("progress.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn write(&self, p: &Progress) {
        let tmp = self.path.with_extension("json.tmp");
        if let Ok(bytes) = serde_json::to_vec(p)
            && std::fs::write(&tmp, bytes).is_ok()
        {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}

impl Reporter for SnapshotReporter {
    fn event(&self, event: &Event) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let (p, last) = &mut *guard;
        let mut now = false;
        match event {
            Event::RunStarted { run, pipeline, .. } => {
                p.run = *run;
                p.pipeline = pipeline.clone();
                now = true;
            }
            Event::StepStarted { step, .. } => {
                p.step = step.clone();
                p.tasks_total = 0;
                p.tasks_done = 0;
                p.tasks_failed = 0;
                p.files = 0;
                p.bytes = 0;
                now = true;
            }
            Event::TasksPlanned { to_run, .. } => p.tasks_total = *to_run,
            Event::TaskFinished { .. } => p.tasks_done += 1,
            Event::TaskFailed {
                will_retry: false, ..
            } => p.tasks_failed += 1,
            Event::Transfer { tally, .. } => {
                p.files = tally.files;
                p.bytes = tally.bytes;
            }
            Event::RunFinished { .. } => {
                let _ = std::fs::remove_file(&self.path);
                return;
            }
            _ => {}
        }
        if now || last.is_none_or(|l| l.elapsed() >= EVERY) {
            p.updated_ms = crate::journal::now_ms();
            *last = Some(Instant::now());
            self.write(p);
        }
    }
}
