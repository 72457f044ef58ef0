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
    /// When the current step started, so a reader can work out rates and an ETA.
    #[serde(default)]
    pub step_started_ms: u64,
    /// The current step's transfer, if it moves files: done, found so far, listing finished.
    #[serde(flatten)]
    pub transfer: crate::mover::Tally,
    pub updated_ms: u64,
}

impl Progress {
    /// Follows the run's events; true for those worth writing down at once (a new run or
    /// step). `updated_ms` is the time of the last event.
    pub fn apply(&mut self, event: &Event) -> bool {
        self.updated_ms = crate::journal::now_ms();
        match event {
            Event::RunStarted { run, pipeline, .. } => {
                self.run = *run;
                self.pipeline = pipeline.clone();
                return true;
            }
            Event::StepStarted { step, .. } => {
                self.step = step.clone();
                self.tasks_total = 0;
                self.tasks_done = 0;
                self.tasks_failed = 0;
                self.transfer = crate::mover::Tally::default();
                self.step_started_ms = self.updated_ms;
                return true;
            }
            Event::TasksPlanned { to_run, .. } => self.tasks_total = *to_run,
            Event::TaskFinished { .. } => self.tasks_done += 1,
            Event::TaskFailed {
                will_retry: false, ..
            } => self.tasks_failed += 1,
            Event::Transfer { tally, .. } => self.transfer = *tally,
            _ => {}
        }
        false
    }

    /// `step qc: 3 of 10 tasks done, 0 failed`, or for a transfer the line its progress bar
    /// shows (`step import: 120/2000 files, 7.50 MiB/125.00 MiB, 30.00 MiB/s, eta 4s`), as of
    /// the snapshot's time.
    pub fn step_line(&self) -> String {
        let t = &self.transfer;
        let elapsed = Duration::from_millis(self.updated_ms.saturating_sub(self.step_started_ms));
        if self.tasks_total > 0 || (t.files == 0 && t.found_files == 0) {
            let mut s = format!(
                "step {}: {} of {} tasks done, {} failed",
                self.step, self.tasks_done, self.tasks_total, self.tasks_failed
            );
            let ended = self.tasks_done + self.tasks_failed;
            if ended > 0 && ended < self.tasks_total {
                let left = elapsed.mul_f64((self.tasks_total - ended) as f64 / ended as f64);
                s += &format!(", eta {}", super::transfer::short(left));
            }
            return s;
        }
        super::transfer::line(&format!("step {}:", self.step), t, elapsed)
    }
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
        if let Event::RunFinished { .. } = event {
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        let now = p.apply(event);
        if now || last.is_none_or(|l| l.elapsed() >= EVERY) {
            *last = Some(Instant::now());
            self.write(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mover::Tally;

    #[test]
    fn a_process_step_reads_as_task_counts_and_a_transfer_as_its_progress_line() {
        let mut p = Progress {
            step: "qc".into(),
            tasks_total: 10,
            tasks_done: 3,
            tasks_failed: 1,
            step_started_ms: 1_000,
            updated_ms: 9_000,
            ..Progress::default()
        };
        assert_eq!(
            p.step_line(),
            "step qc: 3 of 10 tasks done, 1 failed, eta 12s"
        );
        p.tasks_done = 0;
        p.tasks_failed = 0;
        assert_eq!(p.step_line(), "step qc: 0 of 10 tasks done, 0 failed");
        p = Progress {
            step: "import".into(),
            step_started_ms: 10_000,
            updated_ms: 14_000,
            transfer: Tally {
                files: 500,
                bytes: 4 << 20,
                found_files: 1000,
                found_bytes: 8 << 20,
                listed: true,
            },
            ..Progress::default()
        };
        assert_eq!(
            p.step_line(),
            "step import: 500/1000 files, 4.00 MiB/8.00 MiB, 1.00 MiB/s, eta 4s"
        );
    }

    #[test]
    fn a_snapshot_round_trips_through_its_file_format() {
        let p = Progress {
            pid: 42,
            step: "export".into(),
            transfer: Tally {
                files: 2,
                found_files: 3,
                ..Tally::default()
            },
            ..Progress::default()
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("\"found_files\":3"), "{text}");
        let back: Progress = serde_json::from_str(&text).unwrap();
        assert_eq!(back.transfer, p.transfer);
        assert_eq!(back.pid, 42);
    }
}
