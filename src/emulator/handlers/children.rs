//! The file system's other children: auto-export, auto-import and expansion jobs.

use super::*;

/// Creates or updates an auto-export job; enabling it starts its export loop.
pub(super) fn put_auto_export(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
    if let Some(r) = not_ready(state, &fs) {
        return r;
    }
    let req: serde_json::Value = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let Some(prefixes) = req["properties"]["autoExportPrefixes"].as_array().cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "properties.autoExportPrefixes is required.",
            Some("autoExportPrefixes"),
        );
    };
    // "Number of maximum allowed paths for now is 1" (the spec).
    if prefixes.len() != 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "autoExportPrefixes must hold exactly one path for now.",
            Some("autoExportPrefixes"),
        );
    }
    let enable = req["properties"]["adminStatus"]
        .as_str()
        .unwrap_or("Enable")
        == "Enable";
    let key = fs.child_key(work::AUTO_EXPORTS, &job);
    let location = req["location"].as_str().unwrap_or("eastus").to_string();
    let already = state.lock().auto_exports.get(&key).is_some_and(|v| {
        v["properties"]["adminStatus"] == "Enable"
            || v["properties"]["status"]["state"] == "Disabling"
    });
    if enable
        && !already
        && let Some(r) = hsm_busy(state, &fs)
    {
        return r;
    }
    let mut inner = state.lock();
    let v = json!({
        "id": format!("{}/autoExportJobs/{job}", fs.id()),
        "name": job,
        "type": "Microsoft.StorageCache/amlFilesystems/autoExportJobs",
        "location": location,
        "properties": {
            "provisioningState": "Succeeded",
            "adminStatus": if enable { "Enable" } else { "Disable" },
            "autoExportPrefixes": prefixes,
            "status": { "state": if enable { "InProgress" } else { "Disabled" },
                        "totalFilesExported": 0, "exportIterationCount": 0 },
        },
    });
    inner.auto_exports.insert(key.clone(), v.clone());
    drop(inner);
    if enable {
        state.count_job("auto-export");
        tokio::spawn(work::auto_export(state.clone(), fs, key));
    }
    json_response(StatusCode::CREATED, &v)
}

/// Enables or disables an auto-export job (`adminStatus`).
pub(super) fn patch_auto_export(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
    let req: serde_json::Value = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let key = fs.child_key(work::AUTO_EXPORTS, &job);
    let mut inner = state.lock();
    let Some(v) = inner.auto_exports.get_mut(&key) else {
        return not_found(&job);
    };
    let enable = match req["properties"]["adminStatus"].as_str() {
        Some("Enable") => true,
        Some("Disable") => false,
        _ => return json_response(StatusCode::OK, v),
    };
    let was = v["properties"]["adminStatus"] == "Enable";
    if enable && !was {
        drop(inner);
        if let Some(r) = hsm_busy(state, &fs) {
            return r;
        }
        inner = state.lock();
    }
    let Some(v) = inner.auto_exports.get_mut(&key) else {
        return not_found(&job);
    };
    // Disabling ends when the pass under way does: the loop sets Disabled.
    set_admin(v, enable, was);
    let body = v.clone();
    drop(inner);
    if enable {
        tokio::spawn(work::auto_export(state.clone(), fs, key));
    }
    json_response(StatusCode::OK, &body)
}

pub(super) fn get_expansion(state: &State, fs: &FsKey, job: &str) -> Response {
    match state
        .lock()
        .expansions
        .get(&fs.child_key(work::EXPANSIONS, job))
    {
        Some(v) => json_response(StatusCode::OK, v),
        None => not_found(job),
    }
}

