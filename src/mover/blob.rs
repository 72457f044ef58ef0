//! AMLFS import and export semantics over any [`BlobStore`]: the local target's HSM (a
//! directory plays the container) and the direct mover (stage itself copies to and from a
//! real container) are the same code.
//!
//! - a path that is a clean copy of the current blob version is up to date, never a conflict;
//! - any other existing path is a conflict, resolved by the job's conflict mode;
//! - `maximumErrors` counts non-conflict errors (unsafe names, unreadable blobs);
//! - export writes only new or changed files and verifies each;
//! - the journal records intent (`importing`/`archiving`) before every batch of copies, so a
//!   killed job resumes at file granularity and never trusts a half-written path.

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::{self, FuturesOrdered};

use super::names;
use super::*;
use crate::beneath::{Found, Root};
use crate::failpoint;
use crate::journal::{FileRecord, FileState, Journal, mtime_ns};
use crate::store::{self, Attrs, BlobEntry, BlobStore, Kind, Listing};

/// Entries decided before their copying starts: one flush covers their intents (group
/// commit), and a job of up to this many files knows its total, for an ETA, from the start
/// (as rclone's default backlog of checks). About 3 MB of listing entries.
const BATCH: usize = 10_000;

/// Reads of a blob whose data does not match its checksum before it counts as damaged.
const CHECKSUM_READS: u32 = 3;

/// Files compared with their blobs at once on export: a file with no journal record is read
/// and hashed, which one at a time would leave the disk and the second core idle.
const CHECKS: usize = 16;

/// Progress of one job: what is done against what the listing has found to move so far.
struct Meter<'a> {
    progress: &'a Progress,
    found: Tally,
}

impl<'a> Meter<'a> {
    fn new(progress: &'a Progress) -> Self {
        Meter {
            progress,
            found: Tally::default(),
        }
    }

    fn found(&mut self, bytes: u64) {
        self.found.found_files += 1;
        self.found.found_bytes += bytes;
    }

    /// Nothing more will be found.
    fn listed(&mut self) {
        self.found.listed = true;
    }

    fn done(&self, files: u64, bytes: u64) {
        (self.progress)(Tally {
            files,
            bytes,
            ..self.found
        });
    }
}

pub struct BlobMover {
    inner: Arc<Inner>,
}

struct Inner {
    fs_name: String,
    root: PathBuf,
    /// The same root, for every path a name leads to: never through a link.
    tree: Arc<Root>,
    /// Who owns what an import creates, whatever the metadata says (the Slurm prolog).
    owner: Option<(u32, u32)>,
    store: Arc<dyn BlobStore>,
    journal: Arc<Journal>,
    transfers: usize,
}

impl BlobMover {
    /// `fs_name` namespaces the journal's file records; `root` is the file-system side;
    /// `transfers` is how many files move at once.
    pub fn new(
        fs_name: String,
        root: PathBuf,
        store: Arc<dyn BlobStore>,
        journal: Arc<Journal>,
        transfers: usize,
    ) -> Self {
        BlobMover {
            inner: Arc::new(Inner {
                fs_name,
                tree: Arc::new(Root::new(&root)),
                owner: None,
                root,
                store,
                journal,
                transfers: transfers.max(1),
            }),
        }
    }
}

impl BlobMover {
    /// Works for a Slurm job's user, as root: in `dir`, the root held open (its path is the
    /// user's to change), and everything imported is owned by `uid`:`gid` whatever the
    /// metadata says ([`Attrs::owned_by`]).
    pub fn for_job(mut self, uid: u32, gid: u32, dir: std::os::fd::OwnedFd) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.owner = Some((uid, gid));
            inner.tree = Arc::new(Root::pinned(&inner.root, dir));
        }
        self
    }
}

#[async_trait]
impl Mover for BlobMover {
    async fn import(
        &self,
        req: ImportRequest,
        progress: Progress,
    ) -> Result<ImportReport, MoverError> {
        self.inner.import(&req, &progress).await
    }

    async fn export(
        &self,
        req: ExportRequest,
        progress: Progress,
    ) -> Result<ExportReport, MoverError> {
        self.inner.export(&req, &progress).await
    }
}

fn io_err(what: &'static str, path: &str, source: std::io::Error) -> MoverError {
    MoverError::Io {
        what,
        path: path.to_string(),
        source,
    }
}

#[derive(Debug, PartialEq)]
enum Decision {
    UpToDate,
    Import { overwrite: bool },
    Skip,
    Fail(String),
}

