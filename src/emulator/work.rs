//! The emulator's background work: provisioning, deletion, import jobs and archives, each
//! taking as long as Azure's would (`timing`, scaled). Only one HSM job of a file system is
//! ever accepted at a time (`Inner::hsm_holder`), so none of them waits for another here.

use std::sync::Arc;

use serde_json::json;

use super::handlers::set_archive;
use super::paths::FsKey;
use super::state::{JobEntry, State};
use super::timing;
use crate::azure::models::*;
use crate::mover::{BlobMover, ExportRequest, ImportRequest, JobStatus, Mover};
use crate::spec::{ConflictMode, Sku as SpecSku};
use crate::store::{AzureStore, BlobStore};

/// Name of the import job AMLFS starts by itself when a file system with HSM is created.
pub const INITIAL_JOB: &str = "importJobInitialAmlfsPut";

pub async fn provision(state: Arc<State>, fs: FsKey, op: String) {
    tokio::time::sleep(state.azure(timing::CREATE)).await;
    if state.opts.faults.stuck_create {
        return;
    }
    if state.opts.faults.fail_create {
        if let Some(e) = state.lock().filesystems.get_mut(&fs.key()) {
            e.resource.properties.provisioning_state = Some("Failed".into());
        }
        let detail = ErrorDetail {
            code: "InsufficientCapacity".into(),
            message: "Not enough capacity in the region for the requested file system.".into(),
            ..Default::default()
        };
        return state.finish_operation(&op, Some(detail));
    }
    let key = fs.key();
    let initial = {
        let mut inner = state.lock();
        let Some(e) = inner.filesystems.get_mut(&key) else {
            return;
        };
        if let Err(err) = std::fs::create_dir_all(&e.dir) {
            e.resource.properties.provisioning_state = Some("Failed".into());
            drop(inner);
            state.finish_operation(
                &op,
                Some(ErrorDetail {
                    code: "InternalServerError".into(),
                    message: format!("cannot create the file system directory: {err}"),
                    ..Default::default()
                }),
            );
            return;
        }
        // As in Azure, missing provider roles on the HSM account fail the create late.
        let account = e
            .resource
            .properties
            .hsm_settings()
            .and_then(|st| crate::azure::resources::storage_account(&st.container));
        if let Some(account) = account {
            let missing: Vec<&str> = crate::azure::roles::ROLES
                .iter()
                .filter(|(_, id)| !inner.provider_has(&account, id, true))
                .map(|(name, _)| *name)
                .collect();
            if !missing.is_empty() {
                let Some(e) = inner.filesystems.get_mut(&key) else {
                    return;
                };
                e.resource.properties.provisioning_state = Some("Failed".into());
                drop(inner);
                state.finish_operation(
                    &op,
                    Some(ErrorDetail {
                        code: "AmlFilesystemStorageAccountAuthorizationFailed".into(),
                        message: format!(
                            "The HPC Cache Resource Provider lacks {} on {account}.",
                            missing.join(" and ")
                        ),
                        ..Default::default()
                    }),
                );
                return;
            }
        }
        let Some(e) = inner.filesystems.get_mut(&key) else {
            return;
        };
        let per_tib = sku_of(&e.resource).map_or(0.0, |s| f64::from(s.mb_per_tib()));
        let p = &mut e.resource.properties;
        p.provisioning_state = Some("Succeeded".into());
        p.health = Some(Health {
            state: Some("Available".into()),
            status_description: Some("amlFilesystem is ok.".into()),
            ..Default::default()
        });
        p.throughput_mbps = p.storage_capacity_tib.map(|c| c * per_tib);
        p.client_info = Some(ClientInfo {
            mgs_address: Some("127.0.0.1".into()),
            // As Azure words it, placeholder and all.
            mount_command: Some(
                "mount -t lustre -o noatime,user_xattr 127.0.0.1@tcp0:/lustrefs /<local path>"
                    .into(),
            ),
            lustre_version: Some("2.15".into()),
            ..Default::default()
        });
        p.extra.insert(
            "currentStorageCapacityTiB".into(),
            json!(p.storage_capacity_tib.map(|c| c as u64)),
        );
        p.hsm_settings().map(|s| {
            s.import_prefixes_initial
                .clone()
                .unwrap_or_else(|| vec!["/".into()])
        })
    };
    state.finish_operation(&op, None);
    // With HSM settings, AMLFS imports the initial prefixes by itself.
    if let Some(prefixes) = initial {
        let location = state
            .lock()
            .filesystems
            .get(&key)
            .and_then(|e| e.resource.location.clone());
        let props = ImportJobProperties {
            import_prefixes: Some(prefixes),
            ..Default::default()
        };
        start_import_job(
            &state,
            &fs,
            INITIAL_JOB,
            location,
            props,
            Default::default(),
        );
    }
}

