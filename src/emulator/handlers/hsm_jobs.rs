//! HSM work on a file system: import jobs, archive and its cancellation.

use super::*;

pub(super) fn archive(state: &St, fs: FsKey, body: &[u8]) -> Response {
    if let Some(r) = not_ready(state, &fs) {
        return r;
    }
    if let Some(r) = hsm_busy(state, &fs) {
        return r;
    }
    let req: ArchiveRequest = serde_json::from_slice(body).unwrap_or_default();
    let path = req.filesystem_path.unwrap_or_else(|| "/".into());
    {
        let mut inner = state.lock();
        let Some(e) = inner.filesystems.get_mut(&fs.key()) else {
            return not_found(&fs.id());
        };
        set_archive(e, &path, "InProgress", None);
    }
    state.count_job("archive");
    work::run_archive(state, &fs, path);
    StatusCode::OK.into_response()
}

/// Records the archive's state on the file system resource.
pub fn set_archive(e: &mut FsEntry, path: &str, state: &str, detail: Option<JobStatusBody>) {
    let hsm = e
        .resource
        .properties
        .hsm
        .get_or_insert_with(Default::default);
    let now = crate::clock::iso8601(crate::clock::now_secs());
    let mut status = detail.unwrap_or_default();
    status.state = Some(state.into());
    if state == "InProgress" {
        status.percent_complete = Some(0.0);
        status.extra.insert("lastStartedTime".into(), json!(now));
    } else {
        let prev = hsm
            .archive_status
            .as_ref()
            .and_then(|a| a.first())
            .and_then(|a| a.status.as_ref())
            .and_then(|s| s.extra.get("lastStartedTime").cloned());
        if let Some(p) = prev {
            status.extra.insert("lastStartedTime".into(), p);
        }
        status.extra.insert("lastCompletionTime".into(), json!(now));
    }
    hsm.archive_status = Some(vec![ArchiveStatus {
        filesystem_path: Some(path.into()),
        status: Some(status),
    }]);
}

pub(super) fn cancel_archive(state: &St, fs: &FsKey) -> Response {
    let mut inner = state.lock();
    let Some(e) = inner.filesystems.get_mut(&fs.key()) else {
        return not_found(&fs.id());
    };
    if e.resource.archive_state() == Some("InProgress") {
        let path = e
            .resource
            .last_archive()
            .and_then(|a| a.filesystem_path.clone())
            .unwrap_or_else(|| "/".into());
        set_archive(e, &path, "Cancelling", None);
        // Cancelling takes its time, as Azure's does, and holds the slot until it ends.
        let (st, key) = (state.clone(), fs.key());
        tokio::spawn(async move {
            tokio::time::sleep(st.azure(crate::emulator::timing::CANCEL)).await;
            if let Some(e) = st.lock().filesystems.get_mut(&key) {
                if let Some(a) = e.archive.take() {
                    a.abort();
                }
                set_archive(e, &path, "Canceled", None);
            }
        });
    }
    StatusCode::OK.into_response()
}

pub(super) fn list_jobs(state: &State, fs: &FsKey, uri: &Uri) -> Response {
    let inner = state.lock();
    if !inner.filesystems.contains_key(&fs.key()) {
        return not_found(&fs.id());
    }
    let mut jobs: Vec<&ImportJob> = inner
        .jobs
        .values()
        .filter(|j| j.fs_key == fs.key())
        .map(|j| &j.resource)
        .collect();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    let value = jobs
        .into_iter()
        .filter_map(|j| serde_json::to_value(j).ok())
        .collect();
    drop(inner);
    paged(state, uri, value)
}

pub(super) fn get_job(state: &State, fs: &FsKey, job: &str) -> Response {
    match state.lock().jobs.get(&fs.job_key(job)) {
        Some(j) => json_response(StatusCode::OK, &j.resource),
        None => not_found(&format!("{}/importJobs/{job}", fs.id())),
    }
}

pub(super) fn put_job(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
    if let Some(r) = not_ready(state, &fs) {
        return r;
    }
    let req: ImportJob = match parse_body(body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let mode = req
        .properties
        .conflict_resolution_mode
        .clone()
        .unwrap_or_else(|| "Fail".into());
    if !["Fail", "Skip", "OverwriteIfDirty", "OverwriteAlways"].contains(&mode.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            &format!("unknown conflictResolutionMode '{mode}'"),
            Some("properties.conflictResolutionMode"),
        );
    }
    let key = fs.job_key(&job);
    if let Some(existing) = state.lock().jobs.get(&key) {
        return json_response(StatusCode::OK, &existing.resource);
    }
    if let Some(r) = hsm_busy(state, &fs) {
        return r;
    }
    let location = req.location.clone().unwrap_or_default();
    let (resource, op) = work::start_import_job(
        state,
        &fs,
        &job,
        req.location.clone(),
        ImportJobProperties {
            import_prefixes: req.properties.import_prefixes.clone(),
            conflict_resolution_mode: Some(mode),
            maximum_errors: req.properties.maximum_errors,
            ..Default::default()
        },
        req.extra.clone(),
    );
    accepted(
        state,
        StatusCode::CREATED,
        &fs.subscription,
        &location,
        &op,
        serde_json::to_value(&resource).ok(),
    )
}

fn set_job_state(j: &mut crate::emulator::state::JobEntry, state: &str, message: &str) {
    let status = j
        .resource
        .properties
        .status
        .get_or_insert_with(Default::default);
    status.state = Some(state.into());
    status.status_message = Some(message.into());
}

pub(super) fn patch_job(state: &St, fs: &FsKey, job: &str, body: &[u8]) -> Response {
    let patch: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut inner = state.lock();
    let Some(j) = inner.jobs.get_mut(&fs.job_key(job)) else {
        return not_found(&format!("{}/importJobs/{job}", fs.id()));
    };
    if patch
        .pointer("/properties/adminStatus")
        .and_then(|v| v.as_str())
        == Some("Cancel")
    {
        j.resource.properties.admin_status = Some("Cancel".into());
        let state_now = j
            .resource
            .properties
            .status
            .as_ref()
            .and_then(|s| s.state.as_deref());
        if !state_now.is_some_and(|s| job_finished(s) || s == "Cancelling") {
            set_job_state(j, "Cancelling", "Import job is being canceled.");
            // Cancelling takes its time, as Azure's does, and holds the slot until it ends.
            let (st, key) = (state.clone(), fs.job_key(job));
            tokio::spawn(async move {
                tokio::time::sleep(st.azure(crate::emulator::timing::CANCEL)).await;
                if let Some(j) = st.lock().jobs.get_mut(&key) {
                    if let Some(t) = j.task.take() {
                        t.abort();
                    }
                    set_job_state(j, "Canceled", "Import job was canceled.");
                }
            });
        }
    }
    json_response(StatusCode::OK, &j.resource)
}

/// 202 with a `Location` to poll while the job is removed, 204 when there is none, as the
/// spec has it.
pub(super) fn delete_job(state: &State, fs: &FsKey, job: &str) -> Response {
    let removed = state.lock().jobs.remove(&fs.job_key(job));
    match removed {
        Some(mut j) => {
            if let Some(t) = j.task.take() {
                t.abort();
            }
            let location = j.resource.location.clone().unwrap_or_default();
            let op = state.start_operation();
            state.finish_operation(&op, None);
            accepted_delete(state, &fs.subscription, &location, &op)
        }
        None => StatusCode::NO_CONTENT.into_response(),
    }
}
