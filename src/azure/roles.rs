//! The roles AMLFS's resource provider needs on the HSM storage account.
//!
//! Before a file system with HSM settings can be created, the "HPC Cache Resource Provider"
//! service principal must hold Storage Account Contributor and Storage Blob Data Contributor on
//! the account. Without them Azure accepts the PUT and fails minutes into provisioning, so they
//! are checked first, granted when this identity may, and otherwise refused with the commands an
//! owner of the account can run.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::arm::{Arm, ArmError};

/// The application id of the HPC Cache Resource Provider (the same in every tenant).
pub const PROVIDER_APP_ID: &str = "4392ab71-2ce2-4b0d-8770-b352745c73f5";
/// (name, role definition id) of the built-in roles it needs.
pub const ROLES: [(&str, &str); 2] = [
    (
        "Storage Account Contributor",
        "17d1049b-9a84-46fb-8f53-869881c3d3ab",
    ),
    (
        "Storage Blob Data Contributor",
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    ),
];
pub const API_VERSION: &str = "2022-04-01";

#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error(transparent)]
    Arm(#[from] Box<ArmError>),
    #[error(
        "the HPC Cache Resource Provider needs {} on storage account {account} before a file system can use it for HSM, and this identity may not grant {} ({reason}); nothing was created. Ask an Owner or User Access Administrator of the account to run:\n{}",
        missing.join(" and "),
        if missing.len() == 1 { "it" } else { "them" },
        missing.iter().map(|m| format!("  az role assignment create --assignee {PROVIDER_APP_ID} --role '{m}' --scope {account}")).collect::<Vec<_>>().join("\n")
    )]
    Forbidden {
        account: String,
        missing: Vec<&'static str>,
        reason: String,
    },
}

/// Makes sure the provider holds both roles on `account` (a storage account resource id).
/// Returns what it granted. When the provider's principal cannot be looked up (the identity
/// may not read the directory), says so and leaves the check to Azure.
pub async fn ensure(arm: &Arm, account: &str) -> Result<Vec<&'static str>, RoleError> {
    let Some(principal) = provider_principal(arm).await else {
        return Ok(Vec::new());
    };
    let list = format!(
        "{account}/providers/Microsoft.Authorization/roleAssignments?api-version={API_VERSION}&$filter=assignedTo(%27{principal}%27)"
    );
    let held: Vec<serde_json::Value> = arm.list(&list).await.map_err(Box::new)?;
    let held: Vec<String> = held
        .iter()
        .filter_map(|a| a["properties"]["roleDefinitionId"].as_str())
        .filter_map(|id| id.rsplit('/').next())
        .map(str::to_ascii_lowercase)
        .collect();
    let missing: Vec<(&'static str, &'static str)> = ROLES
        .iter()
        .copied()
        .filter(|(_, id)| !held.iter().any(|h| h == id))
        .collect();
    let subscription = account
        .trim_start_matches('/')
        .split('/')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut granted = Vec::new();
    for (name, role) in &missing {
        // Named from what it grants, so a retried or resumed run PUTs the same assignment.
        let digest = crate::digest::md5_hex(
            format!("{}|{role}|{principal}", account.to_ascii_lowercase()).as_bytes(),
        );
        let id = format!(
            "{}-{}-{}-{}-{}",
            &digest[..8],
            &digest[8..12],
            &digest[12..16],
            &digest[16..20],
            &digest[20..32]
        );
        let path = format!(
            "{account}/providers/Microsoft.Authorization/roleAssignments/{id}?api-version={API_VERSION}"
        );
        let body = json!({ "properties": {
            "roleDefinitionId": format!("/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"),
            "principalId": principal,
            "principalType": "ServicePrincipal",
        }});
        let reply = arm
            .send(Method::PUT, &path, Some(&body))
            .await
            .map_err(Box::new)?;
        match reply.status {
            s if s.is_success() || s == StatusCode::CONFLICT => granted.push(*name),
            StatusCode::FORBIDDEN => {
                let reason = Arm::check(&Method::PUT, &path, reply)
                    .err()
                    .map(|e| match e {
                        ArmError::Service { code, .. } => code,
                        other => other.to_string(),
                    })
                    .unwrap_or_default();
                return Err(RoleError::Forbidden {
                    account: account.to_string(),
                    missing: missing.iter().map(|(n, _)| *n).collect(),
                    reason,
                });
            }
            _ => {
                Arm::check(&Method::PUT, &path, reply).map_err(Box::new)?;
            }
        }
    }
    Ok(granted)
}

/// The provider's service principal in this tenant, from Microsoft Graph.
async fn provider_principal(arm: &Arm) -> Option<String> {
    let url = arm.graph_url(&format!(
        "/v1.0/servicePrincipals?$filter=appId%20eq%20%27{PROVIDER_APP_ID}%27&$select=id"
    ));
    match arm.get::<serde_json::Value>(&url).await {
        Ok(Some(v)) => {
            let id = v["value"][0]["id"].as_str().map(str::to_string);
            if id.is_none() {
                tracing::warn!(
                    "the HPC Cache Resource Provider has no service principal in this tenant; Azure will refuse HSM settings until it is registered (az provider register -n Microsoft.StorageCache)"
                );
            }
            id
        }
        Ok(None) | Err(_) => {
            tracing::warn!(
                "cannot look up the HPC Cache Resource Provider in Microsoft Graph; its roles on the storage account are not checked (creation fails late if they are missing)"
            );
            None
        }
    }
}
