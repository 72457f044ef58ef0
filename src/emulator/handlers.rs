//! Request handling: auth, api-version, injected faults, then one function per operation.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as Ext;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::paths::{self, FsKey, Target};
use super::state::{FsEntry, State};
use super::work;
use crate::azure::models::*;
use crate::spec::Sku as SpecSku;

pub type St = Arc<State>;

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut r = (status, serde_json::to_string(body).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// A request body, or ARM's 400 for one that does not parse.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            &e.to_string(),
            None,
        ))
    })
}

pub fn json_ok(status: StatusCode, body: &impl serde::Serialize) -> Response {
    json_response(status, body)
}

pub fn error(status: StatusCode, code: &str, message: &str, target: Option<&str>) -> Response {
    json_response(
        status,
        &ErrorResponse {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                target: target.map(str::to_string),
                details: Vec::new(),
            },
        },
    )
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The Resource '{what}' was not found."),
        None,
    )
}

/// 201/202 with the headers ARM clients follow for a long-running operation.
pub fn accepted(
    state: &State,
    status: StatusCode,
    subscription: &str,
    location: &str,
    op: &str,
    body: Option<serde_json::Value>,
) -> Response {
    let url = state.operation_url(subscription, location, op);
    let mut r = match body {
        Some(b) => json_response(status, &b),
        None => status.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert("azure-asyncoperation", v.clone());
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub async fn dispatch(
    Ext(state): Ext<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Not ARM: how many ARM requests it has served, for benchmarks of polling rates.
    if uri.path() == "/_emulator/stats" {
        return json_response(StatusCode::OK, &json!({ "requests": state.requests() }));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "));
    if !bearer {
        return error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            None,
        );
    }
    let Some(target) = paths::parse(uri.path()) else {
        return error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            &format!("No route for {}", uri.path()),
            None,
        );
    };
    let version = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("api-version="));
    // Each provider has its own api-version; Graph has none.
    let expected = match &target {
        Target::ServicePrincipals => None,
        Target::RoleAssignments { .. } | Target::RoleAssignment { .. } => {
            Some(crate::azure::roles::API_VERSION)
        }
        Target::ScaleSet { .. } => Some(crate::azure::vmss::API_VERSION),
        Target::ScaleSetNics { .. } => Some(crate::azure::vmss::NIC_API_VERSION),
        _ => Some(API_VERSION),
    };
    if expected.is_some_and(|e| version != Some(e)) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            &format!(
                "The api-version '{}' is invalid. The supported version is '{}'.",
                version.unwrap_or_default(),
                expected.unwrap_or_default()
            ),
            None,
        );
    }
    let n = state.next_request();
    let faults = &state.opts.faults;
    if faults.throttle_every.is_some_and(|k| k > 0 && n % k == 0) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request is being throttled.",
            None,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    if faults.error_every.is_some_and(|k| k > 0 && n % k == 0) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Injected server error.",
            None,
        );
    }
    match (method, target) {
        (Method::GET, Target::Filesystem { fs }) => get_fs(&state, &fs),
        (Method::PUT, Target::Filesystem { fs }) => put_fs(&state, fs, &body),
        (Method::PATCH, Target::Filesystem { fs }) => patch_fs(&state, &fs, &body),
        (Method::DELETE, Target::Filesystem { fs }) => delete_fs(&state, fs),
        (Method::POST, Target::Archive { fs }) => archive(&state, fs, &body),
        (Method::POST, Target::CancelArchive { fs }) => cancel_archive(&state, &fs),
        (Method::GET, Target::ImportJobs { fs }) => list_jobs(&state, &fs),
        (Method::GET, Target::ImportJob { fs, job }) => get_job(&state, &fs, &job),
        (Method::PUT, Target::ImportJob { fs, job }) => put_job(&state, fs, job, &body),
        (Method::PATCH, Target::ImportJob { fs, job }) => patch_job(&state, &fs, &job, &body),
        (Method::DELETE, Target::ImportJob { fs, job }) => delete_job(&state, &fs, &job),
        (Method::GET, Target::ServicePrincipals) => {
            let filter = uri.query().unwrap_or_default();
            let decoded = percent_encoding::percent_decode_str(filter).decode_utf8_lossy();
            let value = if decoded.contains(crate::azure::roles::PROVIDER_APP_ID) {
                vec![
                    json!({ "id": super::state::PROVIDER_PRINCIPAL, "appId": crate::azure::roles::PROVIDER_APP_ID }),
                ]
            } else {
                Vec::new()
            };
            json_response(StatusCode::OK, &json!({ "value": value }))
        }
        (Method::GET, Target::RoleAssignments { scope }) => {
            list_role_assignments(&state, &scope, &uri)
        }
        (Method::PUT, Target::RoleAssignment { scope, name }) => {
            put_role_assignment(&state, &scope, &name, &body, &headers)
        }
        (Method::GET, Target::AutoExportJob { fs, job }) => {
            match state
                .lock()
                .auto_exports
                .get(&fs.child_key(work::AUTO_EXPORTS, &job))
            {
                Some(v) => json_response(StatusCode::OK, v),
                None => not_found(&job),
            }
        }
        (Method::PUT, Target::AutoExportJob { fs, job }) => put_auto_export(&state, fs, job, &body),
        (Method::PATCH, Target::AutoExportJob { fs, job }) => {
            patch_auto_export(&state, fs, job, &body)
        }
        (Method::GET, Target::AutoExportJobs { fs }) => {
            let prefix = fs.children(work::AUTO_EXPORTS);
            let value: Vec<serde_json::Value> = state
                .lock()
                .auto_exports
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.clone())
                .collect();
            json_response(StatusCode::OK, &json!({ "value": value }))
        }
        (Method::GET, Target::ExpansionJob { fs, job }) => get_expansion(&state, &fs, &job),
        (Method::PUT, Target::ExpansionJob { fs, job }) => put_expansion(&state, fs, job, &body),
        (Method::GET, Target::ScaleSet { id }) => super::vmss::get(&state, &id),
        (Method::PUT, Target::ScaleSet { id }) => super::vmss::put(&state, &id, &body),
        (Method::PATCH, Target::ScaleSet { id }) => super::vmss::patch(&state, &id, &body),
        (Method::GET, Target::ScaleSetNics { id }) => super::vmss::nics(&state, &id),
        (Method::GET, Target::Operation { id }) => match state.lock().operations.get(&id) {
            Some(op) => json_response(StatusCode::OK, op),
            None => not_found(&id),
        },
        (m, _) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{m} is not supported here"),
            None,
        ),
    }
}