/// Records an import job (defaults as ARM applies them: prefixes `/`, mode `Fail`, no
/// errors tolerated) and starts it; returns the resource and its PUT's async operation.
pub fn start_import_job(
    state: &Arc<State>,
    fs: &FsKey,
    name: &str,
    location: Option<String>,
    asked: ImportJobProperties,
    extra: std::collections::BTreeMap<String, serde_json::Value>,
) -> (ImportJob, String) {
    let key = fs.job_key(name);
    let resource = ImportJob {
        id: Some(format!("{}/importJobs/{name}", fs.id())),
        name: Some(name.into()),
        kind: Some("Microsoft.StorageCache/amlFilesystems/importJobs".into()),
        location,
        properties: ImportJobProperties {
            admin_status: Some("Active".into()),
            provisioning_state: Some("Creating".into()),
            import_prefixes: Some(asked.import_prefixes.unwrap_or_else(|| vec!["/".into()])),
            conflict_resolution_mode: Some(
                asked
                    .conflict_resolution_mode
                    .unwrap_or_else(|| "Fail".into()),
            ),
            maximum_errors: Some(asked.maximum_errors.unwrap_or(0)),
            status: Some(JobStatusBody {
                state: Some("InProgress".into()),
                status_message: Some("Import job is queued.".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        extra,
    };
    state.count_job("import");
    state.lock().jobs.insert(
        key.clone(),
        JobEntry {
            fs_key: fs.key(),
            resource: resource.clone(),
            task: None,
        },
    );
    let op = run_import_job(state, fs, &key);
    (resource, op)
}

/// Runs the recorded import job `key` from its start; returns the async operation its PUT
/// answers with.
pub fn run_import_job(state: &Arc<State>, fs: &FsKey, key: &str) -> String {
    let op = state.start_operation();
    let task = tokio::spawn(import_job(
        state.clone(),
        fs.clone(),
        key.to_string(),
        op.clone(),
    ));
    if let Some(j) = state.lock().jobs.get_mut(key) {
        j.task = Some(task.abort_handle());
    }
    op
}

/// Runs an archive of `path` (already recorded as `InProgress`) from its start.
pub fn run_archive(state: &Arc<State>, fs: &FsKey, path: String) {
    let task = tokio::spawn(archive(state.clone(), fs.clone(), path));
    if let Some(e) = state.lock().filesystems.get_mut(&fs.key()) {
        e.archive = Some(task.abort_handle());
    }
}

pub async fn delete(state: Arc<State>, fs: FsKey, op: String) {
    tokio::time::sleep(state.azure(timing::DELETE)).await;
    let key = fs.key();
    let removed = {
        let mut inner = state.lock();
        inner.jobs.retain(|_, j| j.fs_key != key);
        inner.filesystems.remove(&key)
    };
    if let Some(e) = removed {
        let _ = std::fs::remove_dir_all(&e.dir);
    }
    state.finish_operation(&op, None);
}

/// Who writes to the HSM container: AMLFS's archive leaves no stage metadata behind.
#[derive(Clone, Copy)]
enum Writer {
    Import,
    Archive,
}

/// The blob store behind an HSM container id.
fn store(state: &State, container_id: &str, writer: Writer) -> Result<Arc<dyn BlobStore>, String> {
    let (account, container) = crate::azure::resources::container_parts(container_id)
        .ok_or_else(|| format!("not a container id: {container_id}"))?;
    let store = AzureStore::from_env(&container_url(state, &account, &container))
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(match writer {
        Writer::Import => store,
        Writer::Archive => store.without_checksum_metadata(),
    }))
}

/// The blob service endpoint of `account`: the one the emulator was given (Azurite), else
/// Azure's.
pub fn blob_endpoint(state: &State, account: &str) -> String {
    state
        .opts
        .blob_endpoint
        .clone()
        .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
}

/// The URL of `container` of `account`.
pub fn container_url(state: &State, account: &str, container: &str) -> String {
    format!(
        "{}/{container}",
        blob_endpoint(state, account).trim_end_matches('/')
    )
}

/// The HSM container and the directory of a ready file system.
fn hsm_of(state: &State, fs_key: &str) -> Result<(String, std::path::PathBuf), String> {
    let inner = state.lock();
    let e = inner
        .filesystems
        .get(fs_key)
        .ok_or("the file system is gone")?;
    let container = e
        .resource
        .properties
        .hsm_settings()
        .map(|s| s.container.clone())
        .ok_or("the file system has no HSM settings")?;
    Ok((container, e.dir.clone()))
}

/// The file system's throughput in MB/s, which an archive's data time follows.
fn throughput(state: &State, fs_key: &str) -> f64 {
    state
        .lock()
        .filesystems
        .get(fs_key)
        .and_then(|e| e.resource.properties.throughput_mbps)
        .unwrap_or(0.0)
}

fn mover(
    state: &State,
    fs_key: &str,
    container: &str,
    dir: std::path::PathBuf,
    writer: Writer,
) -> Result<BlobMover, String> {
    let store = store(state, container, writer)?;
    let transfers = store.default_transfers();
    Ok(BlobMover::new(
        format!("emulator:{fs_key}"),
        dir,
        store,
        state.journal.clone(),
        transfers,
    ))
}

fn update_job(state: &State, key: &str, f: impl FnOnce(&mut ImportJobProperties)) {
    if let Some(j) = state.lock().jobs.get_mut(key) {
        f(&mut j.resource.properties);
    }
}

pub async fn import_job(state: Arc<State>, fs: FsKey, key: String, op: String) {
    // The PUT's operation ends in seconds; the job runs on.
    update_job(&state, &key, |p| {
        p.provisioning_state = Some("Succeeded".into())
    });
    state.finish_operation(&op, None);
    let (container, dir) = match hsm_of(&state, &fs.key()) {
        Ok(v) => v,
        Err(msg) => return fail_job(&state, &key, &msg),
    };
    tokio::time::sleep(state.opts.timing.hold("import") + state.azure(timing::IMPORT)).await;
    let now = crate::clock::iso8601(crate::clock::now_secs());
    let mut req = None;
    update_job(&state, &key, |p| {
        let status = p.status.get_or_insert_with(Default::default);
        status.state = Some("InProgress".into());
        status.status_message = Some("Import job is running.".into());
        status.extra.insert("lastStartedTime".into(), json!(now));
        let mode = match p.conflict_resolution_mode.as_deref() {
            Some("Skip") => ConflictMode::Skip,
            Some("OverwriteIfDirty") => ConflictMode::OverwriteIfDirty,
            Some("OverwriteAlways") => ConflictMode::OverwriteAlways,
            _ => ConflictMode::Fail,
        };
        req = Some(ImportRequest {
            job: key.clone(),
            prefixes: p
                .import_prefixes
                .clone()
                .unwrap_or_else(|| vec!["/".into()])
                .iter()
                .map(|s| s.trim_start_matches('/').to_string())
                .collect(),
            conflict: mode,
            max_errors: p.maximum_errors.unwrap_or(0),
            dry_run: false,
            cancel: None,
            detach: false,
        });
    });
    let Some(req) = req else { return };
    if state.opts.faults.fail_jobs {
        return fail_job(&state, &key, "injected failure");
    }
    let mover = match mover(&state, &fs.key(), &container, dir, Writer::Import) {
        Ok(m) => m,
        Err(msg) => return fail_job(&state, &key, &msg),
    };
    // The job's counters move while it runs, as the service's do, so a client can show progress.
    let live = {
        let (state, key) = (state.clone(), key.clone());
        Box::new(move |t: crate::mover::Tally| {
            update_job(&state, &key, |p| {
                let status = p.status.get_or_insert_with(Default::default);
                status.total_blobs_imported = Some(t.files as f64);
            })
        })
    };
    let result = mover.import(req, live).await;
    if let Ok(r) = &result {
        let blobs = (r.imported + r.directories + r.up_to_date) as f64;
        tokio::time::sleep(state.azure(blobs * timing::IMPORT_PER_BLOB)).await;
    }
    match result {
        Ok(report) => update_job(&state, &key, |p| {
            let status = p.status.get_or_insert_with(Default::default);
            status.state = Some(
                match report.status {
                    JobStatus::Completed => "Completed",
                    JobStatus::CompletedPartial => "CompletedPartial",
                    JobStatus::Failed => "Failed",
                }
                .into(),
            );
            status.status_message = Some(report.summary());
            status.total_blobs_imported = Some(report.imported as f64);
            status.total_conflicts = Some(report.conflicts_skipped as f64);
            status.total_errors = Some(report.errors.len() as f64);
            status
                .extra
                .insert("importedFiles".into(), json!(report.imported));
            status
                .extra
                .insert("importedDirectories".into(), json!(report.directories));
            status
                .extra
                .insert("preexistingFiles".into(), json!(report.up_to_date));
            status.extra.insert(
                "lastCompletionTime".into(),
                json!(crate::clock::iso8601(crate::clock::now_secs())),
            );
            // Azure's import job status has no error code: a conflict that stopped the job
            // is told by its count and its message.
            if let Some(c) = &report.conflict {
                status.total_conflicts = Some(status.total_conflicts.unwrap_or(0.0).max(1.0));
                status.status_message = Some(format!("conflict at {c}"));
            }
        }),
        Err(e) => fail_job(&state, &key, &e.to_string()),
    }
}

fn fail_job(state: &State, key: &str, msg: &str) {
    update_job(state, key, |p| {
        let status = p.status.get_or_insert_with(Default::default);
        status.state = Some("Failed".into());
        status.status_message = Some(msg.into());
    });
}

pub async fn archive(state: Arc<State>, fs: FsKey, path: String) {
    let key = fs.key();
    let finish = |st: &str, detail: Option<JobStatusBody>| {
        if let Some(e) = state.lock().filesystems.get_mut(&key) {
            set_archive(e, &path, st, detail);
            e.archive = None;
        }
    };
    let failed = |msg: String| {
        Some(JobStatusBody {
            error_message: Some(msg),
            ..Default::default()
        })
    };
    let (container, dir) = match hsm_of(&state, &key) {
        Ok(v) => v,
        Err(msg) => return finish("Failed", failed(msg)),
    };
    tokio::time::sleep(state.opts.timing.hold("archive") + state.azure(timing::ARCHIVE)).await;
    let mover = match mover(&state, &key, &container, dir, Writer::Archive) {
        Ok(m) => m,
        Err(msg) => return finish("Failed", failed(msg)),
    };
    let req = ExportRequest {
        job: format!("archive:{path}"),
        paths: vec![path.trim_start_matches('/').to_string()],
        dry_run: false,
        auto: false,
        cancel: None,
        detach: false,
    };
    // percentComplete moves as files are written, as the service's does.
    let live = {
        let (state, key) = (state.clone(), key.clone());
        Box::new(move |t: crate::mover::Tally| {
            if !t.listed || t.found_files == 0 {
                return;
            }
            let percent = (t.files * 100 / t.found_files).min(99) as f64;
            let mut inner = state.lock();
            let status = inner
                .filesystems
                .get_mut(&key)
                .and_then(|e| e.resource.properties.hsm.as_mut())
                .and_then(|h| h.archive_status.as_mut())
                .and_then(|a| a.first_mut())
                .and_then(|a| a.status.as_mut());
            if let Some(status) = status {
                status.percent_complete = Some(percent);
            }
        })
    };
    let result = mover.export(req, live).await;
    if let Ok(r) = &result {
        tokio::time::sleep(state.azure(timing::data(r.bytes, throughput(&state, &key)))).await;
    }
    match result {
        Ok(r) if r.errors.is_empty() => finish(
            "Completed",
            Some(JobStatusBody {
                percent_complete: Some(100.0),
                ..Default::default()
            }),
        ),
        Ok(r) => finish(
            "Failed",
            Some(JobStatusBody {
                percent_complete: Some(100.0),
                error_code: Some("ArchiveErrors".into()),
                error_message: Some(r.errors.join("; ")),
                ..Default::default()
            }),
        ),
        Err(e) => finish(
            "Failed",
            Some(JobStatusBody {
                error_code: Some("ArchiveFailed".into()),
                error_message: Some(e.to_string()),
                ..Default::default()
            }),
        ),
    }
}

/// The collection auto-export jobs are kept under (`FsKey::child_key`).
pub const AUTO_EXPORTS: &str = "autoexportjobs";

/// The collection auto-import jobs are kept under (`FsKey::child_key`).
pub const AUTO_IMPORTS: &str = "autoimportjobs";

/// An enabled auto-export job: passes over its prefixes, each under the file system's HSM
/// lock (one HSM job at a time), until it is disabled or gone.
pub async fn auto_export(state: Arc<State>, fs: FsKey, key: String) {
    let fs_key = fs.key();
    let me = {
        let mut inner = state.lock();
        let n = inner.auto_export_loops.get(&key).map_or(0, |n| n + 1);
        inner.auto_export_loops.insert(key.clone(), n);
        n
    };
    loop {
        let prefixes: Vec<String> = {
            let inner = state.lock();
            if inner.auto_export_loops.get(&key) != Some(&me) {
                return;
            }
            match inner.auto_exports.get(&key) {
                Some(v) if v["properties"]["adminStatus"] == "Enable" => {
                    v["properties"]["autoExportPrefixes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.as_str())
                        .map(|p| p.trim_start_matches('/').to_string())
                        .collect()
                }
                _ => {
                    drop(inner);
                    // Disabled while a pass ran: it has now stopped, and the slot is free.
                    stopped(&state, &key);
                    return;
                }
            }
        };
        let (container, dir) = match hsm_of(&state, &fs_key) {
            Ok(v) => v,
            Err(_) => return,
        };
        let pass = {
            match mover(&state, &fs_key, &container, dir, Writer::Archive) {
                Ok(m) => m
                    .export(
                        ExportRequest {
                            job: format!("auto-export:{key}"),
                            paths: prefixes,
                            dry_run: false,
                            auto: false,
                            cancel: None,
                            detach: false,
                        },
                        Box::new(|_| {}),
                    )
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        };
        if let Some(v) = state.lock().auto_exports.get_mut(&key) {
            let status = &mut v["properties"]["status"];
            let iterations = status["exportIterationCount"].as_u64().unwrap_or(0) + 1;
            status["exportIterationCount"] = json!(iterations);
            match pass {
                Ok(r) => {
                    let total = status["totalFilesExported"].as_u64().unwrap_or(0) + r.exported;
                    status["totalFilesExported"] = json!(total);
                    status["lastSuccessfulIterationCompletionTimeUTC"] =
                        json!(crate::clock::iso8601(crate::clock::now_secs()));
                }
                Err(e) => {
                    status["state"] = json!("Failed");
                    status["statusMessage"] = json!(e);
                    return;
                }
            }
        }
        tokio::time::sleep(
            state
                .opts
                .timing
                .hold("auto-export")
                .max(std::time::Duration::from_millis(100)),
        )
        .await;
    }
}

/// An auto-export job that was `Disabling` is `Disabled`.
pub fn stopped(state: &State, key: &str) {
    if let Some(v) = state.lock().auto_exports.get_mut(key)
        && v["properties"]["status"]["state"] == "Disabling"
    {
        v["properties"]["status"]["state"] = json!("Disabled");
    }
}

/// The collection expansion jobs are kept under (`FsKey::child_key`).
pub const EXPANSIONS: &str = "expansionjobs";

/// An expansion job (by its key) grows the file system to `new` TiB after Azure's time.
pub async fn expand(state: Arc<State>, fs: FsKey, key: String, new: f64) {
    let hold = state.opts.timing.hold("expansion");
    tokio::time::sleep(hold + state.azure(timing::EXPANSION)).await;
    let mut inner = state.lock();
    if let Some(e) = inner.filesystems.get_mut(&fs.key()) {
        // Azure keeps what was asked at create in storageCapacityTiB, and reports the
        // grown size (and the throughput it brings) beside it.
        let per_tib = sku_of(&e.resource).map_or(0, |s| s.mb_per_tib());
        let p = &mut e.resource.properties;
        p.extra
            .insert("currentStorageCapacityTiB".into(), json!(new as u64));
        p.throughput_mbps = Some(new * f64::from(per_tib));
    }
    if let Some(j) = inner.expansions.get_mut(&key) {
        j["properties"]["status"]["state"] = json!("Completed");
        j["properties"]["status"]["percentComplete"] = json!(100.0);
        j["properties"]["status"]["completionTimeUTC"] =
            json!(crate::clock::iso8601(crate::clock::now_secs()));
    }
}

/// The SKU a file system resource names, if it is one stage knows.
pub fn sku_of(r: &AmlFilesystem) -> Option<SpecSku> {
    let name = r.sku.as_ref()?.name.as_str();
    SpecSku::ALL.iter().copied().find(|s| s.name() == name)
}
