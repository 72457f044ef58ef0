//! Credentials as the az CLI finds them, so one environment works for both tools:
//! `AZURE_STORAGE_CONNECTION_STRING`, `AZURE_STORAGE_ACCOUNT` + `AZURE_STORAGE_KEY`,
//! `AZURE_STORAGE_SAS_TOKEN`, else a Microsoft Entra token from azure_identity.
//!
//! The SDK's clients take only token credentials, and refuse plain http with one (Azurite).
//! An account key is therefore turned into a short-lived account SAS here, signed locally; a
//! SAS rides in the request URL, which is why every message goes through [`super::super::redact`].

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::location::Location;
use crate::store::StoreError;

/// Azurite's published development account key (not a secret).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long a SAS signed from an account key lives: longer than any transfer, short enough
/// that one leaked from a crash dump is soon useless.
const SAS_LIFETIME_SECS: u64 = 24 * 3600;

pub enum Credential {
    /// A SAS query string (without `?`) appended to every request URL.
    Sas(Secret),
    Token(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Sas(_) => f.write_str("Credential::Sas(REDACTED)"),
            Credential::Token(_) => f.write_str("Credential::Token"),
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Finds a credential for `loc` in the environment, in the az CLI's order.
pub fn from_env(loc: &Location) -> Result<Credential, StoreError> {
    if let Some(cs) = var("AZURE_STORAGE_CONNECTION_STRING") {
        return from_connection_string(&cs, loc);
    }
    if let Some(key) = var("AZURE_STORAGE_KEY") {
        let account = var("AZURE_STORAGE_ACCOUNT").unwrap_or_else(|| loc.account.clone());
        check_account(&account, loc, "AZURE_STORAGE_ACCOUNT")?;
        return account_sas(&account, &key, loc).map(Credential::Sas);
    }
    if let Some(sas) = var("AZURE_STORAGE_SAS_TOKEN") {
        return Ok(Credential::Sas(Secret::new(
            sas.trim().trim_start_matches('?').to_string(),
        )));
    }
    if !loc.service.starts_with("https://") {
        return Err(StoreError::service(
            "no storage credentials, and this plain-http URL cannot carry a Microsoft Entra \
             token; set AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY or \
             AZURE_STORAGE_SAS_TOKEN",
        ));
    }
    token_credential().map(Credential::Token)
}

fn check_account(account: &str, loc: &Location, source: &str) -> Result<(), StoreError> {
    if !account.eq_ignore_ascii_case(&loc.account) {
        return Err(StoreError::service(format!(
            "{source} is for storage account {account:?}, but the URL names account {:?}",
            loc.account
        )));
    }
    Ok(())
}

fn from_connection_string(cs: &str, loc: &Location) -> Result<Credential, StoreError> {
    let mut account = None;
    let mut key = None;
    let mut sas = None;
    for part in cs.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "accountname" => account = Some(v.to_string()),
            "accountkey" => key = Some(v.to_string()),
            "sharedaccesssignature" => sas = Some(v.trim_start_matches('?').to_string()),
            "usedevelopmentstorage" if v.eq_ignore_ascii_case("true") => {
                account = Some(DEV_ACCOUNT.to_string());
                key = Some(DEV_KEY.to_string());
            }
            _ => {}
        }
    }
    if let Some(sas) = sas {
        return Ok(Credential::Sas(Secret::new(sas)));
    }
    match (account, key) {
        (Some(account), Some(key)) => {
            check_account(&account, loc, "AZURE_STORAGE_CONNECTION_STRING")?;
            account_sas(&account, &key, loc).map(Credential::Sas)
        }
        _ => Err(StoreError::service(
            "AZURE_STORAGE_CONNECTION_STRING has neither AccountName with AccountKey nor SharedAccessSignature",
        )),
    }
}

/// Signs an account SAS for the blob service (container and object level) with the
/// account key: read, write, delete, list, add, create.
pub fn account_sas(account: &str, key: &str, loc: &Location) -> Result<Secret, StoreError> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| StoreError::service("the storage account key is not valid base64"))?;
    let now = crate::clock::now_secs();
    let start = crate::clock::iso8601(now.saturating_sub(15 * 60));
    let expiry = crate::clock::iso8601(now + SAS_LIFETIME_SECS);
    let (perms, services, types, version) = ("rwdlac", "b", "sco", "2022-11-02");
    let protocol = if loc.service.starts_with("https://") {
        "https"
    } else {
        "https,http"
    };
    // Since version 2020-12-06 the string ends with the (empty) encryption scope and a newline.
    let to_sign = format!(
        "{account}\n{perms}\n{services}\n{types}\n{start}\n{expiry}\n\n{protocol}\n{version}\n\n"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| StoreError::service("the storage account key is empty"))?;
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    Ok(Secret::new(format!(
        "sv={version}&ss={services}&srt={types}&sp={perms}&st={}&se={}&spr={}&sig={}",
        enc(&start),
        enc(&expiry),
        enc(protocol),
        enc(&sig)
    )))
}

/// A Microsoft Entra credential: workload identity (AKS), a service principal's secret,
/// managed identity (on Azure VMs, selected with `STAGE_AZURE_CREDENTIAL=managed-identity` or
/// found through `IDENTITY_ENDPOINT`), else the developer tools (`az login`, `azd auth login`).
pub fn token_credential() -> Result<Arc<dyn TokenCredential>, StoreError> {
    let fail =
        |e: azure_core::Error| StoreError::service(format!("cannot set up Azure credentials: {e}"));
    let choice = var("STAGE_AZURE_CREDENTIAL").unwrap_or_default();
    if choice == "managed-identity" || (choice.is_empty() && var("IDENTITY_ENDPOINT").is_some()) {
        return Ok(azure_identity::ManagedIdentityCredential::new(None).map_err(fail)?);
    }
    if choice == "workload-identity"
        || (choice.is_empty() && var("AZURE_FEDERATED_TOKEN_FILE").is_some())
    {
        return Ok(azure_identity::WorkloadIdentityCredential::new(None).map_err(fail)?);
    }
    if let (Some(tenant), Some(client), Some(secret)) = (
        var("AZURE_TENANT_ID"),
        var("AZURE_CLIENT_ID"),
        var("AZURE_CLIENT_SECRET"),
    ) {
        return Ok(azure_identity::ClientSecretCredential::new(
            &tenant,
            client,
            Secret::new(secret),
            None,
        )
        .map_err(fail)?);
    }
    Ok(azure_identity::DeveloperToolsCredential::new(None).map_err(fail)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_sas_has_the_documented_shape() {
        let loc = Location::parse("http://127.0.0.1:10000/devstoreaccount1/cont").unwrap();
        let sas = account_sas(DEV_ACCOUNT, DEV_KEY, &loc).unwrap();
        let q = sas.secret();
        for part in [
            "sv=2022-11-02",
            "ss=b",
            "srt=sco",
            "sp=rwdlac",
            "spr=https%2Chttp",
            "sig=",
        ] {
            assert!(q.contains(part), "{part} missing");
        }
        assert!(format!("{:?}", Credential::Sas(sas)).contains("REDACTED"));
        assert!(account_sas(DEV_ACCOUNT, "not base64!", &loc).is_err());
    }

    #[test]
    fn connection_string_account_must_match_the_url() {
        let loc = Location::parse("https://other.blob.core.windows.net/cont").unwrap();
        let err = from_connection_string("UseDevelopmentStorage=true", &loc).unwrap_err();
        assert!(err.to_string().contains("other"), "{err}");
        assert!(!err.to_string().contains(DEV_KEY));
    }
}