/// Grows the file system to `newStorageCapacityTiB` (a larger multiple of the SKU's step)
/// after the job delay.
pub(super) fn put_expansion(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
    if let Some(r) = not_ready(state, &fs) {
        return r;
    }
    let key = fs.child_key(work::EXPANSIONS, &job);
    if let Some(v) = state.lock().expansions.get(&key) {
        return json_response(StatusCode::OK, v);
    }
    if let Some(r) = hsm_busy(state, &fs) {
        return r;
    }
    let req: serde_json::Value = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let Some(new) = req["properties"]["newStorageCapacityTiB"].as_f64() else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "properties.newStorageCapacityTiB is required.",
            Some("newStorageCapacityTiB"),
        );
    };
    let (current, step, location) = {
        let inner = state.lock();
        let Some(e) = inner.filesystems.get(&fs.key()) else {
            return not_found(&fs.id());
        };
        let step = crate::emulator::work::sku_of(&e.resource)
            .map_or(1.0, |s| f64::from(s.capacity_step_tib()));
        (
            e.resource.current_capacity_tib().unwrap_or(0.0),
            step,
            e.resource.location.clone().unwrap_or_default(),
        )
    };
    if new <= current || new % step != 0.0 {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            &format!(
                "newStorageCapacityTiB must be a multiple of {step} greater than the current {current} TiB."
            ),
            Some("newStorageCapacityTiB"),
        );
    }
    let v = json!({
        "id": format!("{}/expansionJobs/{job}", fs.id()),
        "name": job,
        "type": "Microsoft.StorageCache/amlFilesystems/expansionJobs",
        "location": location,
        "properties": {
            "provisioningState": "Succeeded",
            "newStorageCapacityTiB": new,
            "status": { "state": "InProgress", "percentComplete": 0.0,
                        "startTimeUTC": crate::clock::iso8601(crate::clock::now_secs()) },
        },
    });
    state.lock().expansions.insert(key.clone(), v.clone());
    state.count_job("expansion");
    tokio::spawn(work::expand(state.clone(), fs, key, new));
    json_response(StatusCode::CREATED, &v)
}

/// Creates an auto-import job. It imports nothing here (it follows the blob change feed,
/// which Azurite lacks), but enabled it holds the file system's one HSM slot, as on Azure,
/// until it is disabled and has stopped.
pub(super) fn put_auto_import(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
    if let Some(r) = not_ready(state, &fs) {
        return r;
    }
    let req: serde_json::Value = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let enable = req["properties"]["adminStatus"]
        .as_str()
        .unwrap_or("Enable")
        == "Enable";
    let key = fs.child_key(work::AUTO_IMPORTS, &job);
    if enable && let Some(r) = hsm_busy(state, &fs) {
        return r;
    }
    let prefixes = req["properties"]["autoImportPrefixes"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![json!("/")]);
    let v = json!({
        "id": format!("{}/autoImportJobs/{job}", fs.id()),
        "name": job,
        "type": "Microsoft.StorageCache/amlFilesystems/autoImportJobs",
        "location": req["location"].as_str().unwrap_or("eastus"),
        "properties": {
            "provisioningState": "Succeeded",
            "adminStatus": if enable { "Enable" } else { "Disable" },
            "autoImportPrefixes": prefixes,
            "conflictResolutionMode": req["properties"]["conflictResolutionMode"].as_str().unwrap_or("Skip"),
            "status": { "state": if enable { "InProgress" } else { "Disabled" } },
        },
    });
    state.lock().auto_imports.insert(key, v.clone());
    if enable {
        state.count_job("auto-import");
    }
    json_response(StatusCode::CREATED, &v)
}

/// Disables (or enables) an auto-import job; disabling takes Azure's cancel time.
pub(super) fn patch_auto_import(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
    let req: serde_json::Value = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let key = fs.child_key(work::AUTO_IMPORTS, &job);
    let enable = match req["properties"]["adminStatus"].as_str() {
        Some("Enable") => true,
        Some("Disable") => false,
        _ => {
            return match state.lock().auto_imports.get(&key) {
                Some(v) => json_response(StatusCode::OK, v),
                None => not_found(&job),
            };
        }
    };
    let was = match state.lock().auto_imports.get(&key) {
        Some(v) => v["properties"]["adminStatus"] == "Enable",
        None => return not_found(&job),
    };
    if enable
        && !was
        && let Some(r) = hsm_busy(state, &fs)
    {
        return r;
    }
    let mut inner = state.lock();
    let Some(v) = inner.auto_imports.get_mut(&key) else {
        return not_found(&job);
    };
    set_admin(v, enable, was);
    let out = v.clone();
    drop(inner);
    if was && !enable {
        let st = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(st.azure(crate::emulator::timing::CANCEL)).await;
            if let Some(v) = st.lock().auto_imports.get_mut(&key)
                && v["properties"]["status"]["state"] == "Disabling"
            {
                v["properties"]["status"]["state"] = json!("Disabled");
            }
        });
    }
    json_response(StatusCode::OK, &out)
}

/// An auto job's `adminStatus` and the state it puts the job in: a running job that is
/// disabled is `Disabling` until it has stopped.
fn set_admin(v: &mut serde_json::Value, enable: bool, was: bool) {
    v["properties"]["adminStatus"] = json!(if enable { "Enable" } else { "Disable" });
    v["properties"]["status"]["state"] = json!(match (enable, was) {
        (true, _) => "InProgress",
        (false, true) => "Disabling",
        (false, false) => "Disabled",
    });
}
