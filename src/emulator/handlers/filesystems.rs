//! amlFilesystems: create (validated against AMLFS's rules), read, patch, delete.

use super::*;

pub(super) fn get_fs(state: &State, fs: &FsKey) -> Response {
    match state.lock().filesystems.get(&fs.key()) {
        Some(e) => json_response(StatusCode::OK, &shown(&e.resource)),
        None => not_found(&fs.id()),
    }
}

/// A file system as Azure shows it: while it is being created, its HSM settings are not
/// reported yet (`hsm: {}`) and its client information is empty strings, as the recorded
/// 201 of a create has them. A client must not take that for drift.
pub(super) fn shown(r: &AmlFilesystem) -> AmlFilesystem {
    let mut r = r.clone();
    if r.properties.provisioning_state.as_deref() == Some("Creating") {
        r.properties.hsm = Some(Hsm::default());
        r.properties.client_info = Some(ClientInfo {
            mgs_address: Some(String::new()),
            mount_command: Some(String::new()),
            lustre_version: Some(String::new()),
            ..Default::default()
        });
    }
    r
}

/// What ARM would refuse in a create request; (message, target).
pub(super) fn validate(r: &AmlFilesystem) -> Result<(), (String, &'static str)> {
    if r.location.as_deref().unwrap_or_default().is_empty() {
        return Err(("location is required".into(), "location"));
    }
    let sku_name = r.sku.as_ref().map(|s| s.name.as_str()).unwrap_or_default();
    let Some(sku) = SpecSku::ALL.iter().find(|s| s.name() == sku_name) else {
        return Err((format!("unknown SKU '{sku_name}'"), "sku.name"));
    };
    let cap = r.properties.storage_capacity_tib.unwrap_or(0.0);
    let step = f64::from(sku.capacity_step_tib());
    if cap < step || (cap / step).fract() != 0.0 {
        return Err((
            format!("storageCapacityTiB must be a multiple of {step} for {sku_name}"),
            "properties.storageCapacityTiB",
        ));
    }
    if r.properties
        .filesystem_subnet
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        return Err((
            "filesystemSubnet is required".into(),
            "properties.filesystemSubnet",
        ));
    }
    if r.properties.maintenance_window.is_none() {
        return Err((
            "maintenanceWindow is required".into(),
            "properties.maintenanceWindow",
        ));
    }
    if let Some(s) = r.properties.hsm_settings() {
        if crate::azure::resources::container_parts(&s.container).is_none() {
            return Err((
                "hsm container must be a container resource id".into(),
                "properties.hsm.settings.container",
            ));
        }
        if crate::azure::resources::container_parts(&s.logging_container).is_none() {
            return Err((
                "hsm loggingContainer must be a container resource id".into(),
                "properties.hsm.settings.loggingContainer",
            ));
        }
        if same_id(&s.container, &s.logging_container) {
            return Err((
                "the logging container must differ from the data container".into(),
                "properties.hsm.settings.loggingContainer",
            ));
        }
    }
    Ok(())
}

/// Settings that can be set only at creation, as (name, value) for a diff.
pub(super) fn immutable(r: &AmlFilesystem) -> Vec<(&'static str, String)> {
    let settings = r.properties.hsm_settings();
    vec![
        (
            "sku.name",
            r.sku.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
        ),
        (
            "properties.storageCapacityTiB",
            format!("{:?}", r.properties.storage_capacity_tib),
        ),
        (
            "properties.filesystemSubnet",
            r.properties
                .filesystem_subnet
                .clone()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        ),
        ("zones", format!("{:?}", r.zones)),
        (
            "properties.hsm.settings.container",
            settings
                .map(|s| s.container.to_ascii_lowercase())
                .unwrap_or_default(),
        ),
        (
            "properties.hsm.settings.loggingContainer",
            settings
                .map(|s| s.logging_container.to_ascii_lowercase())
                .unwrap_or_default(),
        ),
    ]
}

