//! Role assignments on storage accounts: what ensuring a file system checks and grants.

use super::*;

/// Assignments at, above or below `scope`, for the principal in `$filter=assignedTo('ID')`.
pub(super) fn list_role_assignments(state: &State, scope: &str, uri: &Uri) -> Response {
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

pub(super) fn role_assignment_json(
    name: &str,
    a: &crate::emulator::state::RoleAssignment,
) -> serde_json::Value {
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

pub(super) fn put_role_assignment(
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
    let same = |a: &crate::emulator::state::RoleAssignment| {
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
    let a = crate::emulator::state::RoleAssignment {
        scope: scope.to_string(),
        role_definition_id: role.to_string(),
        principal_id: principal.to_string(),
        effective: std::time::SystemTime::now()
            + state
                .opts
                .timing
                .of(crate::emulator::timing::ROLE_PROPAGATION),
    };
    let body = role_assignment_json(&key, &a);
    inner.role_assignments.insert(key, a);
    json_response(StatusCode::CREATED, &body)
}
