//! VM scale sets: the calls stage's compute pool makes. Instances are machines given on the
//! command line (local sshd nodes), handed out in order; their "network interfaces" carry those
//! addresses. Capacity beyond them fails as a quota would.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::handlers::{St, accepted, error, json_ok, parse_body};
use super::state::State;

fn quota(state: &State, capacity: u64) -> Option<Response> {
    let have = state.opts.vmss_hosts.len() as u64;
    (capacity > have).then(|| {
        error(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            &format!(
                "Operation could not be completed as it results in exceeding approved quota: {capacity} instances requested, {have} available."
            ),
            None,
        )
    })
}

pub fn get(state: &State, id: &str) -> Response {
    match state.lock().scale_sets.get(&id.to_ascii_lowercase()) {
        Some(v) => json_ok(StatusCode::OK, v),
        None => error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The Resource '{id}' was not found."),
            None,
        ),
    }
}

pub fn put(state: &St, id: &str, body: &[u8]) -> Response {
    let mut v: Value = match parse_body(body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let Some(capacity) = v["sku"]["capacity"].as_u64() else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "sku.capacity is required.",
            Some("sku.capacity"),
        );
    };
    if let Some(r) = quota(state, capacity) {
        return r;
    }
    let name = id.rsplit('/').next().unwrap_or_default().to_string();
    v["id"] = json!(id);
    v["name"] = json!(name);
    v["type"] = json!("Microsoft.Compute/virtualMachineScaleSets");
    v["properties"]["provisioningState"] = json!("Creating");
    start(state, id, v, StatusCode::CREATED)
}

pub fn patch(state: &St, id: &str, body: &[u8]) -> Response {
    let patch: Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(mut v) = state
        .lock()
        .scale_sets
        .get(&id.to_ascii_lowercase())
        .cloned()
    else {
        return get(state, id);
    };
    if let Some(capacity) = patch["sku"]["capacity"].as_u64() {
        if let Some(r) = quota(state, capacity) {
            return r;
        }
        v["sku"]["capacity"] = json!(capacity);
    }
    v["properties"]["provisioningState"] = json!("Updating");
    start(state, id, v, StatusCode::OK)
}

/// Records the set and finishes its operation after the provisioning delay.
fn start(state: &St, id: &str, v: Value, status: StatusCode) -> Response {
    let key = id.to_ascii_lowercase();
    let location = v["location"].as_str().unwrap_or("eastus").to_string();
    let subscription = id.split('/').nth(2).unwrap_or_default().to_string();
    let op = {
        let mut inner = state.lock();
        inner.scale_sets.insert(key.clone(), v.clone());
        super::state::start_owed(&mut inner, super::state::Owed::ScaleSet(key.clone()))
    };
    tokio::spawn(settle(state.clone(), key, op.clone()));
    accepted(state, status, &subscription, &location, &op, Some(v))
}

/// A scale set's create or update ends after Azure's time for it.
pub async fn settle(state: St, key: String, op: String) {
    tokio::time::sleep(state.azure(super::timing::SCALE_SET)).await;
    if let Some(v) = state.lock().scale_sets.get_mut(&key) {
        v["properties"]["provisioningState"] = json!("Succeeded");
    }
    state.finish_operation(&op, None);
}

pub fn nics(state: &State, id: &str) -> Response {
    let inner = state.lock();
    let Some(v) = inner.scale_sets.get(&id.to_ascii_lowercase()) else {
        return get(state, id);
    };
    let ready = v["properties"]["provisioningState"] == "Succeeded";
    let capacity = if ready {
        v["sku"]["capacity"].as_u64().unwrap_or(0) as usize
    } else {
        0
    };
    let value: Vec<Value> = state
        .opts
        .vmss_hosts
        .iter()
        .take(capacity)
        .enumerate()
        .map(|(i, ip)| {
            json!({
                "name": format!("nic{i}"),
                "id": format!("{id}/virtualMachines/{i}/networkInterfaces/nic{i}"),
                "properties": { "ipConfigurations": [{
                    "name": "ipconfig",
                    "properties": { "privateIPAddress": ip, "primary": true },
                }]},
            })
        })
        .collect();
    json_ok(StatusCode::OK, &json!({ "value": value }))
}
