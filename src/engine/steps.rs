//! The data-movement steps: ensure, import, export, teardown.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Engine, EngineError, RunOptions, StepResult};
use crate::engine::events::Event;
use crate::engine::tasks;
use crate::journal::{FsRecord, FsState, RunRecord, now_ms};
use crate::mover::{ExportRequest, ImportRequest, JobStatus, Progress};
use crate::spec::{Action, ExportStep, ImportStep, Pipeline, Step};

/// An export step's paths: those it names plus the declared outputs of the steps it names,
/// expanded against the file system as it is now.
pub fn export_paths(
    pipeline: &Pipeline,
    e: &ExportStep,
    root: &std::path::Path,
) -> Result<Vec<String>, tasks::ExpandError> {
    let mut paths = e.paths.clone();
    for name in &e.outputs_of {
        let found = pipeline.steps.iter().find(|s| &s.name == name);
        if let Some(Step {
            action: Action::Process(p),
            ..
        }) = found
        {
            let expanded = tasks::expand(name, p, root, &pipeline.vars)?;
            for task in expanded.tasks() {
                paths.extend(task?.outputs);
            }
        }
    }
    Ok(paths)
}

impl Engine {
    fn failed(step: &str, message: impl Into<String>) -> EngineError {
        EngineError::StepFailed {
            step: step.to_string(),
            message: message.into(),
        }
    }

    /// Transfer progress, at most ten events a second.
    fn progress(&self, step: &str) -> Progress {
        let reporter = self.reporter.clone();
        let step = step.to_string();
        let last = Mutex::new(Instant::now() - Duration::from_secs(1));
        Box::new(move |tally| {
            let Ok(mut last) = last.lock() else { return };
            if last.elapsed() >= Duration::from_millis(100) {
                *last = Instant::now();
                reporter.event(&Event::Transfer {
                    step: step.clone(),
                    tally,
                });
            }
        })
    }

    fn job_name(&self, run: &RunRecord, step: &Step) -> String {
        format!("stage-{}-r{}-{}", self.pipeline.name, run.id, step.name)
    }