pub(super) fn put_fs(state: &St, fs: FsKey, body: &[u8]) -> Response {
    let req: AmlFilesystem = match parse_body(body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    if let Err((message, target)) = validate(&req) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            &message,
            Some(target),
        );
    }
    let mut inner = state.lock();
    // Azure checks the subnet at once. (Its exact error code is in none of the spec, the
    // docs or the recordings; `InvalidParameter` on the field stands for it.)
    let subnet = req.properties.filesystem_subnet.clone().unwrap_or_default();
    if !inner.filesystems.contains_key(&fs.key())
        && !inner.subnets.contains_key(&subnet.to_ascii_lowercase())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            &format!("The subnet '{subnet}' was not found."),
            Some("properties.filesystemSubnet"),
        );
    }
    // Roles granted a moment ago are not yet in effect: Azure refuses the create then, as it
    // would for roles never granted, until they have propagated.
    if !inner.filesystems.contains_key(&fs.key())
        && let Some(account) = req
            .properties
            .hsm_settings()
            .and_then(|st| crate::azure::resources::storage_account(&st.container))
    {
        let propagating = crate::azure::roles::ROLES.iter().any(|(_, id)| {
            inner.provider_has(&account, id, false) && !inner.provider_has(&account, id, true)
        });
        if propagating {
            return error(
                StatusCode::FORBIDDEN,
                "AmlFilesystemStorageAccountAuthorizationFailed",
                &format!(
                    "The HPC Cache Resource Provider is not authorized on {account}; a role assignment made in the last minutes may not have propagated yet."
                ),
                None,
            );
        }
    }
    if let Some(existing) = inner.filesystems.get_mut(&fs.key()) {
        if existing.resource.properties.provisioning_state.as_deref() == Some("Deleting") {
            return error(
                StatusCode::CONFLICT,
                "Conflict",
                "The file system is being deleted.",
                None,
            );
        }
        let (old, new) = (immutable(&existing.resource), immutable(&req));
        if let Some(((name, _), _)) = old.iter().zip(&new).find(|(a, b)| a.1 != b.1) {
            return error(
                StatusCode::BAD_REQUEST,
                "PropertyChangeNotAllowed",
                &format!("{name} cannot be changed after creation"),
                Some(name),
            );
        }
        existing.resource.properties.maintenance_window = req.properties.maintenance_window.clone();
        return json_response(StatusCode::OK, &shown(&existing.resource));
    }
    let mut r = req;
    r.id = Some(fs.id());
    r.name = Some(fs.name.clone());
    r.kind = Some("Microsoft.StorageCache/amlFilesystems".into());
    r.properties.provisioning_state = Some("Creating".into());
    r.properties.health = Some(Health {
        state: Some("Transitioning".into()),
        status_description: Some("The cluster is in the process of changing states".into()),
        ..Default::default()
    });
    let per_tib = work::sku_of(&r).map_or(0.0, |s| f64::from(s.mb_per_tib()));
    r.properties.throughput_mbps = r.properties.storage_capacity_tib.map(|c| c * per_tib);
    let location = r.location.clone().unwrap_or_default();
    let dir = state.opts.data_dir.join("filesystems").join(&fs.name);
    let op = crate::emulator::state::start_owed(&mut inner, Owed::Provision(fs.clone()));
    inner.filesystems.insert(
        fs.key(),
        FsEntry {
            resource: r.clone(),
            dir,
            archive: None,
        },
    );
    drop(inner);
    tokio::spawn(work::provision(state.clone(), fs.clone(), op.clone()));
    accepted(
        state,
        StatusCode::CREATED,
        &fs.subscription,
        &location,
        &op,
        serde_json::to_value(shown(&r)).ok(),
    )
}

pub(super) fn patch_fs(state: &State, fs: &FsKey, body: &[u8]) -> Response {
    let patch: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut inner = state.lock();
    let Some(e) = inner.filesystems.get_mut(&fs.key()) else {
        return not_found(&fs.id());
    };
    if let Some(w) = patch.pointer("/properties/maintenanceWindow")
        && let Ok(w) = serde_json::from_value(w.clone())
    {
        e.resource.properties.maintenance_window = Some(w);
    }
    for key in ["rootSquashSettings", "encryptionSettings"] {
        if let Some(v) = patch.pointer(&format!("/properties/{key}")) {
            e.resource.properties.extra.insert(key.into(), v.clone());
        }
    }
    if let Some(tags) = patch.get("tags") {
        e.resource.extra.insert("tags".into(), tags.clone());
    }
    json_response(StatusCode::OK, &e.resource)
}

pub(super) fn delete_fs(state: &St, fs: FsKey) -> Response {
    let mut inner = state.lock();
    let key = fs.key();
    let Some(e) = inner.filesystems.get_mut(&key) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    e.resource.properties.provisioning_state = Some("Deleting".into());
    if let Some(a) = e.archive.take() {
        a.abort();
    }
    let location = e.resource.location.clone().unwrap_or_default();
    for job in inner.jobs.values_mut().filter(|j| j.fs_key == key) {
        if let Some(t) = job.task.take() {
            t.abort();
        }
    }
    let op = crate::emulator::state::start_owed(&mut inner, Owed::Delete(fs.clone()));
    drop(inner);
    tokio::spawn(work::delete(state.clone(), fs.clone(), op.clone()));
    accepted_delete(state, &fs.subscription, &location, &op)
}
