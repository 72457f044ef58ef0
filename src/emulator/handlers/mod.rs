//! Request handling: auth, api-version, injected faults, then one function per operation,
//! grouped by resource in the files below.

mod children;
mod filesystems;
mod hsm_jobs;
mod network;
mod roles;
mod storage;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as Ext;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::paths::{self, FsKey, Target};
use super::state::{FsEntry, Owed, State};
use super::work;
use crate::azure::models::*;
use crate::spec::Sku as SpecSku;

use children::*;
use filesystems::*;
pub use hsm_jobs::set_archive;
use hsm_jobs::*;
use roles::*;

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

/// The JSON resources of one of a file system's child collections, in name order.
fn children_of(
    map: &std::collections::HashMap<String, serde_json::Value>,
    fs: &FsKey,
    collection: &str,
) -> Vec<serde_json::Value> {
    let prefix = fs.children(collection);
    let mut v: Vec<(&String, &serde_json::Value)> =
        map.iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter().map(|(_, v)| v.clone()).collect()
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The Resource '{what}' was not found."),
        None,
    )
}

/// 202 for a DELETE, with only `Location: …?monitor=true`, as Azure answers one: polling it
/// answers 202 until the operation ends, then 200 with an empty body.
pub fn accepted_delete(state: &State, subscription: &str, location: &str, op: &str) -> Response {
    let url = state.operation_url(subscription, location, op) + "&monitor=true";
    let mut r = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// 201/200 for a PUT that starts a long-running operation, with only the
/// `Azure-AsyncOperation` header, as Azure sends it (no `Location`, no `Retry-After`).
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
        r.headers_mut().insert("azure-asyncoperation", v);
    }
    r
}

/// Every request, answered only once what it changed or saw is on disk (`persist`): Azure's
/// answer means the change is durable, and a GET must not show a resource that a crash a
/// moment later would lose (another request may have made it and not yet saved it).
pub async fn dispatch(
    Ext(state): Ext<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = route(state.clone(), method, uri, headers, body).await;
    super::persist::save_soon(&state).await;
    response
}

async fn route(state: St, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    // Not ARM: how many ARM requests it has served, for benchmarks of polling rates.
    if uri.path() == "/_emulator/stats" {
        return json_response(
            StatusCode::OK,
            &json!({
                "requests": state.requests(),
                "jobs": state.jobs_started(),
                "modelled_s": state.modelled_secs(),
            }),
        );
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
        Target::Subnet { .. } => Some(crate::azure::prerequisites::NETWORK_API_VERSION),
        Target::StorageAccount { .. } | Target::BlobContainer { .. } => {
            Some(crate::azure::prerequisites::STORAGE_API_VERSION)
        }
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
    if faults
        .throttle_every
        .is_some_and(|k| k > 0 && n.is_multiple_of(k))
    {
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
    if faults
        .error_every
        .is_some_and(|k| k > 0 && n.is_multiple_of(k))
    {
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
        (Method::GET, Target::ImportJobs { fs }) => list_jobs(&state, &fs, &uri),
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
            let value = children_of(&state.lock().auto_exports, &fs, work::AUTO_EXPORTS);
            paged(&state, &uri, value)
        }
        (Method::GET, Target::ExpansionJobs { fs }) => {
            let value = children_of(&state.lock().expansions, &fs, work::EXPANSIONS);
            paged(&state, &uri, value)
        }
        (Method::GET, Target::AutoImportJobs { fs }) => {
            let value = children_of(&state.lock().auto_imports, &fs, work::AUTO_IMPORTS);
            paged(&state, &uri, value)
        }
        (Method::GET, Target::AutoImportJob { fs, job }) => {
            match state
                .lock()
                .auto_imports
                .get(&fs.child_key(work::AUTO_IMPORTS, &job))
            {
                Some(v) => json_response(StatusCode::OK, v),
                None => not_found(&job),
            }
        }
        (Method::PUT, Target::AutoImportJob { fs, job }) => put_auto_import(&state, fs, job, &body),
        (Method::PATCH, Target::AutoImportJob { fs, job }) => {
            patch_auto_import(&state, fs, job, &body)
        }
        (Method::GET, Target::ExpansionJob { fs, job }) => get_expansion(&state, &fs, &job),
        (Method::PUT, Target::ExpansionJob { fs, job }) => put_expansion(&state, fs, job, &body),
        (Method::GET, Target::ScaleSet { id }) => super::vmss::get(&state, &id),
        (Method::PUT, Target::ScaleSet { id }) => super::vmss::put(&state, &id, &body),
        (Method::PATCH, Target::ScaleSet { id }) => super::vmss::patch(&state, &id, &body),
        (Method::GET, Target::ScaleSetNics { id }) => super::vmss::nics(&state, &id),
        (Method::GET, Target::Subnet { id }) => network::get_subnet(&state, &id),
        (Method::PUT, Target::Subnet { id }) => network::put_subnet(&state, &id, &body),
        (Method::DELETE, Target::Subnet { id }) => network::delete_subnet(&state, &id),
        (Method::GET, Target::StorageAccount { id, account }) => {
            storage::get_account(&state, &id, &account)
        }
        (
            Method::GET,
            Target::BlobContainer {
                id,
                account,
                container,
            },
        ) => storage::get_container(&state, &id, &account, &container).await,
        (Method::GET, Target::Operation { id }) => {
            let monitor = uri.query().unwrap_or_default().contains("monitor=true");
            match state.lock().operations.get(&id) {
                Some(op) if monitor && op.status == "InProgress" => {
                    let mut r = StatusCode::ACCEPTED.into_response();
                    if let Ok(v) = HeaderValue::from_str(&format!("{}{uri}", state.base_url)) {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    r
                }
                Some(op) if monitor && op.status == "Succeeded" => StatusCode::OK.into_response(),
                Some(op) => json_response(StatusCode::OK, op),
                None => not_found(&id),
            }
        }
        (m, _) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{m} is not supported here"),
            None,
        ),
    }
}

/// Azure's answer to a second HSM job while one runs: 409, never a queue. (The exact code
/// Azure uses is in none of the spec, the docs or the recordings; ARM's generic `Conflict`
/// with the holder named stands for it, and stage treats any 409 on a job start alike.)
fn hsm_busy(state: &State, fs: &FsKey) -> Option<Response> {
    let holder = state.lock().hsm_holder(fs)?;
    Some(error(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Another HSM job is active on this file system ({holder}); only one import, export, expansion, auto-import or auto-export job can run at a time."
        ),
        None,
    ))
}

/// Lists are paged as ARM pages them, `nextLink` carrying a `$skiptoken`; pages are small
/// so that every client list is followed to its end in the tests.
pub const PAGE: usize = 3;

fn paged(state: &State, uri: &Uri, mut value: Vec<serde_json::Value>) -> Response {
    let skip: usize = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("$skiptoken="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let more = value.len() > skip + PAGE;
    let page: Vec<serde_json::Value> = value.drain(..).skip(skip).take(PAGE).collect();
    let mut body = json!({ "value": page });
    if more {
        body["nextLink"] = json!(format!(
            "{}{}?api-version={API_VERSION}&$skiptoken={}",
            state.base_url,
            uri.path(),
            skip + PAGE
        ));
    }
    json_response(StatusCode::OK, &body)
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
