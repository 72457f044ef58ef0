//! AMLFS runs one HSM job at a time per file system — import, archive, expansion, auto-import
//! and enabled auto-export alike — and refuses a second with 409 rather than queueing it.
//! Everything stage starts there takes its turn through this: it looks at every kind of job
//! (following `nextLink` through paged lists), waits for them to finish, and pauses the
//! auto-export jobs that would otherwise hold the slot for ever.

use std::sync::Arc;

use reqwest::StatusCode;

use super::arm::{Arm, ArmError, Reply};
use super::models::{AmlFilesystem, ImportJob, archive_holds_slot, job_finished};
use super::resources::FsRef;
use crate::engine::Cancel;
use crate::journal::{Journal, JournalError};

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error(transparent)]
    Arm(#[from] Box<ArmError>),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Refused(String),
}

impl From<ArmError> for SlotError {
    fn from(e: ArmError) -> Self {
        SlotError::Arm(Box::new(e))
    }
}

/// What holds a file system's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A job that will end by itself, described for a person.
    Job(String),
    /// An enabled auto-export job, which runs until disabled.
    AutoExport(String),
    /// An enabled auto-import job, which runs until disabled.
    AutoImport(String),
}

pub struct HsmSlot {
    arm: Arc<Arm>,
    fs: FsRef,
    /// Holds the auto-export jobs paused for a turn until they are enabled again, so a run
    /// killed in between does not leave them off.
    journal: Arc<Journal>,
}

/// Auto-export jobs paused for a turn, to be enabled again by [`HsmSlot::release`].
#[must_use = "paused auto-export jobs stay off until released"]
pub struct Turn {
    paused: Vec<String>,
}

