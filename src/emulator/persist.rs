//! The emulator's resources on disk (`DATA_DIR/resources.json`), so that a restart with the
//! same `--data-dir` finds what Azure would still have: file systems, jobs, operations, role
//! assignments, scale sets. Work that was under way when it stopped (a create, an import job,
//! an archive, an expansion, an enabled auto-export) starts again from its beginning and
//! finishes the same operation a client may still be polling.
//!
//! Written (when changed) before any answer leaves, and by a flusher for the changes
//! background work makes, so a kill loses at most the last fraction of a second of job
//! progress, never an accepted request or anything a client was shown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::paths::{self, FsKey, Target};
use super::state::{FsEntry, Inner, JobEntry, Owed, RoleAssignment, State};
use super::work;
use crate::azure::models::{AmlFilesystem, AsyncOperation, ImportJob, job_finished};

const FILE: &str = "resources.json";
/// Bumped when the layout changes incompatibly: an older file is refused, not misread.
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read the emulator's resources {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a resource file this emulator wrote ({detail}); move it away to start empty"
    )]
    Parse { path: PathBuf, detail: String },
}

#[derive(Serialize, Deserialize, Default)]
struct Snapshot {
    version: u32,
    filesystems: BTreeMap<String, AmlFilesystem>,
    jobs: BTreeMap<String, StoredJob>,
    operations: BTreeMap<String, AsyncOperation>,
    owed: BTreeMap<String, Owed>,
    role_assignments: BTreeMap<String, RoleAssignment>,
    expansions: BTreeMap<String, serde_json::Value>,
    auto_exports: BTreeMap<String, serde_json::Value>,
    scale_sets: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    subnets: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    auto_imports: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct StoredJob {
    fs_key: String,
    resource: ImportJob,
}

fn sorted<V: Clone>(m: &std::collections::HashMap<String, V>) -> BTreeMap<String, V> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn snapshot(inner: &Inner) -> Snapshot {
    Snapshot {
        version: VERSION,
        filesystems: inner
            .filesystems
            .iter()
            .map(|(k, e)| (k.clone(), e.resource.clone()))
            .collect(),
        jobs: inner
            .jobs
            .iter()
            .map(|(k, j)| {
                let stored = StoredJob {
                    fs_key: j.fs_key.clone(),
                    resource: j.resource.clone(),
                };
                (k.clone(), stored)
            })
            .collect(),
        operations: sorted(&inner.operations),
        owed: sorted(&inner.owed),
        role_assignments: sorted(&inner.role_assignments),
        expansions: sorted(&inner.expansions),
        auto_exports: sorted(&inner.auto_exports),
        scale_sets: sorted(&inner.scale_sets),
        subnets: sorted(&inner.subnets),
        auto_imports: sorted(&inner.auto_imports),
    }
}

/// Writes the resources if they changed since the last write. Blocking (it syncs the file).
pub fn save(state: &State) -> std::io::Result<()> {
    let mut saved = state.saved.lock().unwrap_or_else(|e| e.into_inner());
    let bytes = serde_json::to_vec(&snapshot(&state.lock())).map_err(std::io::Error::other)?;
    if *saved != bytes {
        crate::durable::write(&state.opts.data_dir.join(FILE), &bytes)?;
        *saved = bytes;
    }
    Ok(())
}

/// [`save`] off the async threads; a failure is logged, as a full disk should not stop the
/// emulator answering.
pub async fn save_soon(state: &Arc<State>) {
    let st = state.clone();
    match tokio::task::spawn_blocking(move || save(&st)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot save the emulator's resources: {e}"),
        Err(e) => tracing::warn!("cannot save the emulator's resources: {e}"),
    }
}

/// The resources a previous emulator left in `data_dir` (none on a first start), and the
/// bytes they were read from.
pub fn load(data_dir: &Path) -> Result<(Inner, Vec<u8>), PersistError> {
    let path = data_dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Inner::default(), Vec::new()));
        }
        Err(source) => return Err(PersistError::Read { path, source }),
    };
    let parse_error = |detail: String| PersistError::Parse {
        path: path.clone(),
        detail,
    };
    #[derive(Deserialize)]
    struct Layout {
        version: u32,
    }
    let layout: Layout = serde_json::from_slice(&bytes).map_err(|e| parse_error(e.to_string()))?;
    if layout.version != VERSION {
        return Err(parse_error(format!(
            "layout {} where this emulator writes {VERSION}",
            layout.version
        )));
    }
    let s: Snapshot = serde_json::from_slice(&bytes).map_err(|e| parse_error(e.to_string()))?;
    let mut inner = Inner::default();
    for (key, resource) in s.filesystems {
        let Some(fs) = resource.id.as_deref().and_then(fs_of) else {
            return Err(parse_error(format!("file system {key} has no usable id")));
        };
        let dir = data_dir.join("filesystems").join(&fs.name);
        let entry = FsEntry {
            resource,
            dir,
            archive: None,
        };
        inner.filesystems.insert(key, entry);
    }
    for (key, j) in s.jobs {
        let entry = JobEntry {
            fs_key: j.fs_key,
            resource: j.resource,
            task: None,
        };
        inner.jobs.insert(key, entry);
    }
    inner.operations = s.operations.into_iter().collect();
    inner.owed = s.owed.into_iter().collect();
    inner.role_assignments = s.role_assignments.into_iter().collect();
    inner.expansions = s.expansions.into_iter().collect();
    inner.auto_exports = s.auto_exports.into_iter().collect();
    inner.scale_sets = s.scale_sets.into_iter().collect();
    inner.subnets = s.subnets.into_iter().collect();
    inner.auto_imports = s.auto_imports.into_iter().collect();
    Ok((inner, bytes))
}