/// Assignments at, above or below `scope`, for the principal in `$filter=assignedTo('ID')`.
fn list_role_assignments(state: &State, scope: &str, uri: &Uri) -> Response {
    let query = uri.query().unwrap_or_default();
    let query = percent_encoding::percent_decode_str(query).decode_utf8_lossy();
    let principal = query
        .split("assignedTo('")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .map(str::to_string);
    let scope = scope.to_ascii_lowercase();
    let inner = state.lock();
    let value: Vec<_> = inner
        .role_assignments
        .iter()
        .filter(|(_, a)| {
            let s = a.scope.to_ascii_lowercase();
            (scope.starts_with(&s) || s.starts_with(&scope))
                && principal.as_ref().is_none_or(|p| *p == a.principal_id)
        })
        .map(|(name, a)| role_assignment_json(name, a))
        .collect();
    json_response(StatusCode::OK, &json!({ "value": value }))
}

fn role_assignment_json(name: &str, a: &super::state::RoleAssignment) -> serde_json::Value {
    json!({
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{name}", a.scope),
        "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "scope": a.scope,
            "roleDefinitionId": a.role_definition_id,
            "principalId": a.principal_id,
            "principalType": "ServicePrincipal",
        },
    })
}

fn put_role_assignment(
    state: &State,
    scope: &str,
    name: &str,
    body: &[u8],
    headers: &HeaderMap,
) -> Response {
    // The bearer token `owner` stands for the account's owner, who may always grant.
    let owner = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.get(7..).is_some_and(|t| t.trim() == "owner"));
    if state.opts.faults.deny_role_assignments && !owner {
        return error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "The client does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/write'.",
            None,
        );
    }
    let req: serde_json::Value = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let (Some(role), Some(principal)) = (
        req["properties"]["roleDefinitionId"].as_str(),
        req["properties"]["principalId"].as_str(),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentRequest",
            "properties.roleDefinitionId and properties.principalId are required.",
            None,
        );
    };
    let mut inner = state.lock();
    let key = name.to_ascii_lowercase();
    let same = |a: &super::state::RoleAssignment| {
        a.scope.eq_ignore_ascii_case(scope)
            && a.role_definition_id.eq_ignore_ascii_case(role)
            && a.principal_id == principal
    };
    if let Some(existing) = inner.role_assignments.get(&key) {
        if same(existing) {
            return json_response(StatusCode::OK, &role_assignment_json(&key, existing));
        }
    } else if inner.role_assignments.values().any(same) {
        return error(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            "The role assignment already exists.",
            None,
        );
    }
    let a = super::state::RoleAssignment {
        scope: scope.to_string(),
        role_definition_id: role.to_string(),
        principal_id: principal.to_string(),
    };
    let body = role_assignment_json(&key, &a);
    inner.role_assignments.insert(key, a);
    json_response(StatusCode::CREATED, &body)
}

