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
pub mod unchanged;
pub mod upstream;

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
    /// The HSM container, read by a pipeline that tears its file system down to decide
    /// whether a new run has anything to do ([`unchanged`]).
    pub container: Arc<dyn crate::store::BlobStore>,
}

impl Backends {
    pub fn mover(&self, kind: crate::spec::MoverKind) -> &Arc<dyn Mover> {
        match kind {
            crate::spec::MoverKind::Hsm => &self.mover,
            crate::spec::MoverKind::Direct => &self.direct,
        }
    }

    /// What an import step would do, changing nothing (for `plan` and `explain`).
    pub async fn import_dry_run(
        &self,
        i: &crate::spec::ImportStep,
    ) -> Result<crate::mover::ImportReport, EngineError> {
        let req = crate::mover::ImportRequest {
            job: String::new(),
            prefixes: i.prefixes.clone(),
            conflict: i.conflict,
            max_errors: i.max_errors,
            dry_run: true,
            cancel: None,
            detach: false,
        };
        Ok(self.mover(i.mover).import(req, Box::new(|_| {})).await?)
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

    /// Cron runs a pipeline every few minutes: keep the journal, logs and reports bounded.
    fn prune(&self) -> Result<(), EngineError> {
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
        Ok(())
    }

    /// Records a run that found the container and the pipeline as run `since` left them,
    /// and reports it as one with nothing to do.
    fn unchanged_run(
        &self,
        since: u64,
        fingerprint: String,
        started: Instant,
    ) -> Result<RunOutcome, EngineError> {
        let p = &self.pipeline;
        let mut run = self
            .journal
            .new_run(&p.name, &p.path.display().to_string())?;
        self.emit(Event::RunStarted {
            run: run.id,
            pipeline: p.name.clone(),
            resumed: false,
        });
        self.emit(Event::Unchanged { since });
        run.status = RunStatus::Succeeded;
        run.finished_ms = Some(now_ms());
        run.fingerprint = Some(fingerprint);
        self.journal.put_run(&run)?;
        self.journal.flush()?;
        self.prune()?;
        self.emit(Event::RunFinished {
            run: run.id,
            status: "succeeded",
            did_work: false,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        self.reporter.finish();
        Ok(RunOutcome {
            run: run.id,
            did_work: false,
        })
    }

    pub async fn run(&self, opts: RunOptions) -> Result<RunOutcome, EngineError> {
        let started = Instant::now();
        let p = &self.pipeline;
        let latest = self.journal.latest_run(&p.name)?;
        // A pipeline whose file system is gone after each run: nothing to do if the
        // container and the pipeline are as the last successful run left them.
        let fingerprint = match &latest {
            Some(r)
                if r.status == RunStatus::Succeeded
                    && r.fingerprint.is_some()
                    && !opts.new
                    && unchanged::applies(p) =>
            {
                Some(
                    unchanged::fingerprint(p, self.backends.container.as_ref())
                        .await
                        .map_err(|e| EngineError::StepFailed {
                            step: "container".into(),
                            message: e.to_string(),
                        })?,
                )
            }
            _ => None,
        };
        if let (Some(now), Some(last)) = (&fingerprint, &latest)
            && last.fingerprint.as_ref() == Some(now)
        {
            return self.unchanged_run(last.id, now.clone(), started);
        }
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
        if result.is_ok() && unchanged::applies(p) {
            // What the next run compares with: the container as this run leaves it. Unread,
            // the next run simply runs.
            run.fingerprint = unchanged::fingerprint(p, self.backends.container.as_ref())
                .await
                .inspect_err(|e| tracing::warn!("cannot list the container: {e}"))
                .ok();
        }
        self.journal.put_run(&run)?;
        self.journal.flush()?;
        if result.is_ok() {
            self.prune()?;
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
            let before = self.journal.step(run.id, index)?;
            if let Some(rec) = &before
                && rec.state == StepState::Done
                && rec.definition == definition
            {
                self.emit(Event::StepAlreadyDone {
                    step: step.name.clone(),
                });
                continue;
            }
            // A step resumed by a later process began when the first one started it: the
            // report shows its whole span, not the last process's share.
            let started_ms = before
                .filter(|r| r.definition == definition)
                .map_or_else(now_ms, |r| r.started_ms);
            let mut rec = StepRecord {
                name: step.name.clone(),
                kind: step.action.kind().to_string(),
                state: StepState::Running,
                definition,
                started_ms,
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
                Action::Export(e) => self.export(opts, run, step, e).await,
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