/// The file system a resource id (of it or of one of its children) belongs to.
fn fs_of(id: &str) -> Option<FsKey> {
    match paths::parse(id)? {
        Target::Filesystem { fs }
        | Target::ImportJob { fs, .. }
        | Target::ExpansionJob { fs, .. }
        | Target::AutoExportJob { fs, .. }
        | Target::AutoImportJob { fs, .. } => Some(fs),
        _ => None,
    }
}

/// An auto job being disabled when the emulator stopped has been disabled meanwhile.
fn finish_disabling(job: &mut serde_json::Value) {
    if job["properties"]["status"]["state"] == "Disabling" {
        job["properties"]["status"]["state"] = serde_json::json!("Disabled");
    }
}

/// Starts again the work that was under way when the last emulator stopped. A cancel that
/// was in progress has finished meanwhile.
pub fn resume(state: &Arc<State>) {
    let (owed, jobs, archives, expansions, exports) = {
        let mut inner = state.lock();
        let owed: Vec<(String, Owed)> = inner
            .owed
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut jobs = Vec::new();
        for (key, j) in inner.jobs.iter_mut() {
            let status = j
                .resource
                .properties
                .status
                .get_or_insert_with(Default::default);
            match status.state.as_deref() {
                Some(s) if job_finished(s) => {}
                Some("Cancelling") => {
                    status.state = Some("Canceled".into());
                    status.status_message = Some("Import job was canceled.".into());
                }
                _ => {
                    if let Some(fs) = j.resource.id.as_deref().and_then(fs_of) {
                        jobs.push((fs, key.clone()));
                    }
                }
            }
        }
        let mut archives = Vec::new();
        for e in inner.filesystems.values_mut() {
            let path = e
                .resource
                .last_archive()
                .and_then(|a| a.filesystem_path.clone())
                .unwrap_or_else(|| "/".into());
            match e.resource.archive_state() {
                Some("InProgress") => {
                    if let Some(fs) = e.resource.id.as_deref().and_then(fs_of) {
                        archives.push((fs, path));
                    }
                }
                Some("Cancelling") => super::handlers::set_archive(e, &path, "Canceled", None),
                _ => {}
            }
        }
        let expansions: Vec<(FsKey, String, f64)> = inner
            .expansions
            .iter()
            .filter(|(_, v)| v["properties"]["status"]["state"] == "InProgress")
            .filter_map(|(k, v)| {
                let fs = v["id"].as_str().and_then(fs_of)?;
                let new = v["properties"]["newStorageCapacityTiB"].as_f64()?;
                Some((fs, k.clone(), new))
            })
            .collect();
        inner.auto_imports.values_mut().for_each(finish_disabling);
        let mut exports = Vec::new();
        for (key, v) in inner.auto_exports.iter_mut() {
            if v["properties"]["adminStatus"] == "Enable" {
                if let Some(fs) = v["id"].as_str().and_then(fs_of) {
                    exports.push((fs, key.clone()));
                }
            } else {
                finish_disabling(v);
            }
        }
        (owed, jobs, archives, expansions, exports)
    };
    for (op, work) in owed {
        match work {
            Owed::Provision(fs) => drop(tokio::spawn(work::provision(state.clone(), fs, op))),
            Owed::Delete(fs) => drop(tokio::spawn(work::delete(state.clone(), fs, op))),
            Owed::ScaleSet(key) => drop(tokio::spawn(super::vmss::settle(state.clone(), key, op))),
        }
    }
    for (fs, key) in jobs {
        work::run_import_job(state, &fs, &key);
    }
    for (fs, path) in archives {
        work::run_archive(state, &fs, path);
    }
    for (fs, key, new) in expansions {
        tokio::spawn(work::expand(state.clone(), fs, key, new));
    }
    for (fs, key) in exports {
        tokio::spawn(work::auto_export(state.clone(), fs, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_start_is_empty_and_a_foreign_file_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let (inner, bytes) = load(dir.path()).unwrap();
        assert!(inner.filesystems.is_empty() && bytes.is_empty());
        std::fs::write(
            dir.path().join(FILE),
            b"{\"version\": 1, \"filesystems\": 3}",
        )
        .unwrap();
        let e = load(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("is not a resource file this emulator wrote"),
            "{e}"
        );
        let other = serde_json::json!({ "version": VERSION + 1 });
        std::fs::write(dir.path().join(FILE), other.to_string()).unwrap();
        let e = load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("layout 2 where this emulator writes 1"), "{e}");
    }
}