fn get_fs(state: &State, fs: &FsKey) -> Response {
    match state.lock().filesystems.get(&fs.key()) {
        Some(e) => json_response(StatusCode::OK, &e.resource),
        None => not_found(&fs.id()),
    }
}

/// What ARM would refuse in a create request; (message, target).
fn validate(r: &AmlFilesystem) -> Result<(), (String, &'static str)> {
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
fn immutable(r: &AmlFilesystem) -> Vec<(&'static str, String)> {
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

fn put_fs(state: &St, fs: FsKey, body: &[u8]) -> Response {
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
        return json_response(StatusCode::OK, &existing.resource);
    }
    let mut r = req;
    r.id = Some(fs.id());
    r.name = Some(fs.name.clone());
    r.kind = Some("Microsoft.StorageCache/amlFilesystem".into());
    r.properties.provisioning_state = Some("Creating".into());
    r.properties.health = Some(Health {
        state: Some("Unavailable".into()),
        status_description: Some("amlFilesystem is being created.".into()),
        ..Default::default()
    });
    let location = r.location.clone().unwrap_or_default();
    let dir = state
        .opts
        .data_dir
        .join("filesystems")
        .join(fs.name.to_ascii_lowercase());
    let op = super::state::start_operation(&mut inner);
    inner.filesystems.insert(
        fs.key(),
        FsEntry {
            resource: r.clone(),
            dir,
            hsm: Arc::new(tokio::sync::Mutex::new(())),
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
        serde_json::to_value(&r).ok(),
    )
}

fn patch_fs(state: &State, fs: &FsKey, body: &[u8]) -> Response {
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

fn delete_fs(state: &St, fs: FsKey) -> Response {
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
    drop(inner);
    let op = state.start_operation();
    tokio::spawn(work::delete(state.clone(), fs.clone(), op.clone()));
    accepted(
        state,
        StatusCode::ACCEPTED,
        &fs.subscription,
        &location,
        &op,
        None,
    )
}

/// Why the file system cannot take an HSM request now, if it cannot.
/// Creates or updates an auto-export job; enabling it starts its export loop.
fn put_auto_export(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
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
    let enable = req["properties"]["adminStatus"]
        .as_str()
        .unwrap_or("Enable")
        == "Enable";
    let key = fs.child_key(work::AUTO_EXPORTS, &job);
    let location = req["location"].as_str().unwrap_or("eastus").to_string();
    let mut inner = state.lock();
    let v = json!({
        "id": format!("{}/autoExportJobs/{job}", fs.id()),
        "name": job,
        "type": "Microsoft.StorageCache/amlFilesystem/autoExportJob",
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
        tokio::spawn(work::auto_export(state.clone(), fs, key));
    }
    json_response(StatusCode::CREATED, &v)
}

/// Enables or disables an auto-export job (`adminStatus`).
fn patch_auto_export(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
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
    v["properties"]["adminStatus"] = json!(if enable { "Enable" } else { "Disable" });
    v["properties"]["status"]["state"] = json!(if enable { "InProgress" } else { "Disabled" });
    let body = v.clone();
    drop(inner);
    if enable {
        tokio::spawn(work::auto_export(state.clone(), fs, key));
    }
    json_response(StatusCode::OK, &body)
}

fn get_expansion(state: &State, fs: &FsKey, job: &str) -> Response {
    match state
        .lock()
        .expansions
        .get(&fs.child_key("expansionjobs", job))
    {
        Some(v) => json_response(StatusCode::OK, v),
        None => not_found(job),
    }
}

/// Grows the file system to `newStorageCapacityTiB` (a larger multiple of the SKU's step)
/// after the job delay.
fn put_expansion(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
    if let Some(r) = not_ready(state, &fs) {
        return r;
    }
    let key = fs.child_key("expansionjobs", &job);
    if let Some(v) = state.lock().expansions.get(&key) {
        return json_response(StatusCode::OK, v);
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
        let step =
            super::work::sku_of(&e.resource).map_or(1.0, |s| f64::from(s.capacity_step_tib()));
        (
            e.resource.properties.storage_capacity_tib.unwrap_or(0.0),
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
    let st = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(st.opts.job_delay.max(st.opts.provision_delay / 2)).await;
        let mut inner = st.lock();
        if let Some(e) = inner.filesystems.get_mut(&fs.key()) {
            e.resource.properties.storage_capacity_tib = Some(new);
        }
        if let Some(j) = inner.expansions.get_mut(&key) {
            j["properties"]["status"]["state"] = json!("Completed");
            j["properties"]["status"]["percentComplete"] = json!(100.0);
            j["properties"]["status"]["completionTimeUTC"] =
                json!(crate::clock::iso8601(crate::clock::now_secs()));
        }
    });
    json_response(StatusCode::CREATED, &v)
}

fn not_ready(state: &State, fs: &FsKey) -> Option<Response> {
    match state.lock().filesystems.get(&fs.key()) {
        None => Some(not_found(&fs.id())),
        Some(e) if e.resource.properties.provisioning_state.as_deref() != Some("Succeeded") => {
            Some(error(
                StatusCode::CONFLICT,
                "AmlFilesystemNotReady",
                "The file system is not in a state that allows this operation.",
                None,
            ))
        }
        Some(_) => None,
    }
}

fn archive(state: &St, fs: FsKey, body: &[u8]) -> Response {
    if let Some(r) = not_ready(state, &fs) {
        return r;
    }
    let req: ArchiveRequest = serde_json::from_slice(body).unwrap_or_default();
    let path = req.filesystem_path.unwrap_or_else(|| "/".into());
    {
        let mut inner = state.lock();
        let Some(e) = inner.filesystems.get_mut(&fs.key()) else {
            return not_found(&fs.id());
        };
        if e.resource.archive_state() == Some("InProgress") {
            return error(
                StatusCode::CONFLICT,
                "ArchiveInProgress",
                "An archive is already in progress.",
                None,
            );
        }
        set_archive(e, &path, "InProgress", None);
    }
    let task = tokio::spawn(work::archive(state.clone(), fs.clone(), path));
    if let Some(e) = state.lock().filesystems.get_mut(&fs.key()) {
        e.archive = Some(task.abort_handle());
    }
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

fn cancel_archive(state: &State, fs: &FsKey) -> Response {
    let mut inner = state.lock();
    let Some(e) = inner.filesystems.get_mut(&fs.key()) else {
        return not_found(&fs.id());
    };
    if let Some(a) = e.archive.take() {
        a.abort();
        let path = e
            .resource
            .last_archive()
            .and_then(|a| a.filesystem_path.clone())
            .unwrap_or_else(|| "/".into());
        set_archive(e, &path, "Canceled", None);
    }
    StatusCode::OK.into_response()
}

fn list_jobs(state: &State, fs: &FsKey) -> Response {
    let inner = state.lock();
    if !inner.filesystems.contains_key(&fs.key()) {
        return not_found(&fs.id());
    }
    let mut value: Vec<ImportJob> = inner
        .jobs
        .values()
        .filter(|j| j.fs_key == fs.key())
        .map(|j| j.resource.clone())
        .collect();
    value.sort_by(|a, b| a.name.cmp(&b.name));
    json_response(
        StatusCode::OK,
        &ImportJobList {
            value,
            next_link: None,
        },
    )
}

fn get_job(state: &State, fs: &FsKey, job: &str) -> Response {
    match state.lock().jobs.get(&fs.job_key(job)) {
        Some(j) => json_response(StatusCode::OK, &j.resource),
        None => not_found(&format!("{}/importJobs/{job}", fs.id())),
    }
}

fn put_job(state: &St, fs: FsKey, job: String, body: &[u8]) -> Response {
    if let Some(r) = not_ready(state, &fs) {
        return r;
    }
    // One HSM job at a time: an enabled auto-export job is one.
    let prefix = fs.children(work::AUTO_EXPORTS);
    let exporting = state
        .lock()
        .auto_exports
        .iter()
        .any(|(k, v)| k.starts_with(&prefix) && v["properties"]["adminStatus"] == "Enable");
    if exporting && !state.lock().jobs.contains_key(&fs.job_key(&job)) {
        return error(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            "Another HSM job (an auto-export job) is active on this file system; disable it first.",
            None,
        );
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

fn patch_job(state: &State, fs: &FsKey, job: &str, body: &[u8]) -> Response {
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
        let finished = j
            .resource
            .properties
            .status
            .as_ref()
            .and_then(|s| s.state.as_deref())
            .is_some_and(job_finished);
        if !finished {
            if let Some(t) = j.task.take() {
                t.abort();
            }
            let status = j
                .resource
                .properties
                .status
                .get_or_insert_with(Default::default);
            status.state = Some("Canceled".into());
            status.status_message = Some("Import job was canceled.".into());
        }
    }
    json_response(StatusCode::OK, &j.resource)
}

fn delete_job(state: &State, fs: &FsKey, job: &str) -> Response {
    match state.lock().jobs.remove(&fs.job_key(job)) {
        Some(mut j) => {
            if let Some(t) = j.task.take() {
                t.abort();
            }
            StatusCode::OK.into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    }
}
