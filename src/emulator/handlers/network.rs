//! Subnets, stored as the caller makes them (the seed's Terraform does, before stage runs),
//! so that a create naming a missing or small one meets what Azure would say.

use super::*;

pub(super) fn get_subnet(state: &State, id: &str) -> Response {
    match state.lock().subnets.get(&id.to_ascii_lowercase()) {
        Some(v) => json_response(StatusCode::OK, v),
        None => subnet_missing(id),
    }
}

/// Microsoft.Network's own 404 (its code is `NotFound`, not ARM's `ResourceNotFound`).
fn subnet_missing(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("Resource {id} not found."),
        None,
    )
}

pub(super) fn put_subnet(state: &State, id: &str, body: &[u8]) -> Response {
    let req: serde_json::Value = match parse_body(body) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let p = &req["properties"];
    let prefixes_given = p["addressPrefix"].is_string()
        || p["addressPrefixes"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|v| v.is_string()));
    if !prefixes_given {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestFormat",
            "properties.addressPrefix or properties.addressPrefixes is required.",
            Some("properties.addressPrefix"),
        );
    }
    let mut properties = p.clone();
    properties["provisioningState"] = json!("Succeeded");
    let v = json!({
        "id": id,
        "name": id.rsplit('/').next().unwrap_or_default(),
        "type": "Microsoft.Network/virtualNetworks/subnets",
        "properties": properties,
    });
    let created = state
        .lock()
        .subnets
        .insert(id.to_ascii_lowercase(), v.clone())
        .is_none();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(status, &v)
}

pub(super) fn delete_subnet(state: &State, id: &str) -> Response {
    match state.lock().subnets.remove(&id.to_ascii_lowercase()) {
        Some(_) => StatusCode::OK.into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}
