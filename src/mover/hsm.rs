//! AMLFS's own HSM over ARM: import jobs and archive, then verification of what archive wrote
//! against the container.
//!
//! Job names are derived from the run and step, so a resumed run finds its job instead of
//! starting another; a job already running on the file system (including the automatic
//! `importJobInitialAmlfsPut`) is waited for, never collided with.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::Method;

use super::*;
use crate::azure::arm::Arm;
use crate::azure::hsm_slot::{HsmSlot, SlotError, Turn};
use crate::azure::models::{
    AmlFilesystem, ArchiveRequest, ImportJob, ImportJobProperties, job_finished,
};
use crate::azure::resources::FsRef;
use crate::journal::Journal;
use crate::store::{self, BlobStore, Kind, Listing};

pub struct HsmMover {
    arm: Arc<Arm>,
    fs: FsRef,
    /// The file system's one HSM job at a time, taken for every job started here.
    slot: HsmSlot,
    /// The HSM container, read directly to plan imports and verify exports.
    store: Arc<dyn BlobStore>,
    root: PathBuf,
}

impl HsmMover {
    pub fn new(
        arm: Arc<Arm>,
        fs: FsRef,
        journal: Arc<Journal>,
        store: Arc<dyn BlobStore>,
        root: PathBuf,
    ) -> Self {
        HsmMover {
            slot: HsmSlot::new(arm.clone(), fs.clone(), journal),
            arm,
            fs,
            store,
            root,
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> MoverError {
        MoverError::Hsm(e.to_string())
    }

    fn slot_err(&self, e: SlotError) -> MoverError {
        match e {
            SlotError::Interrupted => MoverError::Interrupted,
            SlotError::Journal(j) => MoverError::Journal(j),
            other => self.err(other),
        }
    }

    /// Sleeps one poll interval; `false` when `cancel` fired instead.
    async fn nap(&self, cancel: Option<&crate::engine::Cancel>) -> bool {
        self.slot.nap(cancel).await
    }

    fn slot_journal(&self) -> &Journal {
        self.slot.journal()
    }

    /// The container under the import's prefixes now, as one digest of every blob (name,
    /// size, version), and whether the file system holds each of its files at its size
    /// (a file system recreated, or a file deleted since, needs the job). Without
    /// `check_mount` nothing is looked up and `present` is false.
    async fn survey(&self, req: &ImportRequest, check_mount: bool) -> Result<Survey, MoverError> {
        use md5::Digest;
        let mut md5 = md5::Md5::new();
        let tree = Arc::new(crate::beneath::Root::new(&self.root));
        let mut survey = Survey {
            fingerprint: String::new(),
            present: check_mount,
            files: 0,
        };
        let mut batch = Vec::new();
        for prefix in store::disjoint_prefixes(&req.prefixes) {
            let mut listing = self.store.list(&prefix);
            while let Some(item) = listing.next().await {
                let e = match item? {
                    Listing::Entry(e) => e,
                    Listing::Unusable(m) => {
                        md5.update(format!("!{m}\n").as_bytes());
                        continue;
                    }
                };
                md5.update(format!("{}\0{}\0{}\n", e.name, e.size, e.etag).as_bytes());
                if e.kind != Kind::File || !survey.present {
                    continue;
                }
                survey.files += 1;
                batch.push((e.name, e.size));
                if batch.len() == LOOKUPS {
                    survey.present = self.all_here(&tree, std::mem::take(&mut batch)).await?;
                }
            }
        }
        if survey.present && !batch.is_empty() {
            survey.present = self.all_here(&tree, batch).await?;
        }
        survey.fingerprint = crate::digest::hex(&md5.finalize());
        Ok(survey)
    }

    /// Whether every file is in the file system at its size: looked up a batch per blocking
    /// task, as a thread hop per file costs more than the lookup.
    async fn all_here(
        &self,
        tree: &Arc<crate::beneath::Root>,
        files: Vec<(String, u64)>,
    ) -> Result<bool, MoverError> {
        let tree = Arc::clone(tree);
        tokio::task::spawn_blocking(move || {
            files.iter().all(|(name, size)| {
                matches!(
                    tree.lookup(name),
                    Ok(crate::beneath::Found::Here(m)) if m.is_file() && m.len() == *size
                )
            })
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// What an import would bring: every blob under the prefixes (AMLFS decides conflicts).
    async fn plan_import(&self, req: &ImportRequest) -> Result<ImportReport, MoverError> {
        let mut report = ImportReport::default();
        for prefix in store::disjoint_prefixes(&req.prefixes) {
            let mut listing = self.store.list(&prefix);
            while let Some(item) = listing.next().await {
                if let Listing::Entry(e) = item?
                    && e.kind == Kind::File
                {
                    report.imported += 1;
                    report.bytes += e.size;
                }
            }
        }
        Ok(report)
    }
}

/// Files looked up in the file system per blocking task by [`HsmMover::survey`].
const LOOKUPS: usize = 1024;

/// The container as an import found it: see [`HsmMover::survey`].
struct Survey {
    fingerprint: String,
    present: bool,
    files: u64,
}

/// What an import asks for, as the key its fingerprint is kept under: the same container
/// imported with other prefixes or another mode is another import.
fn import_settings(req: &ImportRequest) -> String {
    let mut prefixes = req.prefixes.clone();
    prefixes.sort();
    crate::digest::md5_hex(
        format!(
            "{prefixes:?}|{}|{}",
            mode_name(req.conflict),
            req.max_errors
        )
        .as_bytes(),
    )
}

/// ARM job names: letters, digits, `-` and `_`, at most 80.
fn job_name(job: &str) -> String {
    let clean: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if clean == job
        && clean.len() <= 80
        && alnum(clean.chars().next())
        && alnum(clean.chars().last())
    {
        return clean;
    }
    // Changed or cut to fit ARM's 80 characters: a digest of the whole name keeps apart two
    // that share their start (two import steps of a long-named pipeline once shared a job,
    // and the second was skipped as done).
    let digest = &crate::digest::md5_hex(job.as_bytes())[..12];
    let head: String = clean
        .trim_start_matches(['-', '_'])
        .chars()
        .take(80 - 1 - digest.len())
        .collect();
    match head.trim_end_matches(['-', '_']) {
        "" => digest.to_string(),
        head => format!("{head}-{digest}"),
    }
}

fn mode_name(m: ConflictMode) -> &'static str {
    match m {
        ConflictMode::Fail => "Fail",
        ConflictMode::Skip => "Skip",
        ConflictMode::OverwriteIfDirty => "OverwriteIfDirty",
        ConflictMode::OverwriteAlways => "OverwriteAlways",
    }
}

#[async_trait]
impl Mover for HsmMover {
    async fn import(
        &self,
        req: ImportRequest,
        progress: Progress,
    ) -> Result<ImportReport, MoverError> {
        if req.dry_run {
            return self.plan_import(&req).await;
        }
        // An unchanged container starts no job: on Azure each one costs a walk of the
        // prefixes and holds the file system's one HSM slot for minutes, and cron reruns a
        // pipeline every few minutes.
        let what = import_settings(&req);
        let fs_id = self.fs.path();
        let before = self.slot_journal().imported(&fs_id, &what)?;
        // With nothing recorded the job runs whatever the mount holds: no stat is spent.
        let survey = self.survey(&req, before.is_some()).await?;
        if survey.present && before.as_deref() == Some(survey.fingerprint.as_str()) {
            tracing::info!(
                "the container is as the last import job found it, and the file system holds it all: no job started"
            );
            return Ok(ImportReport {
                up_to_date: survey.files,
                ..ImportReport::default()
            });
        }
        // Auto-export jobs would hold the slot for ever: the turn pauses them, and the
        // release enables them again whatever the outcome (the journal holds them while
        // paused, so after a kill the resumed import enables them).
        let name = job_name(&req.job);
        let mut turn = self
            .slot
            .acquire(&name, true, req.cancel.as_ref())
            .await
            .map_err(|e| self.slot_err(e))?;
        let result = self.import_job(&name, &mut turn, req, progress).await;
        self.slot
            .release(turn)
            .await
            .map_err(|e| self.slot_err(e))?;
        if let Ok(r) = &result
            && r.status == JobStatus::Completed
            && r.errors.is_empty()
        {
            let journal = self.slot_journal();
            journal.put_imported(&fs_id, &what, &survey.fingerprint)?;
            journal.flush()?;
        }
        result
    }

    async fn export(
        &self,
        req: ExportRequest,
        progress: Progress,
    ) -> Result<ExportReport, MoverError> {
        self.export_paths(req, progress).await
    }
}

impl HsmMover {
    async fn import_job(
        &self,
        name: &str,
        turn: &mut Turn,
        req: ImportRequest,
        progress: Progress,
    ) -> Result<ImportReport, MoverError> {
        let path = self.fs.import_job_path(name);
        let cancel = req.cancel.as_ref();
        let mut existing: Option<ImportJob> = self.arm.get(&path).await.map_err(|e| self.err(e))?;
        // Our own job, cancelled by Ctrl-C: once AMLFS has finished cancelling it, start it
        // again under the same name.
        while let Some(state @ ("Cancelling" | "Canceled")) = existing
            .as_ref()
            .and_then(|j| j.properties.status.as_ref())
            .and_then(|s| s.state.as_deref())
        {
            if state == "Canceled" {
                self.arm
                    .call_lro(Method::DELETE, &path, None::<&()>, || {})
                    .await
                    .map_err(|e| self.err(e))?;
                existing = None;
                break;
            }
            if !self.nap(cancel).await {
                return Err(MoverError::Interrupted);
            }
            existing = self.arm.get(&path).await.map_err(|e| self.err(e))?;
        }
        if existing.is_none() {
            let body = ImportJob {
                location: Some(self.fs.location.clone()),
                properties: ImportJobProperties {
                    import_prefixes: Some(req.prefixes.iter().map(|p| format!("/{p}")).collect()),
                    conflict_resolution_mode: Some(mode_name(req.conflict).into()),
                    maximum_errors: Some(req.max_errors),
                    ..Default::default()
                },
                ..Default::default()
            };
            // The PUT's operation ends in seconds while the job runs on: the job itself is
            // followed below, as a resumed run follows it.
            self.slot
                .start(turn, name, true, cancel, (Method::PUT, &path), &body)
                .await
                .map_err(|e| self.slot_err(e))?;
            crate::failpoint::hit("hsm.after-import-job");
        }
        loop {
            let job: ImportJob = self
                .arm
                .get(&path)
                .await
                .map_err(|e| self.err(e))?
                .ok_or_else(|| self.err(format!("import job {name} disappeared")))?;
            if job.properties.provisioning_state.as_deref() == Some("Failed") {
                return Err(self.err(format!("import job {name} failed to start")));
            }
            let status = job.properties.status.clone().unwrap_or_default();
            let imported = status.total_blobs_imported.unwrap_or(0.0) as u64;
            progress(Tally {
                files: imported,
                ..Tally::default()
            });
            let state = status.state.clone().unwrap_or_default();
            if !job_finished(&state) {
                if !self.nap(cancel).await {
                    if !req.detach {
                        self.cancel_job(&path).await?;
                    }
                    return Err(MoverError::Interrupted);
                }
                continue;
            }
            let errors = status.total_errors.unwrap_or(0.0) as u64;
            let message = status.status_message.clone().unwrap_or_default();
            // AMLFS splits its count into files, directories and symlinks, new and
            // preexisting; totalBlobsImported is what an older service reports instead.
            let count = |key: &str| status.extra.get(key).and_then(|v| v.as_f64());
            let mut report = ImportReport {
                imported: count("importedFiles").map_or(imported, |n| n as u64),
                directories: count("importedDirectories").unwrap_or(0.0) as u64,
                up_to_date: count("preexistingFiles").unwrap_or(0.0) as u64,
                conflicts_skipped: status.total_conflicts.unwrap_or(0.0) as u64,
                ..Default::default()
            };
            report.errors = (0..errors.min(1))
                .map(|_| format!("{errors} error(s) reported by import job {name}: {message}"))
                .collect();
            report.status = match state.as_str() {
                "Completed" => JobStatus::Completed,
                "CompletedPartial" => JobStatus::CompletedPartial,
                _ => {
                    if report.errors.is_empty() {
                        report
                            .errors
                            .push(format!("import job {name} ended {state}: {message}"));
                    }
                    // A job stopped by a conflict (mode Fail) says so by its count; its
                    // message names the path where the service's does.
                    if report.conflicts_skipped > 0 {
                        report.conflict = Some(
                            message
                                .split_once("conflict at ")
                                .map_or(message.as_str(), |(_, p)| p)
                                .to_string(),
                        );
                        report.conflicts_skipped = 0;
                    }
                    JobStatus::Failed
                }
            };
            return Ok(report);
        }
    }

    async fn export_paths(
        &self,
        req: ExportRequest,
        progress: Progress,
    ) -> Result<ExportReport, MoverError> {
        if req.auto && !req.dry_run {
            return self.auto_export(&req, progress).await;
        }
        let mut report = ExportReport::default();
        let tree = crate::beneath::Root::new(&self.root);
        let mut paths = Vec::new();
        for path in store::disjoint_paths(&req.paths) {
            match missing_export_path(&tree, &path) {
                Some(missing) => report.errors.push(missing),
                None => paths.push(path),
            }
        }
        if paths.is_empty() {
            return Ok(report);
        }
        // One archive for the whole step, of what its paths have in common: a real archive
        // costs about a minute however little it moves, and AMLFS runs one HSM job at a
        // time, so one per output file would take a week for 10,000 outputs. AMLFS archives
        // only what is new or changed beneath it; verification looks only at the paths
        // asked for, in one walk and one listing of the common directory.
        let scope = common_dir(&paths);
        let wanted = Wanted::new(&paths, &scope);
        // What differs from the container now is what archive will write; when nothing
        // does, no HSM job is started at all.
        let mut before = ExportReport::default();
        self.verify(&scope, &wanted, &mut before, true).await?;
        if req.dry_run || before.exported == 0 {
            report.exported += if req.dry_run { before.exported } else { 0 };
            report.bytes += if req.dry_run { before.bytes } else { 0 };
            report.unchanged += before.unchanged;
            report.verified += before.verified;
            report.errors.extend(before.errors);
            return Ok(report);
        }
        // The service reports a percentage; what it is a percentage of is what differed.
        self.archive(&scope, &req, |p| {
            progress(Tally {
                files: before.exported * p / 100,
                bytes: before.bytes * p / 100,
                found_files: before.exported,
                found_bytes: before.bytes,
                listed: true,
            })
        })
        .await?;
        let mut after = ExportReport::default();
        self.verify(&scope, &wanted, &mut after, false).await?;
        report.exported += before.exported;
        report.bytes += before.bytes;
        report.unchanged += before.unchanged;
        report.verified += after.verified;
        report.errors.extend(after.errors);
        progress(Tally {
            files: report.verified,
            bytes: report.bytes,
            ..Tally::default()
        });
        Ok(report)
    }
}

impl HsmMover {
    /// `adminStatus: Cancel`, as `az amlfs import update --admin-status Cancel` does.
    async fn cancel_job(&self, path: &str) -> Result<(), MoverError> {
        let body = serde_json::json!({ "properties": { "adminStatus": "Cancel" } });
        let reply = self
            .arm
            .send(Method::PATCH, path, Some(&body))
            .await
            .map_err(|e| self.err(e))?;
        Arm::check(&Method::PATCH, path, reply).map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn fs_now(&self) -> Result<AmlFilesystem, MoverError> {
        self.arm
            .get(&self.fs.path())
            .await
            .map_err(|e| self.err(e))?
            .ok_or_else(|| self.err(format!("file system {} not found", self.fs.name)))
    }

    /// The auto-export job as ARM shows it now; `None` once deleted.
    async fn auto_export_job(&self, job: &str) -> Result<Option<serde_json::Value>, MoverError> {
        self.slot
            .auto_export_job(job)
            .await
            .map_err(|e| self.err(e))
    }

    /// Makes sure an auto-export job covers the paths (it stays enabled after the run: that
    /// is the point of it), then waits until the container holds every file as it is now.
    async fn auto_export(
        &self,
        req: &ExportRequest,
        progress: Progress,
    ) -> Result<ExportReport, MoverError> {
        let name = job_name(&req.job);
        let path = self.fs.auto_export_job_path(&name);
        // The API allows one prefix per job for now: the step's common directory.
        let prefixes = vec![format!(
            "/{}",
            common_dir(&store::disjoint_paths(&req.paths))
        )];
        let have = self.auto_export_job(&name).await?;
        let enabled = have.as_ref().is_some_and(|j| {
            j["properties"]["adminStatus"] == "Enable"
                && j["properties"]["autoExportPrefixes"] == serde_json::json!(prefixes)
        });
        let cancel = req.cancel.as_ref();
        if !enabled {
            let body = serde_json::json!({
                "location": self.fs.location,
                "properties": { "autoExportPrefixes": prefixes, "adminStatus": "Enable" },
            });
            // Enabled, the job holds the slot until disabled: it waits for the others, and
            // pauses no other auto-export job for it (it would never give the turn back).
            let mut turn = self
                .slot
                .acquire(&name, false, cancel)
                .await
                .map_err(|e| self.slot_err(e))?;
            let started = self
                .slot
                .start(&mut turn, &name, false, cancel, (Method::PUT, &path), &body)
                .await;
            self.slot
                .release(turn)
                .await
                .map_err(|e| self.slot_err(e))?;
            started.map_err(|e| self.slot_err(e))?;
        }
        let mut first: Option<ExportReport> = None;
        loop {
            let job = self.auto_export_job(&name).await?.unwrap_or_default();
            let status = &job["properties"]["status"];
            if let Some(state @ ("Failed" | "Disabled" | "DisableFailed")) =
                status["state"].as_str()
            {
                return Err(self.err(format!(
                    "auto-export job {name} is {state}: {}",
                    status["statusMessage"].as_str().unwrap_or("no message")
                )));
            }
            let mut now = ExportReport::default();
            let paths = store::disjoint_paths(&req.paths);
            let scope = common_dir(&paths);
            self.verify(&scope, &Wanted::new(&paths, &scope), &mut now, true)
                .await?;
            let pending = now.exported;
            let first = first.get_or_insert_with(|| now.clone());
            if pending == 0 || !now.errors.is_empty() {
                let mut report = now;
                // What the job wrote for this run: what differed when it started.
                report.exported = first.exported;
                report.bytes = first.bytes;
                report.unchanged = report.unchanged.saturating_sub(first.exported);
                return Ok(report);
            }
            progress(Tally {
                files: first.exported - pending.min(first.exported),
                found_files: first.exported,
                listed: true,
                ..Tally::default()
            });
            // The job is the user's to keep: an interrupted run leaves it exporting.
            if !self.nap(cancel).await {
                return Err(MoverError::Interrupted);
            }
        }
    }

    /// Archives `path` and waits for it, taking the file system's turn first (an archive of
    /// the same path already running, as a killed run leaves it, is waited for rather than
    /// started again); `percent` hears the service's percentComplete as it moves. Ctrl-C or
    /// SIGTERM cancels it (`cancelArchive`) or, with `detach`, leaves it running, at once.
    async fn archive(
        &self,
        path: &str,
        req: &ExportRequest,
        percent: impl Fn(u64),
    ) -> Result<(), MoverError> {
        let cancel = req.cancel.as_ref();
        let target = format!("/{path}");
        let running = |fs: &AmlFilesystem| {
            matches!(fs.archive_state(), Some("InProgress" | "FSScanInProgress"))
                && fs
                    .last_archive()
                    .and_then(|a| a.filesystem_path.as_deref())
                    .is_some_and(|p| p.trim_end_matches('/') == target.trim_end_matches('/'))
        };
        if !running(&self.fs_now().await?) {
            let mine = format!("archive {target}");
            let mut turn = self
                .slot
                .acquire(&mine, true, cancel)
                .await
                .map_err(|e| self.slot_err(e))?;
            let started = self.start_archive(&mut turn, &mine, &target, cancel).await;
            // Auto-export jobs come back only once the archive has ended, below.
            let waited = match started {
                Ok(()) => self.wait_archive(&target, req, &percent).await,
                Err(e) => Err(e),
            };
            self.slot
                .release(turn)
                .await
                .map_err(|e| self.slot_err(e))?;
            return waited;
        }
        self.wait_archive(&target, req, &percent).await
    }

    async fn start_archive(
        &self,
        turn: &mut Turn,
        mine: &str,
        target: &str,
        cancel: Option<&crate::engine::Cancel>,
    ) -> Result<(), MoverError> {
        let body = ArchiveRequest {
            filesystem_path: Some(target.to_string()),
        };
        let archive = format!("{}/archive", self.fs.path());
        self.slot
            .start(turn, mine, true, cancel, (Method::POST, &archive), &body)
            .await
            .map_err(|e| self.slot_err(e))?;
        crate::failpoint::hit("hsm.after-archive");
        Ok(())
    }

    async fn wait_archive(
        &self,
        target: &str,
        req: &ExportRequest,
        percent: &impl Fn(u64),
    ) -> Result<(), MoverError> {
        loop {
            if !self.nap(req.cancel.as_ref()).await {
                if !req.detach {
                    let cancel = format!("{}/cancelArchive", self.fs.path());
                    let reply = self
                        .arm
                        .send(Method::POST, &cancel, None::<&()>)
                        .await
                        .map_err(|e| self.err(e))?;
                    Arm::check(&Method::POST, &cancel, reply).map_err(|e| self.err(e))?;
                }
                return Err(MoverError::Interrupted);
            }
            let fs = self.fs_now().await?;
            match fs.archive_state() {
                Some("Completed") => return Ok(()),
                Some("InProgress") => {
                    let done = fs
                        .last_archive()
                        .and_then(|a| a.status.as_ref())
                        .and_then(|s| s.percent_complete);
                    if let Some(p) = done {
                        percent(p.clamp(0.0, 100.0) as u64);
                    }
                }
                Some(s @ ("Failed" | "Canceled")) => {
                    let msg = fs
                        .last_archive()
                        .and_then(|a| a.status.as_ref())
                        .and_then(|s| s.error_message.clone())
                        .unwrap_or_default();
                    return Err(self.err(format!("archive of {target} ended {s}: {msg}")));
                }
                _ => {}
            }
        }
    }

    /// Every file under `path` must be in the container with its length, and its checksum
    /// where the blob records one.
    async fn verify(
        &self,
        path: &str,
        wanted: &Wanted,
        report: &mut ExportReport,
        dry_run: bool,
    ) -> Result<(), MoverError> {
        // Walk and listing in name order, merge-joined: memory does not grow with the tree.
        let mut blobs = store::join::Cursor::new(self.store.list(path));
        let tree = std::sync::Arc::new(crate::beneath::Root::new(&self.root));
        for item in store::dir::walk(std::sync::Arc::clone(&tree), path) {
            let e = match item {
                Listing::Entry(e) if e.kind == Kind::File && wanted.covers(&e.name) => e,
                Listing::Entry(_) => continue,
                Listing::Unusable(m) => {
                    report.errors.push(m);
                    continue;
                }
            };
            // The walk has already stat'ed it.
            let size = e.size;
            let blob = blobs.find(&e.name).await?.map(|b| (b.size, b.sum));
            match blob {
                None if dry_run => {
                    report.exported += 1;
                    report.bytes += size;
                }
                None => report
                    .errors
                    .push(format!("{}: not in the container after archive", e.name)),
                Some((len, _)) if len != size => {
                    if dry_run {
                        report.exported += 1;
                        report.bytes += size;
                    } else {
                        report.errors.push(format!(
                            "{}: container has {len} bytes, file system {size}",
                            e.name
                        ));
                    }
                }
                Some((_, sum)) => {
                    if let Some(want) = sum {
                        let io = |err| MoverError::Io {
                            what: "cannot hash",
                            path: e.name.clone(),
                            source: err,
                        };
                        let file = tree.open_file(&e.name).map_err(io)?;
                        let got = tokio::task::spawn_blocking(move || {
                            store::checksum::read(file, Some(want))
                        })
                        .await
                        .map_err(|e| self.err(e))?
                        .map_err(io)?;
                        if got.1 != Some(want) {
                            if dry_run {
                                report.exported += 1;
                                report.bytes += size;
                            } else {
                                report.errors.push(format!(
                                    "{}: checksum differs from the container's",
                                    e.name
                                ));
                            }
                            continue;
                        }
                    }
                    if dry_run {
                        report.unchanged += 1;
                    } else {
                        report.exported += 1;
                        report.bytes += size;
                    }
                    report.verified += 1;
                }
            }
        }
        Ok(())
    }
}

/// The deepest directory holding every path (`""`: the root).
fn common_dir(paths: &[String]) -> String {
    let mut common: Option<Vec<&str>> = None;
    for p in paths {
        let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
        common = Some(match common {
            None => comps,
            Some(c) => c
                .iter()
                .zip(&comps)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    let c = common.unwrap_or_default();
    // A single path is its own scope whether file or directory; several share a directory,
    // which is never one of them unless it is a prefix of all.
    c.join("/")
}

/// The paths an export step asked for, within the directory it archives: only their files
/// are counted and verified (the archive may write others beneath it, as AMLFS's does).
struct Wanted(Option<std::collections::HashSet<String>>);

impl Wanted {
    fn new(paths: &[String], scope: &str) -> Wanted {
        if paths.len() == 1 && paths[0] == scope {
            return Wanted(None);
        }
        Wanted(Some(paths.iter().cloned().collect()))
    }

    /// `name` is one of the paths or beneath one.
    fn covers(&self, name: &str) -> bool {
        let Some(set) = &self.0 else { return true };
        set.contains(name)
            || name
                .match_indices('/')
                .any(|(i, _)| set.contains(&name[..i]))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_archive_covers_what_a_step_exports() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            super::common_dir(&v(&["results/qc/a.tsv", "results/summary.tsv"])),
            "results"
        );
        assert_eq!(
            super::common_dir(&v(&["results/qc/a.tsv"])),
            "results/qc/a.tsv"
        );
        assert_eq!(super::common_dir(&v(&["a/x", "b/y"])), "");
        assert_eq!(
            super::common_dir(&v(&["results/qc", "results/qcx/b"])),
            "results"
        );
        let paths = v(&["results/qc", "results/summary.tsv"]);
        let w = super::Wanted::new(&paths, "results");
        assert!(w.covers("results/qc/S1.tsv") && w.covers("results/summary.tsv"));
        assert!(!w.covers("results/other.tsv") && !w.covers("results/qcx/a"));
    }

    #[test]
    fn job_names_are_valid_arm_names() {
        assert_eq!(
            super::job_name("stage-genomics-r3-import"),
            "stage-genomics-r3-import"
        );
        let valid = |n: &str| {
            let c: Vec<char> = n.chars().collect();
            (2..=80).contains(&c.len())
                && c[0].is_ascii_alphanumeric()
                && c[c.len() - 1].is_ascii_alphanumeric()
                && c.iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        };
        let long = format!("stage-{}-r1-", "p".repeat(90));
        let (a, b) = (
            super::job_name(&format!("{long}import-refs")),
            super::job_name(&format!("{long}import-samples")),
        );
        assert_ne!(a, b, "two steps of a long-named pipeline share a job");
        for n in [&a, &b] {
            assert!(valid(n), "{n}");
        }
        assert_eq!(
            a,
            super::job_name(&format!("{long}import-refs")),
            "deterministic"
        );
        // Names that had to change are kept apart from the names they became.
        assert_ne!(super::job_name("a b/c."), super::job_name("a-b-c"));
        assert!(valid(&super::job_name("a b/c.")));
        assert!(valid(&super::job_name("--")));
    }
}