    /// `f`, or `Interrupted` as soon as Ctrl-C or SIGTERM comes, dropping `f`: only for
    /// waits that a resumed run takes up where they stopped.
    async fn unless_cancelled<T>(
        &self,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, EngineError> {
        tokio::select! {
            r = f => Ok(r),
            _ = self.cancel.wait() => Err(EngineError::Interrupted),
        }
    }

    pub(super) async fn ensure(&self) -> Result<StepResult, EngineError> {
        let fs = &self.backends.fs;
        let name = &self.pipeline.filesystem.name;
        let prev = self.journal.filesystem(name)?;
        let record = |state, created_here| FsRecord {
            state,
            created_here,
            location: fs.describe(),
            updated_ms: now_ms(),
        };
        if fs.exists().await? {
            // Provisioning and growth take minutes to hours: Ctrl-C and SIGTERM stop the
            // wait at once, and a resumed run waits on (the service's work goes on).
            self.unless_cancelled(fs.reconcile()).await??;
            // Present: ours if this state created it (or started to), foreign otherwise.
            let ours = prev
                .as_ref()
                .is_some_and(|r| r.created_here && r.state != FsState::Deleted);
            if prev.as_ref().is_none_or(|r| r.state != FsState::Ready) {
                self.journal
                    .put_filesystem(name, &record(FsState::Ready, ours))?;
                self.journal.flush()?;
            }
            return Ok(StepResult {
                summary: format!("{} exists", fs.describe()),
                did_work: false,
                detail: serde_json::json!({ "created": false }),
            });
        }
        self.journal
            .put_filesystem(name, &record(FsState::Creating, true))?;
        self.journal.flush()?;
        crate::failpoint::hit("ensure.after-intent");
        self.unless_cancelled(fs.ensure()).await??;
        self.journal
            .put_filesystem(name, &record(FsState::Ready, true))?;
        self.journal.flush()?;
        Ok(StepResult {
            summary: format!("created {}", fs.describe()),
            did_work: true,
            detail: serde_json::json!({ "created": true }),
        })
    }

    pub(super) async fn import(
        &self,
        opts: RunOptions,
        run: &RunRecord,
        step: &Step,
        i: &ImportStep,
    ) -> Result<StepResult, EngineError> {
        let req = ImportRequest {
            job: self.job_name(run, step),
            prefixes: i.prefixes.clone(),
            conflict: i.conflict,
            max_errors: i.max_errors,
            dry_run: false,
            cancel: Some(self.cancel.clone()),
            detach: opts.detach,
        };
        let report = self
            .backends
            .mover(i.mover)
            .import(req, self.progress(&step.name))
            .await?;
        let detail = serde_json::to_value(&report).unwrap_or_default();
        match report.status {
            JobStatus::Failed => {
                let message = match &report.conflict {
                    Some(path) => format!(
                        "{path} already exists in the file system and differs from its blob; conflict mode `fail` stops here (choose skip, overwrite-if-dirty or overwrite-always)"
                    ),
                    None => format!(
                        "{} error{} (max_errors is {}): {}",
                        report.errors.len(),
                        if report.errors.len() == 1 { "" } else { "s" },
                        i.max_errors,
                        report
                            .errors
                            .iter()
                            .take(5)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                };
                Err(Self::failed(&step.name, message))
            }
            JobStatus::Completed | JobStatus::CompletedPartial => {
                for e in report.errors.iter().take(20) {
                    self.emit(Event::Warning {
                        message: format!("{}: {e}", step.name),
                    });
                }
                Ok(StepResult {
                    summary: report.summary(),
                    did_work: report.did_work(),
                    detail,
                })
            }
        }
    }

    pub(super) async fn export(
        &self,
        opts: RunOptions,
        run: &RunRecord,
        step: &Step,
        e: &ExportStep,
    ) -> Result<StepResult, EngineError> {
        let paths = export_paths(&self.pipeline, e, &self.backends.fs.root())
            .map_err(|err| Self::failed(&step.name, err.to_string()))?;
        let req = ExportRequest {
            // An auto-export job outlives the run: one per pipeline step, not per run.
            job: if e.auto {
                format!("stage-{}-{}", self.pipeline.name, step.name)
            } else {
                self.job_name(run, step)
            },
            paths,
            dry_run: false,
            auto: e.auto,
            cancel: Some(self.cancel.clone()),
            detach: opts.detach,
        };
        let report = self
            .backends
            .mover(e.mover)
            .export(req, self.progress(&step.name))
            .await?;
        if !report.errors.is_empty() {
            return Err(Self::failed(
                &step.name,
                format!(
                    "{} file{} not exported: {}",
                    report.errors.len(),
                    if report.errors.len() == 1 { "" } else { "s" },
                    report
                        .errors
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
        Ok(StepResult {
            summary: report.summary(),
            did_work: report.exported > 0,
            detail: serde_json::to_value(&report).unwrap_or_default(),
        })
    }

    pub(super) async fn teardown(
        &self,
        _run: &RunRecord,
        opts: RunOptions,
    ) -> Result<StepResult, EngineError> {
        let fs = &self.backends.fs;
        let name = &self.pipeline.filesystem.name;
        let rec = self.journal.filesystem(name)?;
        if !fs.exists().await? {
            return Ok(StepResult {
                summary: format!("{} is already gone", fs.describe()),
                did_work: false,
                detail: serde_json::json!({ "deleted": false }),
            });
        }
        let ours = rec.as_ref().is_some_and(|r| r.created_here);
        if !ours && !opts.force {
            return Err(Self::failed(
                "teardown",
                format!(
                    "{} was not created by this state directory, so it is kept (pass --force to delete it anyway)",
                    fs.describe()
                ),
            ));
        }
        // Every export step before this one finished (steps run in order and a failed or
        // unverified export stops the run), so the data is safe in the container.
        self.journal.put_filesystem(
            name,
            &FsRecord {
                state: FsState::Deleting,
                created_here: ours,
                location: fs.describe(),
                updated_ms: now_ms(),
            },
        )?;
        self.journal.flush()?;
        fs.delete().await?;
        self.journal.forget_files(name)?;
        self.journal.put_filesystem(
            name,
            &FsRecord {
                state: FsState::Deleted,
                created_here: ours,
                location: fs.describe(),
                updated_ms: now_ms(),
            },
        )?;
        self.journal.flush()?;
        Ok(StepResult {
            summary: format!("deleted {}", fs.describe()),
            did_work: true,
            detail: serde_json::json!({ "deleted": true }),
        })
    }
}