/// What one transfer did, for the report and the journal.
enum Moved {
    Dir,
    File(FileRecord),
}

/// More errors than the job tolerates (-1: any number).
fn over_limit(errors: usize, max_errors: i64) -> bool {
    max_errors >= 0 && errors as i64 > max_errors
}

fn stamp_matches(rec: &FileRecord, m: &Metadata) -> bool {
    rec.size == m.size() && rec.mtime_ns == mtime_ns(m)
}

impl Inner {
    fn decide(&self, blob: &BlobEntry, mode: ConflictMode) -> Result<Decision, MoverError> {
        let existing = match self.tree.lookup(&blob.name) {
            Ok(Found::Here(m)) => m,
            Ok(Found::Missing) => return Ok(Decision::Import { overwrite: false }),
            // A link or a file where one of the blob's directories should be: a conflict like
            // any other, and overwriting replaces the link itself, never what it points to.
            Ok(Found::Blocked { at, .. }) => {
                return Ok(match mode {
                    ConflictMode::Fail => Decision::Fail(at),
                    ConflictMode::Skip => Decision::Skip,
                    _ => Decision::Import { overwrite: true },
                });
            }
            Err(e) => {
                let shown = self.root.join(&blob.name).display().to_string();
                return Err(io_err("cannot stat", &shown, e));
            }
        };
        let blob_dir = blob.kind == Kind::Dir;
        let type_conflict = existing.is_dir() != blob_dir || existing.file_type().is_symlink();
        if blob_dir && !type_conflict {
            return Ok(Decision::UpToDate);
        }
        let rec = self.journal.file(&self.fs_name, &blob.name)?;
        let (dirty, imported) = match &rec {
            // Our own import of this path was cut short: finish it whatever the mode.
            Some(r) if r.state == FileState::Importing => {
                return Ok(Decision::Import { overwrite: true });
            }
            Some(r) if r.state == FileState::Clean => (!stamp_matches(r, &existing), true),
            Some(_) => (true, true),
            None => (true, false),
        };
        if !type_conflict && !dirty && rec.as_ref().is_some_and(|r| r.blob_etag == blob.etag) {
            return Ok(Decision::UpToDate);
        }
        Ok(match mode {
            ConflictMode::Fail => Decision::Fail(blob.name.clone()),
            ConflictMode::Skip => Decision::Skip,
            ConflictMode::OverwriteIfDirty if type_conflict || dirty || !imported => {
                Decision::Import { overwrite: true }
            }
            ConflictMode::OverwriteIfDirty => Decision::Skip,
            ConflictMode::OverwriteAlways => Decision::Import { overwrite: true },
        })
    }

    async fn import(
        &self,
        req: &ImportRequest,
        progress: &Progress,
    ) -> Result<ImportReport, MoverError> {
        let mut report = ImportReport::default();
        let mut meter = Meter::new(progress);
        let too_many = |r: &ImportReport| over_limit(r.errors.len(), req.max_errors);
        let mut batch: Vec<(BlobEntry, bool)> = Vec::new();
        for prefix in store::disjoint_prefixes(&req.prefixes) {
            let mut listing = self.store.list(&prefix);
            while let Some(item) = listing.next().await {
                match item? {
                    Listing::Unusable(msg) => report.errors.push(msg),
                    Listing::Entry(e) => {
                        if let Err(bad) = names::check(&e.name) {
                            report.errors.push(bad.to_string());
                        } else {
                            match self.decide(&e, req.conflict)? {
                                Decision::UpToDate => {
                                    report.up_to_date += u64::from(e.kind == Kind::File)
                                }
                                Decision::Skip => report.conflicts_skipped += 1,
                                Decision::Fail(path) => {
                                    self.import_batch(
                                        &mut batch,
                                        &mut report,
                                        &meter,
                                        req.max_errors,
                                    )
                                    .await?;
                                    report.status = JobStatus::Failed;
                                    report.conflict = Some(path);
                                    return Ok(report);
                                }
                                Decision::Import { overwrite } if req.dry_run => {
                                    report.imported += u64::from(e.kind == Kind::File);
                                    report.overwritten += u64::from(overwrite);
                                    report.bytes += e.size;
                                    if e.kind == Kind::File
                                        && report.planned.len() < super::PLANNED_NAMES
                                    {
                                        report.planned.push(e.name.clone());
                                    }
                                }
                                Decision::Import { overwrite } => {
                                    if e.kind == Kind::File {
                                        meter.found(e.size);
                                    }
                                    batch.push((e, overwrite));
                                    if batch.len() >= BATCH {
                                        self.import_batch(
                                            &mut batch,
                                            &mut report,
                                            &meter,
                                            req.max_errors,
                                        )
                                        .await?;
                                    }
                                }
                            }
                        }
                    }
                }
                if too_many(&report) {
                    self.import_batch(&mut batch, &mut report, &meter, req.max_errors)
                        .await?;
                    report.status = JobStatus::Failed;
                    return Ok(report);
                }
            }
        }
        meter.listed();
        self.import_batch(&mut batch, &mut report, &meter, req.max_errors)
            .await?;
        if too_many(&report) {
            report.status = JobStatus::Failed;
        } else if !report.errors.is_empty() || report.conflicts_skipped > 0 {
            report.status = JobStatus::CompletedPartial;
        }
        Ok(report)
    }