impl HsmSlot {
    pub fn new(arm: Arc<Arm>, fs: FsRef, journal: Arc<Journal>) -> HsmSlot {
        HsmSlot { arm, fs, journal }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// What holds the slot now, unless it is the job named `mine`.
    pub async fn holder(&self, mine: &str) -> Result<Option<Holder>, ArmError> {
        let not_mine = |n: Option<&str>| n.is_some_and(|n| !n.eq_ignore_ascii_case(mine));
        let held = |what: String| Ok(Some(Holder::Job(what)));
        let base = self.fs.path();
        let jobs: Vec<ImportJob> = self.arm.list(&format!("{base}/importJobs")).await?;
        for j in &jobs {
            let state = j
                .properties
                .status
                .as_ref()
                .and_then(|s| s.state.as_deref());
            if not_mine(j.name.as_deref()) && !state.is_some_and(job_finished) {
                return held(format!(
                    "import job {} ({})",
                    j.name.as_deref().unwrap_or_default(),
                    state.unwrap_or("starting")
                ));
            }
        }
        if let Some(fs) = self.arm.get::<AmlFilesystem>(&base).await?
            && let Some(state) = fs.archive_state().filter(|s| archive_holds_slot(s))
        {
            let path = fs
                .last_archive()
                .and_then(|a| a.filesystem_path.clone())
                .unwrap_or_else(|| "/".into());
            return held(format!("an archive of {path} ({state})"));
        }
        let expansions: Vec<serde_json::Value> =
            self.arm.list(&format!("{base}/expansionJobs")).await?;
        for j in &expansions {
            let state = j["properties"]["status"]["state"].as_str().unwrap_or("");
            if not_mine(j["name"].as_str())
                && !matches!(state, "Completed" | "Failed" | "Canceled" | "Deleted")
            {
                return held(format!(
                    "expansion job {} ({state})",
                    j["name"].as_str().unwrap_or_default()
                ));
            }
        }
        for (collection, auto_export) in [("autoImportJobs", false), ("autoExportJobs", true)] {
            let list: Vec<serde_json::Value> =
                self.arm.list(&format!("{base}/{collection}")).await?;
            for j in list.iter().filter(|j| not_mine(j["name"].as_str())) {
                let name = j["name"].as_str().unwrap_or_default().to_string();
                let p = &j["properties"];
                if p["adminStatus"] == "Enable" {
                    return Ok(Some(if auto_export {
                        Holder::AutoExport(name)
                    } else {
                        Holder::AutoImport(name)
                    }));
                }
                if p["status"]["state"] == "Disabling" {
                    let what = if auto_export {
                        "auto-export"
                    } else {
                        "auto-import"
                    };
                    return held(format!("{what} job {name} (Disabling)"));
                }
            }
        }
        Ok(None)
    }

    /// Sleeps one poll interval; `false` when `cancel` fired instead.
    pub async fn nap(&self, cancel: Option<&Cancel>) -> bool {
        let nap = tokio::time::sleep(self.arm.poll_interval());
        match cancel {
            Some(c) => tokio::select! {
                _ = c.wait() => false,
                _ = nap => true,
            },
            None => {
                nap.await;
                true
            }
        }
    }

    /// Takes the slot for the job `mine`, saying once per holder what it waits for. With
    /// `pause`, enabled auto-export jobs are disabled for the turn (recorded in the journal
    /// first, and again each time one is found enabled, as by another run's release);
    /// without it (`mine` is itself an auto-export job) one already enabled is refused.
    pub async fn acquire(
        &self,
        mine: &str,
        pause: bool,
        cancel: Option<&Cancel>,
    ) -> Result<Turn, SlotError> {
        // What a killed run paused is this turn's to give back too.
        let mut turn = Turn {
            paused: if pause {
                self.journal.paused_auto_exports(&self.fs.path())?
            } else {
                Vec::new()
            },
        };
        match self.wait_turn(&mut turn, mine, pause, cancel).await {
            Ok(_) => Ok(turn),
            Err(e) => {
                self.release(turn).await?;
                Err(e)
            }
        }
    }

    /// Waits until the slot is free for `mine`; `true` when anything held it at first.
    async fn wait_turn(
        &self,
        turn: &mut Turn,
        mine: &str,
        pause: bool,
        cancel: Option<&Cancel>,
    ) -> Result<bool, SlotError> {
        let mut said = None;
        let mut held = false;
        loop {
            let what = match self.holder(mine).await? {
                None => return Ok(held),
                Some(Holder::AutoExport(job)) if pause => {
                    held = true;
                    self.pause(turn, &job).await?;
                    continue;
                }
                Some(Holder::AutoExport(job)) => {
                    return Err(SlotError::Refused(format!(
                        "auto-export job {job} is enabled on {}, and AMLFS runs one HSM job at a time; disable it for this one to run:\n  az amlfs auto-export update --resource-group {} --aml-filesystem-name {} --auto-export-job-name {job} --admin-status Disable",
                        self.fs.name, self.fs.group, self.fs.name
                    )));
                }
                Some(Holder::AutoImport(job)) => {
                    // Enabled, it never finishes: waiting would be for ever.
                    return Err(SlotError::Refused(format!(
                        "auto-import job {job} is enabled on {}, and AMLFS runs one HSM job at a time; disable it for stage's jobs to run:\n  az amlfs auto-import update --resource-group {} --aml-filesystem-name {} --auto-import-job-name {job} --admin-status Disable",
                        self.fs.name, self.fs.group, self.fs.name
                    )));
                }
                Some(Holder::Job(what)) => what,
            };
            held = true;
            if said.as_ref() != Some(&what) {
                tracing::warn!(
                    "waiting for {what} on {}: AMLFS runs one HSM job at a time",
                    self.fs.name
                );
                said = Some(what);
            }
            if !self.nap(cancel).await {
                return Err(SlotError::Interrupted);
            }
        }
    }

    /// Sends the request that starts `mine` (its PUT or POST); while AMLFS answers 409
    /// because another job took the slot first, waits for it and sends again. Any other
    /// refusal is an error.
    pub async fn start(
        &self,
        turn: &mut Turn,
        mine: &str,
        pause: bool,
        cancel: Option<&Cancel>,
        (method, path): (reqwest::Method, &str),
        body: &impl serde::Serialize,
    ) -> Result<Reply, SlotError> {
        // A 409 with nothing to be seen holding the slot: the job that held it may have just
        // ended; a few tries, then the 409 stands.
        let mut unexplained = 0;
        loop {
            let reply = self.arm.send(method.clone(), path, Some(body)).await?;
            if reply.status == StatusCode::CONFLICT {
                // Whatever took the slot first: wait for it, as for the turn.
                if self.wait_turn(turn, mine, pause, cancel).await? {
                    continue;
                }
                if unexplained < 5 {
                    unexplained += 1;
                    if !self.nap(cancel).await {
                        return Err(SlotError::Interrupted);
                    }
                    continue;
                }
            }
            return Ok(Arm::check(&method, path, reply)?);
        }
    }

    /// Gives the turn back: enables the paused jobs again (those since deleted are
    /// forgotten); any that cannot be enabled now stay recorded for the next turn to retry.
    pub async fn release(&self, turn: Turn) -> Result<(), SlotError> {
        let mut left = Vec::new();
        for job in turn.paused {
            let enabled = match self.auto_export_job(&job).await {
                Ok(None) => continue,
                Ok(Some(j)) if j["properties"]["adminStatus"] == "Enable" => Ok(()),
                Ok(Some(_)) => self.set_auto_export(&job, "Enable").await,
                Err(e) => Err(e),
            };
            if let Err(e) = enabled {
                tracing::warn!("cannot enable auto-export job {job} again: {e}");
                left.push(job);
            }
        }
        self.journal
            .set_paused_auto_exports(&self.fs.path(), &left)?;
        self.journal.flush()?;
        Ok(())
    }

    /// Disables the auto-export job `job` for the turn, recorded before it is disabled.
    async fn pause(&self, turn: &mut Turn, job: &str) -> Result<(), SlotError> {
        let id = self.fs.path();
        if !turn.paused.iter().any(|p| p.eq_ignore_ascii_case(job)) {
            turn.paused.push(job.to_string());
        }
        self.journal.set_paused_auto_exports(&id, &turn.paused)?;
        self.journal.flush()?;
        tracing::info!("pausing auto-export job {job}: AMLFS runs one HSM job at a time");
        self.set_auto_export(job, "Disable").await?;
        Ok(())
    }

    /// The auto-export job as ARM shows it now; `None` once deleted.
    pub async fn auto_export_job(&self, job: &str) -> Result<Option<serde_json::Value>, ArmError> {
        self.arm.get(&self.fs.auto_export_job_path(job)).await
    }

    pub async fn set_auto_export(&self, job: &str, status: &str) -> Result<(), ArmError> {
        let path = self.fs.auto_export_job_path(job);
        let body = serde_json::json!({ "properties": { "adminStatus": status } });
        self.arm
            .call_lro(reqwest::Method::PATCH, &path, Some(&body), || {})
            .await?;
        Ok(())
    }
}
