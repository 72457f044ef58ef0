//! The run loop: steps in order, each recorded in the journal before and after it runs.
//!
//! The engine knows backends only through their traits (`FileSystem`, `Mover`, `Executor`) and
//! tells the world what happens only through [`events::Reporter`].

pub mod events;
mod process;
mod slots;
mod steps;
pub use steps::export_paths;
pub mod tasks;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use crate::executor::Executor;
use crate::filesystem::{FileSystem, FsError};
use crate::journal::{Journal, JournalError, RunRecord, RunStatus, StepRecord, StepState, now_ms};
use crate::mover::{Mover, MoverError};
use crate::spec::{Action, Pipeline};
use events::{Event, Reporter};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("step `{step}` failed: {message}")]
    StepFailed { step: String, message: String },
    #[error("interrupted; `stage run` resumes where this run stopped")]
    Interrupted,
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Mover(MoverError),
}

impl From<MoverError> for EngineError {
    fn from(e: MoverError) -> Self {
        match e {
            MoverError::Interrupted => EngineError::Interrupted,
            e => EngineError::Mover(e),
        }
    }
}

/// The backends one target provides.
pub struct Backends {
    pub fs: Arc<dyn FileSystem>,
    /// The file system's own HSM (AMLFS jobs; on the local target, their emulation).
    pub mover: Arc<dyn Mover>,
    /// `stage` copying by itself (`mover: direct`).
    pub direct: Arc<dyn Mover>,
    pub executor: Arc<dyn Executor>,
}

impl Backends {
    pub fn mover(&self, kind: crate::spec::MoverKind) -> &Arc<dyn Mover> {
        match kind {
            crate::spec::MoverKind::Hsm => &self.mover,
            crate::spec::MoverKind::Direct => &self.direct,
        }
    }
}

/// Set by SIGINT/SIGTERM; steps stop starting work and wind down.
#[derive(Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Cancel {
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        if self.is_set() {
            return;
        }
        notified.await
    }
}

pub struct Engine {
    pub pipeline: Pipeline,
    pub journal: Arc<Journal>,
    pub state_dir: PathBuf,
    pub reporter: Arc<dyn Reporter>,
    pub backends: Backends,
    pub cancel: Cancel,
}

/// Finished runs (with their step and task records and logs) kept per pipeline.
pub const KEEP_RUNS: usize = 20;

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Start a new run even if the latest one is unfinished.
    pub new: bool,
    /// Allow teardown of a file system this state did not create.
    pub force: bool,
    /// On Ctrl-C leave server-side jobs running (a resumed run finds them) instead of
    /// cancelling them.
    pub detach: bool,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run: u64,
    pub did_work: bool,
}

/// What a finished step reports.
pub(crate) struct StepResult {
    pub summary: String,
    pub did_work: bool,
    pub detail: serde_json::Value,
}

impl Engine {
    fn emit(&self, e: Event) {
        self.reporter.event(&e);
    }

