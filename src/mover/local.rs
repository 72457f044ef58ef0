//! The local target's HSM: a directory plays the blob container, the journal plays Lustre's
//! HSM flags (which paths are clean copies of which blob version).
//!
//! Semantics follow AMLFS import jobs and archive so a pipeline behaves the same on Azure:
//! - a path that is a clean copy of the current blob is up to date, never a conflict;
//! - any other existing path is a conflict, resolved by the job's conflict mode;
//! - `maximumErrors` counts non-conflict errors (unsafe names, unreadable blobs);
//! - export writes only new or changed files, to the same path, and verifies each by MD5.
//!
//! Blob metadata (`owner`, `group`, `permissions`, `hdi_isfolder`) is carried by the container
//! directory's own POSIX attributes.

use std::fs::{self, File, Metadata};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use md5::{Digest, Md5};

use super::names;
use super::*;
use crate::failpoint;
use crate::journal::{FileRecord, FileState, Journal, mtime_ns};

/// Files per journal batch: one flush covers this many intents (group commit).
const BATCH: usize = 256;
const TMP_SUFFIX: &str = ".stage-tmp";

pub struct LocalMover {
    inner: Arc<Inner>,
}

struct Inner {
    fs_name: String,
    root: PathBuf,
    container: PathBuf,
    journal: Arc<Journal>,
}

impl LocalMover {
    pub fn new(fs_name: String, root: PathBuf, container: PathBuf, journal: Arc<Journal>) -> Self {
        LocalMover {
            inner: Arc::new(Inner {
                fs_name,
                root,
                container,
                journal,
            }),
        }
    }
}

#[async_trait]
impl Mover for LocalMover {
    async fn import(
        &self,
        req: ImportRequest,
        progress: Progress,
    ) -> Result<ImportReport, MoverError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.import(&req, &progress))
            .await
            .map_err(|e| io_err("import task", "", std::io::Error::other(e.to_string())))?
    }

    async fn export(
        &self,
        req: ExportRequest,
        progress: Progress,
    ) -> Result<ExportReport, MoverError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.export(&req, &progress))
            .await
            .map_err(|e| io_err("export task", "", std::io::Error::other(e.to_string())))?
    }
}

fn io_err(what: &'static str, path: &str, source: std::io::Error) -> MoverError {
    MoverError::Io {
        what,
        path: path.to_string(),
        source,
    }
}

/// The local container's ETag: changes whenever the blob file is rewritten.
fn etag(m: &Metadata) -> String {
    format!("{:x}-{:x}-{:x}", mtime_ns(m), m.size(), m.ino())
}

struct Entry {
    rel: String,
    meta: Metadata,
}

/// Walks `base/start` in name order without following symlinks; `rel` is relative to `base`.
fn walk(base: &Path, start: &str) -> impl Iterator<Item = Result<Entry, String>> + use<> {
    let mut stack: Vec<Result<Entry, String>> = Vec::new();
    let first = if start.is_empty() {
        base.to_path_buf()
    } else {
        base.join(start)
    };
    match fs::symlink_metadata(&first) {
        Ok(meta) if meta.is_dir() => {
            if !start.is_empty() {
                stack.push(Ok(Entry {
                    rel: start.to_string(),
                    meta,
                }));
            } else {
                push_children(base, "", &mut stack);
            }
        }
        Ok(meta) => stack.push(Ok(Entry {
            rel: start.to_string(),
            meta,
        })),
        Err(_) => {}
    }
    let base = base.to_path_buf();
    std::iter::from_fn(move || {
        let item = stack.pop()?;
        if let Ok(e) = &item
            && e.meta.is_dir()
        {
            push_children(&base, &e.rel, &mut stack);
        }
        Some(item)
    })
}

fn push_children(base: &Path, rel: &str, stack: &mut Vec<Result<Entry, String>>) {
    let dir = if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) => {
            stack.push(Err(format!("cannot list {}: {e}", dir.display())));
            return;
        }
    };
    let mut children: Vec<Result<Entry, String>> = rd
        .filter_map(|de| {
            let de = match de {
                Ok(de) => de,
                Err(e) => return Some(Err(format!("cannot list {}: {e}", dir.display()))),
            };
            let Some(name) = de.file_name().to_str().map(str::to_string) else {
                return Some(Err(format!(
                    "{}: name is not UTF-8, so it cannot be a blob name",
                    de.path().display()
                )));
            };
            if name.ends_with(TMP_SUFFIX) {
                return None;
            }
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            Some(
                de.path()
                    .symlink_metadata()
                    .map(|meta| Entry { rel, meta })
                    .map_err(|e| format!("cannot stat {}: {e}", de.path().display())),
            )
        })
        .collect();
    // Reverse order on the stack pops in ascending name order.
    children.sort_by(|a, b| match (a, b) {
        (Ok(a), Ok(b)) => b.rel.cmp(&a.rel),
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(a), Err(b)) => b.cmp(a),
    });
    stack.extend(children);
}

