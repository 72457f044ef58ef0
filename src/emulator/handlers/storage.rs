//! Storage accounts and blob containers, read from the blob service the emulator is given
//! (Azurite): an account exists when it is that service's account, a container when the
//! service has it. Azurite has no hierarchical namespace, and the account says so.

use super::*;

/// The account name the blob endpoint serves (`http://HOST:PORT/ACCOUNT` for Azurite,
/// `https://ACCOUNT.blob.core.windows.net`), read as stage reads container URLs (the same
/// probe the emulator's start-up checks the endpoint with); `None` when none was given.
fn served_account(state: &State) -> Option<String> {
    let endpoint = state.opts.blob_endpoint.as_deref()?;
    let probe = format!("{}/probe", endpoint.trim_end_matches('/'));
    crate::store::azure::Location::parse(&probe)
        .ok()
        .map(|l| l.account)
}

fn account_exists(state: &State, account: &str) -> bool {
    served_account(state).is_none_or(|a| a.eq_ignore_ascii_case(account))
}

pub(super) fn get_account(state: &State, id: &str, account: &str) -> Response {
    if !account_exists(state, account) {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The Resource '{id}' was not found."),
            None,
        );
    }
    let blob = work::blob_endpoint(state, account);
    json_response(
        StatusCode::OK,
        &json!({
            "id": id,
            "name": account,
            "type": "Microsoft.Storage/storageAccounts",
            "kind": "StorageV2",
            "location": "eastus",
            "sku": { "name": "Standard_LRS", "tier": "Standard" },
            "properties": {
                "provisioningState": "Succeeded",
                "isHnsEnabled": false,
                "primaryEndpoints": { "blob": format!("{}/", blob.trim_end_matches('/')) },
            },
        }),
    )
}

pub(super) async fn get_container(
    state: &State,
    id: &str,
    account: &str,
    container: &str,
) -> Response {
    let missing = || {
        error(
            StatusCode::NOT_FOUND,
            "ContainerNotFound",
            "The specified container does not exist.",
            None,
        )
    };
    if !account_exists(state, account) {
        return missing();
    }
    let url = work::container_url(state, account, container);
    let exists = match crate::store::AzureStore::from_env(&url) {
        Ok(store) => store.exists().await,
        Err(e) => Err(e),
    };
    match exists {
        Ok(true) => json_response(
            StatusCode::OK,
            &json!({
                "id": id,
                "name": container,
                "type": "Microsoft.Storage/storageAccounts/blobServices/containers",
                "properties": { "publicAccess": "None", "hasImmutabilityPolicy": false },
            }),
        ),
        Ok(false) => missing(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("cannot reach the blob service: {e}"),
            None,
        ),
    }
}