    pub async fn run(&self, opts: RunOptions) -> Result<RunOutcome, EngineError> {
        let started = Instant::now();
        let p = &self.pipeline;
        let latest = self.journal.latest_run(&p.name)?;
        let (mut run, resumed) = match latest {
            Some(mut r) if !r.status.is_finished() => {
                if opts.new {
                    r.status = RunStatus::Abandoned;
                    self.journal.put_run(&r)?;
                    (
                        self.journal
                            .new_run(&p.name, &p.path.display().to_string())?,
                        false,
                    )
                } else {
                    r.status = RunStatus::Running;
                    self.journal.put_run(&r)?;
                    self.journal.flush()?;
                    (r, true)
                }
            }
            _ => (
                self.journal
                    .new_run(&p.name, &p.path.display().to_string())?,
                false,
            ),
        };
        self.emit(Event::RunStarted {
            run: run.id,
            pipeline: p.name.clone(),
            resumed,
        });
        let mut result = self.run_steps(&run, opts).await;
        if result.is_ok()
            && let Err(e) = self.backends.executor.release().await
        {
            // The work is done and recorded; a pool left running costs money, so say so.
            result = Err(EngineError::StepFailed {
                step: "pool".into(),
                message: e.to_string(),
            });
        }
        run.finished_ms = Some(now_ms());
        run.status = match &result {
            Ok(_) => RunStatus::Succeeded,
            Err(EngineError::Interrupted) => RunStatus::Interrupted,
            Err(_) => RunStatus::Failed,
        };
        if let Ok(did) = &result {
            run.did_work = *did || resumed;
        }
        run.error = result.as_ref().err().map(|e| e.to_string());
        self.journal.put_run(&run)?;
        self.journal.flush()?;
        if result.is_ok() {
            // Cron runs a pipeline every few minutes: keep the journal and logs bounded.
            for old in self.journal.prune(&self.pipeline.name, KEEP_RUNS)? {
                let logs = self
                    .state_dir
                    .join("logs")
                    .join(&self.pipeline.name)
                    .join(old.to_string());
                let _ = std::fs::remove_dir_all(logs);
                let _ = std::fs::remove_file(crate::report::html::default_path(
                    &self.state_dir,
                    &self.pipeline.name,
                    old,
                ));
            }
            self.journal.flush()?;
        }
        self.emit(Event::RunFinished {
            run: run.id,
            status: match run.status {
                RunStatus::Succeeded => "succeeded",
                RunStatus::Interrupted => "interrupted",
                _ => "failed",
            },
            did_work: run.did_work,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        self.reporter.finish();
        result.map(|_| RunOutcome {
            run: run.id,
            did_work: run.did_work,
        })
    }

    async fn run_steps(&self, run: &RunRecord, opts: RunOptions) -> Result<bool, EngineError> {
        let mut did_work = false;
        for (index, step) in self.pipeline.steps.iter().enumerate() {
            if self.cancel.is_set() {
                return Err(EngineError::Interrupted);
            }
            // A digest, not the text: a definition holds `env` values, which may be secrets.
            // It covers where the step works too (target, account, file system): an import
            // finished into one file system is not done for another that took its name.
            let p = &self.pipeline;
            let definition = crate::digest::md5_hex(
                format!(
                    "{:?}|{:?}|{:?}|{:?}",
                    step.action, p.target, p.azure, p.filesystem
                )
                .as_bytes(),
            );
            if let Some(rec) = self.journal.step(run.id, index)?
                && rec.state == StepState::Done
                && rec.definition == definition
            {
                self.emit(Event::StepAlreadyDone {
                    step: step.name.clone(),
                });
                continue;
            }
            let mut rec = StepRecord {
                name: step.name.clone(),
                kind: step.action.kind().to_string(),
                state: StepState::Running,
                definition,
                started_ms: now_ms(),
                finished_ms: None,
                summary: serde_json::Value::Null,
            };
            self.journal.put_step(run.id, index, &rec)?;
            self.journal.flush()?;
            self.emit(Event::StepStarted {
                index,
                step: step.name.clone(),
                kind: step.action.kind(),
            });
            let result = match &step.action {
                Action::Ensure => self.ensure().await,
                Action::Import(i) => self.import(opts, run, step, i).await,
                Action::Process(p) => self.process(run, index, step, p).await,
                Action::Export(e) => self.export(run, step, e).await,
                Action::Teardown => self.teardown(run, opts).await,
            };
            rec.finished_ms = Some(now_ms());
            match result {
                Ok(r) => {
                    rec.state = StepState::Done;
                    rec.summary = r.detail;
                    self.journal.put_step(run.id, index, &rec)?;
                    self.journal.flush()?;
                    did_work |= r.did_work;
                    self.emit(Event::StepFinished {
                        step: step.name.clone(),
                        summary: r.summary,
                        did_work: r.did_work,
                    });
                }
                Err(e) => {
                    rec.state = StepState::Failed;
                    rec.summary = serde_json::json!({ "error": e.to_string() });
                    self.journal.put_step(run.id, index, &rec)?;
                    self.journal.flush()?;
                    if !matches!(e, EngineError::Interrupted) {
                        self.emit(Event::StepFailed {
                            step: step.name.clone(),
                            error: match &e {
                                EngineError::StepFailed { message, .. } => message.clone(),
                                other => other.to_string(),
                            },
                        });
                    }
                    return Err(e);
                }
            }
        }
        Ok(did_work)
    }
}