/// Walks the part of `base` that can hold names starting with `prefix`.
fn walk_prefix(base: &Path, prefix: &str) -> impl Iterator<Item = Result<Entry, String>> + use<> {
    let start = match prefix.rsplit_once('/') {
        Some((dir, _)) => dir.to_string(),
        None => String::new(),
    };
    let prefix = prefix.to_string();
    walk(base, &start).filter(move |e| match e {
        Ok(e) => e.rel.starts_with(&prefix) || format!("{}/", e.rel) == prefix,
        Err(_) => true,
    })
}

fn tmp_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(TMP_SUFFIX);
    dest.with_file_name(name)
}

/// Copies through a temporary name so a crash never leaves a partial file under the real name.
/// Returns the MD5 of what was written.
fn copy_atomic(src: &Path, dest: &Path, mode: u32) -> std::io::Result<(u64, [u8; 16])> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = tmp_path(dest);
    let mut input = File::open(src)?;
    let mut out = File::create(&tmp)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    out.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    drop(out);
    fs::rename(&tmp, dest)?;
    Ok((total, hasher.finalize().into()))
}

fn md5_file(path: &Path) -> std::io::Result<(u64, [u8; 16])> {
    let mut f = File::open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((total, hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Carries ownership as AMLFS does with the blob's `owner`/`group` metadata. Only root may
/// give files away; others keep their own ownership, as `cp` does.
fn apply_owner(path: &Path, src: &Metadata) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let _ = std::os::unix::fs::lchown(path, Some(src.uid()), Some(src.gid()));
    }
}

#[derive(Debug, PartialEq)]
enum Decision {
    UpToDate,
    Import { overwrite: bool },
    Skip,
    Fail(String),
}

impl Inner {
    fn stamp_matches(rec: &FileRecord, m: &Metadata) -> bool {
        rec.size == m.size() && rec.mtime_ns == mtime_ns(m)
    }

    fn decide(
        &self,
        rel: &str,
        blob: &Metadata,
        mode: ConflictMode,
    ) -> Result<Decision, MoverError> {
        let dest = self.root.join(rel);
        let existing = match fs::symlink_metadata(&dest) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Decision::Import { overwrite: false });
            }
            Err(e) => return Err(io_err("cannot stat", &dest.display().to_string(), e)),
        };
        let rec = self.journal.file(&self.fs_name, rel)?;
        let type_conflict = existing.is_dir() != blob.is_dir() || existing.file_type().is_symlink();
        if blob.is_dir() && !type_conflict {
            return Ok(Decision::UpToDate);
        }
        let (dirty, imported) = match &rec {
            // Our own import of this path was cut short: finish it whatever the mode.
            Some(r) if r.state == FileState::Importing => {
                return Ok(Decision::Import { overwrite: true });
            }
            Some(r) if r.state == FileState::Clean => (!Self::stamp_matches(r, &existing), true),
            Some(_) => (true, true),
            None => (true, false),
        };
        if !type_conflict && !dirty && rec.as_ref().is_some_and(|r| r.blob_etag == etag(blob)) {
            return Ok(Decision::UpToDate);
        }
        Ok(match mode {
            ConflictMode::Fail => Decision::Fail(rel.to_string()),
            ConflictMode::Skip => Decision::Skip,
            ConflictMode::OverwriteIfDirty if type_conflict || dirty || !imported => {
                Decision::Import { overwrite: true }
            }
            ConflictMode::OverwriteIfDirty => Decision::Skip,
            ConflictMode::OverwriteAlways => Decision::Import { overwrite: true },
        })
    }

    fn import(&self, req: &ImportRequest, progress: &Progress) -> Result<ImportReport, MoverError> {
        let mut report = ImportReport {
            status: JobStatus::Completed,
            imported: 0,
            bytes: 0,
            up_to_date: 0,
            conflicts_skipped: 0,
            overwritten: 0,
            directories: 0,
            errors: Vec::new(),
            conflict: None,
        };
        let too_many =
            |r: &ImportReport| req.max_errors >= 0 && r.errors.len() as i64 > req.max_errors;
        let mut seen = std::collections::HashSet::new();
        let mut batch: Vec<(String, Metadata, bool)> = Vec::with_capacity(BATCH);
        for prefix in &req.prefixes {
            for entry in walk_prefix(&self.container, prefix) {
                let entry = match entry {
                    Ok(e) => e,
                    Err(msg) => {
                        report.errors.push(msg);
                        if too_many(&report) {
                            report.status = JobStatus::Failed;
                            return Ok(report);
                        }
                        continue;
                    }
                };
                if !seen.insert(entry.rel.clone()) {
                    continue;
                }
                if let Err(e) = names::check(&entry.rel) {
                    report.errors.push(e.to_string());
                } else if entry.meta.file_type().is_symlink() {
                    report
                        .errors
                        .push(format!("{}: symlinks are not blobs; skipped", entry.rel));
                } else {
                    match self.decide(&entry.rel, &entry.meta, req.conflict)? {
                        Decision::UpToDate => report.up_to_date += u64::from(!entry.meta.is_dir()),
                        Decision::Skip => report.conflicts_skipped += 1,
                        Decision::Fail(path) => {
                            self.import_batch(&mut batch, &mut report, progress)?;
                            report.status = JobStatus::Failed;
                            report.conflict = Some(path);
                            return Ok(report);
                        }
                        Decision::Import { overwrite } if req.dry_run => {
                            report.imported += u64::from(!entry.meta.is_dir());
                            report.overwritten += u64::from(overwrite);
                            report.bytes += if entry.meta.is_dir() {
                                0
                            } else {
                                entry.meta.size()
                            };
                        }
                        Decision::Import { overwrite } => {
                            batch.push((entry.rel, entry.meta, overwrite));
                            if batch.len() >= BATCH {
                                self.import_batch(&mut batch, &mut report, progress)?;
                            }
                        }
                    }
                }
                if too_many(&report) {
                    self.import_batch(&mut batch, &mut report, progress)?;
                    report.status = JobStatus::Failed;
                    return Ok(report);
                }
            }
        }
        self.import_batch(&mut batch, &mut report, progress)?;
        if too_many(&report) {
            report.status = JobStatus::Failed;
        } else if !report.errors.is_empty() || report.conflicts_skipped > 0 {
            report.status = JobStatus::CompletedPartial;
        }
        Ok(report)
    }

    /// Records the batch's intents with one flush, copies, then records outcomes.
    fn import_batch(
        &self,
        batch: &mut Vec<(String, Metadata, bool)>,
        report: &mut ImportReport,
        progress: &Progress,
    ) -> Result<(), MoverError> {
        if batch.is_empty() {
            return Ok(());
        }
        for (rel, meta, _) in batch.iter().filter(|(_, m, _)| !m.is_dir()) {
            self.journal.put_file(
                &self.fs_name,
                rel,
                &FileRecord {
                    state: FileState::Importing,
                    blob_etag: etag(meta),
                    size: meta.size(),
                    mtime_ns: 0,
                    md5: None,
                },
            )?;
        }
        self.journal.flush()?;
        failpoint::hit("import.after-intent");
        for (rel, meta, overwrite) in batch.drain(..) {
            let dest = self.root.join(&rel);
            if overwrite {
                remove_any(&dest, meta.is_dir())?;
            }
            if meta.is_dir() {
                fs::create_dir_all(&dest)
                    .and_then(|_| {
                        fs::set_permissions(&dest, fs::Permissions::from_mode(meta.mode() & 0o7777))
                    })
                    .map_err(|e| io_err("cannot create directory", &rel, e))?;
                apply_owner(&dest, &meta);
                report.directories += 1;
                continue;
            }
            let src = self.container.join(&rel);
            match copy_atomic(&src, &dest, meta.mode()) {
                Ok((n, _)) => {
                    apply_owner(&dest, &meta);
                    failpoint::hit("import.after-copy");
                    let now =
                        fs::symlink_metadata(&dest).map_err(|e| io_err("cannot stat", &rel, e))?;
                    self.journal.put_file(
                        &self.fs_name,
                        &rel,
                        &FileRecord {
                            state: FileState::Clean,
                            blob_etag: etag(&meta),
                            size: now.size(),
                            mtime_ns: mtime_ns(&now),
                            md5: None,
                        },
                    )?;
                    report.imported += 1;
                    report.overwritten += u64::from(overwrite);
                    report.bytes += n;
                    progress(report.imported, report.bytes);
                }
                Err(e) => report.errors.push(format!("{rel}: {e}")),
            }
        }
        self.journal.flush()?;
        Ok(())
    }

    fn export(&self, req: &ExportRequest, progress: &Progress) -> Result<ExportReport, MoverError> {
        let mut report = ExportReport {
            exported: 0,
            bytes: 0,
            unchanged: 0,
            verified: 0,
            errors: Vec::new(),
        };
        let mut seen = std::collections::HashSet::new();
        let mut batch: Vec<(String, Metadata)> = Vec::new();
        for path in &req.paths {
            if fs::symlink_metadata(self.root.join(path)).is_err() {
                report
                    .errors
                    .push(format!("{path}: not found in the file system"));
                continue;
            }
            for entry in walk(&self.root, path) {
                let entry = match entry {
                    Ok(e) => e,
                    Err(msg) => {
                        report.errors.push(msg);
                        continue;
                    }
                };
                if !seen.insert(entry.rel.clone()) {
                    continue;
                }
                if entry.meta.file_type().is_symlink() {
                    report
                        .errors
                        .push(format!("{}: symlinks are not exported", entry.rel));
                    continue;
                }
                if entry.meta.is_dir() {
                    if req.dry_run {
                        continue;
                    }
                    let dest = self.container.join(&entry.rel);
                    fs::create_dir_all(&dest)
                        .and_then(|_| {
                            fs::set_permissions(
                                &dest,
                                fs::Permissions::from_mode(entry.meta.mode() & 0o7777),
                            )
                        })
                        .map_err(|e| io_err("cannot create directory", &entry.rel, e))?;
                    continue;
                }
                if self.export_unchanged(&entry)? {
                    report.unchanged += 1;
                    report.verified += 1;
                    continue;
                }
                if req.dry_run {
                    report.exported += 1;
                    report.bytes += entry.meta.size();
                    continue;
                }
                batch.push((entry.rel, entry.meta));
                if batch.len() >= BATCH {
                    self.export_batch(&mut batch, &mut report, progress)?;
                }
            }
        }
        self.export_batch(&mut batch, &mut report, progress)?;
        Ok(report)
    }

    /// Clean in the journal, unchanged in the file system, and still present in the container.
    fn export_unchanged(&self, e: &Entry) -> Result<bool, MoverError> {
        let Some(rec) = self.journal.file(&self.fs_name, &e.rel)? else {
            return Ok(false);
        };
        if rec.state != FileState::Clean || !Self::stamp_matches(&rec, &e.meta) {
            return Ok(false);
        }
        Ok(fs::symlink_metadata(self.container.join(&e.rel))
            .is_ok_and(|m| m.size() == rec.size && etag(&m) == rec.blob_etag))
    }

    fn export_batch(
        &self,
        batch: &mut Vec<(String, Metadata)>,
        report: &mut ExportReport,
        progress: &Progress,
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
                    md5: None,
                },
            )?;
        }
        self.journal.flush()?;
        failpoint::hit("export.after-intent");
        for (rel, meta) in batch.drain(..) {
            let src = self.root.join(&rel);
            let dest = self.container.join(&rel);
            let written = copy_atomic(&src, &dest, meta.mode()).map_err(|e| e.to_string());
            let verified = written.and_then(|(n, sum)| {
                let (m, back) = md5_file(&dest).map_err(|e| e.to_string())?;
                if m != n || back != sum {
                    return Err(format!(
                        "verification failed: wrote {n} bytes, read back {m}"
                    ));
                }
                Ok((n, sum))
            });
            match verified {
                Ok((n, sum)) => {
                    apply_owner(&dest, &meta);
                    failpoint::hit("export.after-copy");
                    let blob =
                        fs::symlink_metadata(&dest).map_err(|e| io_err("cannot stat", &rel, e))?;
                    // The source may have changed while we copied: record what we read.
                    let now =
                        fs::symlink_metadata(&src).map_err(|e| io_err("cannot stat", &rel, e))?;
                    let state = if now.size() == n && mtime_ns(&now) == mtime_ns(&meta) {
                        FileState::Clean
                    } else {
                        FileState::Archiving
                    };
                    self.journal.put_file(
                        &self.fs_name,
                        &rel,
                        &FileRecord {
                            state,
                            blob_etag: etag(&blob),
                            size: n,
                            mtime_ns: mtime_ns(&meta),
                            md5: Some(crate::digest::hex(&sum)),
                        },
                    )?;
                    report.exported += 1;
                    report.verified += 1;
                    report.bytes += n;
                    progress(report.exported, report.bytes);
                }
                Err(e) => report.errors.push(format!("{rel}: {e}")),
            }
        }
        self.journal.flush()?;
        Ok(())
    }
}

fn remove_any(path: &Path, keep_dir: bool) -> Result<(), MoverError> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    let r = if m.is_dir() {
        if keep_dir {
            return Ok(());
        }
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    r.map_err(|e| io_err("cannot replace", &path.display().to_string(), e))
}