    /// Records the batch's intents with one flush, copies concurrently, records outcomes.
    /// Once the errors are over `max_errors` nothing more is started: the rest of the batch
    /// keeps its intents, as if the run had been killed there, and the next run finishes them.
    async fn import_batch(
        &self,
        batch: &mut Vec<(BlobEntry, bool)>,
        report: &mut ImportReport,
        meter: &Meter<'_>,
        max_errors: i64,
    ) -> Result<(), MoverError> {
        if batch.is_empty() {
            return Ok(());
        }
        for (e, _) in batch.iter().filter(|(e, _)| e.kind == Kind::File) {
            self.journal.put_file(
                &self.fs_name,
                &e.name,
                &FileRecord {
                    state: FileState::Importing,
                    blob_etag: e.etag.clone(),
                    size: e.size,
                    mtime_ns: 0,
                },
            )?;
        }
        self.journal.flush()?;
        failpoint::hit("import.after-intent");
        let stop = AtomicBool::new(false);
        let stop = &stop;
        let mut moves = stream::iter(batch.drain(..))
            .map(|(e, overwrite)| async move {
                if stop.load(Ordering::Relaxed) {
                    return (e, overwrite, None);
                }
                let r = self.import_one(&e, overwrite).await;
                (e, overwrite, Some(r))
            })
            .buffer_unordered(self.transfers);
        while let Some((e, overwrite, r)) = moves.next().await {
            match r {
                None => {}
                Some(Ok(Moved::Dir)) => report.directories += 1,
                Some(Ok(Moved::File(rec))) => {
                    self.journal.put_file(&self.fs_name, &e.name, &rec)?;
                    report.imported += 1;
                    report.overwritten += u64::from(overwrite);
                    report.bytes += rec.size;
                    meter.done(report.imported, report.bytes);
                }
                Some(Err(msg)) => {
                    report
                        .errors
                        .push(format!("{}: {msg}", names::shown(&e.name)));
                    if over_limit(report.errors.len(), max_errors) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        drop(moves);
        self.journal.flush()?;
        Ok(())
    }

    /// Gives a directory this import made its owner (only when one is set: otherwise it is
    /// the running user's, with the umask's mode, as `mkdir -p` makes it).
    fn made(&self, dir: &fs::File) -> std::io::Result<()> {
        match self.owner {
            Some((uid, gid)) => std::os::unix::fs::fchown(dir, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    async fn import_one(&self, e: &BlobEntry, overwrite: bool) -> Result<Moved, String> {
        if overwrite {
            self.tree
                .clear_way(&e.name, e.kind == Kind::Dir)
                .map_err(|err| format!("cannot replace: {err}"))?;
        }
        let made = |d: &fs::File| self.made(d);
        let attrs = e.attrs.owned_by(self.owner);
        if e.kind == Kind::Dir {
            self.tree
                .create_dirs(&e.name, &made)
                .and_then(|d| attrs.apply_to(&d, 0o755))
                .map_err(|err| format!("cannot create directory: {err}"))?;
            return Ok(Moved::Dir);
        }
        let tmp = self
            .tree
            .tmp()
            .map_err(|err| format!("cannot create a temporary file: {err}"))?;
        // A read that does not match the blob's checksum is read again first: a bit flipped
        // on the way (a bad NIC, a proxy) looks the same as a damaged blob, and only a
        // second and third identical verdict tell them apart.
        let mut attempt = 1;
        loop {
            let (mut n, mut sum) =
                self.store
                    .download(e, &tmp.path)
                    .await
                    .map_err(|err| match err {
                        store::StoreError::Item { message, .. } => message,
                        other => other.to_string(),
                    })?;
            if failpoint::fails("import.corrupt-read") {
                // A bit flipped in transit, for the test of this loop (the faulty proxy of
                // the tests cuts and throttles, but cannot tell a body from a listing): the
                // data written and the sum taken of it, as a download would have.
                (n, sum) = flip_first_byte(&tmp.path)
                    .and_then(|()| store::checksum::file(&tmp.path, e.sum))
                    .map_err(|err| err.to_string())?;
            }
            match store::checksum::verify(e.size, e.sum, n, sum) {
                Ok(()) => break,
                Err(why) if attempt >= CHECKSUM_READS => {
                    return Err(format!("{why} (read {attempt} times)"));
                }
                Err(why) => {
                    tracing::warn!(name = e.name, attempt, "{why}; reading it again");
                    attempt += 1;
                }
            }
        }
        attrs
            .apply(&tmp.path, 0o644)
            .and_then(|_| self.tree.persist(&tmp, &e.name, &made))
            .map_err(|err| err.to_string())?;
        failpoint::hit("import.after-copy");
        let now = self
            .tree
            .symlink_metadata(&e.name)
            .map_err(|err| err.to_string())?;
        Ok(Moved::File(FileRecord {
            state: FileState::Clean,
            blob_etag: e.etag.clone(),
            size: now.size(),
            mtime_ns: mtime_ns(&now),
        }))
    }

    async fn export(
        &self,
        req: &ExportRequest,
        progress: &Progress,
    ) -> Result<ExportReport, MoverError> {
        let mut report = ExportReport::default();
        let mut meter = Meter::new(progress);
        let mut batch: Vec<(String, Metadata)> = Vec::new();
        if !req.dry_run {
            self.store.create_if_missing().await?;
        }
        let paths = store::disjoint_paths(&req.paths);
        let last = paths.len().saturating_sub(1);
        for (i, path) in paths.into_iter().enumerate() {
            if let Some(missing) = missing_export_path(&self.tree, &path) {
                report.errors.push(missing);
                continue;
            }
            // Walk and listing are both in name order: merge-join them, holding neither.
            let mut blobs = store::join::Cursor::new(self.store.list(&path));
            let mut local_dirs = Vec::new();
            let mut checks = FuturesOrdered::new();
            for item in store::dir::walk(Arc::clone(&self.tree), &path) {
                let e = match item {
                    Listing::Entry(e) => e,
                    Listing::Unusable(msg) => {
                        report.errors.push(msg);
                        continue;
                    }
                };
                if let Err(why) = self.store.check_name(&e.name) {
                    report.errors.push(format!("{:?}: {why}", e.name));
                    continue;
                }
                if e.kind == Kind::Dir {
                    local_dirs.push(e.name);
                    continue;
                }
                let matched = blobs.find(&e.name).await?;
                let meta = match self.tree.symlink_metadata(&e.name) {
                    Ok(m) => m,
                    // Gone since the walk saw it (a tool's temporary file, renamed): there is
                    // nothing to export, as for an archive of a live tree.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        tracing::debug!(name = e.name, "vanished before export");
                        continue;
                    }
                    Err(err) => return Err(io_err("cannot stat", &e.name, err)),
                };
                checks.push_back(async move {
                    let same = self
                        .export_unchanged(&e.name, &meta, matched.as_ref())
                        .await;
                    (e.name, meta, same)
                });
                if checks.len() >= CHECKS
                    && let Some(checked) = checks.next().await
                {
                    let (report, meter, batch) = (&mut report, &mut meter, &mut batch);
                    self.export_checked(checked, req.dry_run, report, meter, batch)
                        .await?;
                }
            }
            while let Some(checked) = checks.next().await {
                let (report, meter, batch) = (&mut report, &mut meter, &mut batch);
                self.export_checked(checked, req.dry_run, report, meter, batch)
                    .await?;
            }
            let container_dirs = blobs.finish().await?;
            if i == last {
                meter.listed();
            }
            self.export_batch(&mut batch, &mut report, &meter).await?;
            if req.dry_run {
                continue;
            }
            for dir in local_dirs.iter().filter(|d| !container_dirs.contains(*d)) {
                let attrs = self
                    .tree
                    .symlink_metadata(dir)
                    .map(|m| Attrs::of(&m))
                    .unwrap_or_default();
                if let Err(err) = self.store.put_dir(dir, &attrs).await {
                    report.errors.push(err.to_string());
                }
            }
        }
        Ok(report)
    }

    /// Counts a file found unchanged, or queues it for upload.
    async fn export_checked(
        &self,
        (name, meta, same): (String, Metadata, Result<bool, MoverError>),
        dry_run: bool,
        report: &mut ExportReport,
        meter: &mut Meter<'_>,
        batch: &mut Vec<(String, Metadata)>,
    ) -> Result<(), MoverError> {
        if same? {
            report.unchanged += 1;
            report.verified += 1;
        } else if dry_run {
            report.exported += 1;
            report.bytes += meta.size();
        } else {
            meter.found(meta.size());
            batch.push((name, meta));
            if batch.len() >= BATCH {
                self.export_batch(batch, report, meter).await?;
            }
        }
        Ok(())
    }

    /// The container already holds this version of the file: the journal says we exported
    /// exactly it to that blob version, or (for a container written by someone else) the
    /// blob's length and Content-MD5 match the file's.
    async fn export_unchanged(
        &self,
        name: &str,
        meta: &Metadata,
        blob: Option<&BlobEntry>,
    ) -> Result<bool, MoverError> {
        let Some(blob) = blob else {
            return Ok(false);
        };
        if let Some(rec) = self.journal.file(&self.fs_name, name)?
            && rec.state == FileState::Clean
            && stamp_matches(&rec, meta)
            && rec.blob_etag == blob.etag
        {
            return Ok(true);
        }
        let (Some(want), true) = (blob.sum, blob.size == meta.size()) else {
            return Ok(false);
        };
        let file = self
            .tree
            .open_file(name)
            .map_err(|e| io_err("cannot read", name, e))?;
        let (n, sum) = tokio::task::spawn_blocking(move || store::checksum::read(file, Some(want)))
            .await
            .map_err(|e| io_err("cannot hash", name, std::io::Error::other(e.to_string())))?
            .map_err(|e| io_err("cannot hash", name, e))?;
        if n != blob.size || sum != Some(want) {
            return Ok(false);
        }
        self.journal.put_file(
            &self.fs_name,
            name,
            &FileRecord {
                state: FileState::Clean,
                blob_etag: blob.etag.clone(),
                size: n,
                mtime_ns: mtime_ns(meta),
            },
        )?;
        Ok(true)
    }

    async fn export_batch(
        &self,
        batch: &mut Vec<(String, Metadata)>,
        report: &mut ExportReport,
        meter: &Meter<'_>,
    ) -> Result<(), MoverError> {
        if batch.is_empty() {
            return Ok(());
        }
        for (rel, meta) in batch.iter() {
            self.journal.put_file(
                &self.fs_name,
                rel,
                &FileRecord {
                    state: FileState::Archiving,
                    blob_etag: String::new(),
                    size: meta.size(),
                    mtime_ns: mtime_ns(meta),
                },
            )?;
        }
        self.journal.flush()?;
        failpoint::hit("export.after-intent");
        let mut moves = stream::iter(batch.drain(..))
            .map(|(rel, meta)| async move {
                let r = match self.tree.open_file(&rel) {
                    Ok(src) => self.store.upload(&src, &rel, &Attrs::of(&meta)).await,
                    Err(e) => Err(store::StoreError::item(&rel, e)),
                };
                (rel, meta, r)
            })
            .buffer_unordered(self.transfers);
        while let Some((rel, meta, r)) = moves.next().await {
            let up = match r {
                Ok(up) => up,
                Err(store::StoreError::Item { .. })
                    if self.tree.symlink_metadata(&rel).is_err() =>
                {
                    // Removed while being copied: nothing left to export.
                    tracing::debug!(name = rel, "vanished during export");
                    continue;
                }
                Err(store::StoreError::Item { message, .. }) => {
                    report.errors.push(format!("{rel}: {message}"));
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            failpoint::hit("export.after-copy");
            // The source may have changed (or gone) while we copied: record what we read,
            // clean only if the file is still exactly that.
            let same = match self.tree.symlink_metadata(&rel) {
                Ok(now) => now.size() == up.size && mtime_ns(&now) == mtime_ns(&meta),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(io_err("cannot stat", &rel, e)),
            };
            let state = if same {
                FileState::Clean
            } else {
                FileState::Archiving
            };
            self.journal.put_file(
                &self.fs_name,
                &rel,
                &FileRecord {
                    state,
                    blob_etag: up.etag,
                    size: up.size,
                    mtime_ns: mtime_ns(&meta),
                },
            )?;
            report.exported += 1;
            report.verified += 1;
            report.bytes += up.size;
            meter.done(report.exported, report.bytes);
        }
        drop(moves);
        self.journal.flush()?;
        Ok(())
    }
}

fn flip_first_byte(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 0)?;
    f.write_all_at(&[b[0] ^ 1], 0)
}
