//! ARM wire types for Microsoft.StorageCache/amlFilesystems and importJobs (api-version
//! 2026-01-01), shared by the client and the emulator.
//!
//! Each struct keeps the fields it does not name in `extra`, so a resource read from Azure and
//! written back is unchanged, and the spec's examples round-trip exactly (tested). Numbers that
//! the service has sent as floats where the spec says integer (`percentComplete`) are `f64`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const API_VERSION: &str = "2026-01-01";
pub const PROVIDER: &str = "Microsoft.StorageCache";

type Extra = BTreeMap<String, Value>;

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// Numbers read leniently as `f64` go out as Azure sends them: a whole number as an integer
/// (`2000`, not `2000.0`), since clients of the emulator's output may be strict.
fn whole<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => s.serialize_i64(*n as i64),
        Some(n) => s.serialize_f64(*n),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AmlFilesystem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub properties: FsProperties,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sku {
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FsProperties {
    #[serde(
        rename = "storageCapacityTiB",
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole"
    )]
    pub storage_capacity_tib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem_subnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_info: Option<ClientInfo>,
    #[serde(
        rename = "throughputProvisionedMBps",
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole"
    )]
    pub throughput_mbps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsm: Option<Hsm>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_description: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mgs_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lustre_version: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day_of_week: Option<String>,
    #[serde(rename = "timeOfDayUTC", skip_serializing_if = "Option::is_none")]
    pub time_of_day_utc: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hsm {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<HsmSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_status: Option<Vec<ArchiveStatus>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HsmSettings {
    /// ARM id of the data container (…/storageAccounts/A/blobServices/default/containers/C).
    pub container: String,
    pub logging_container: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_prefixes_initial: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatusBody>,
}

/// The status object of an archive or an import job (a superset of both).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobStatusBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "whole")]
    pub percent_complete: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "whole")]
    pub total_errors: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "whole")]
    pub total_conflicts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "whole")]
    pub total_blobs_imported: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImportJob {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub properties: ImportJobProperties,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImportJobProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_prefixes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict_resolution_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_errors: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatusBody>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImportJobList {
    pub value: Vec<ImportJob>,
    #[serde(rename = "nextLink", skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// `POST …/archive` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem_path: Option<String>,
}

/// The body of an `Azure-AsyncOperation` status URL.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AsyncOperation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// ARM's error shape: `{"error": {"code", "message", "target", "details"}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

impl FsProperties {
    /// `hsm.settings`: the HSM container, logging container and initial import prefixes.
    pub fn hsm_settings(&self) -> Option<&HsmSettings> {
        self.hsm.as_ref()?.settings.as_ref()
    }
}

impl AmlFilesystem {
    /// The latest archive's entry in `hsm.archiveStatus`.
    pub fn last_archive(&self) -> Option<&ArchiveStatus> {
        self.properties
            .hsm
            .as_ref()?
            .archive_status
            .as_ref()?
            .first()
    }

    /// The latest archive's state, e.g. `InProgress` or `Completed`.
    pub fn archive_state(&self) -> Option<&str> {
        self.last_archive()?.status.as_ref()?.state.as_deref()
    }

    /// The capacity it has now: `currentStorageCapacityTiB` (2026-01-01) after growth,
    /// where `storageCapacityTiB` stays what was asked at create.
    pub fn current_capacity_tib(&self) -> Option<f64> {
        self.properties
            .extra
            .get("currentStorageCapacityTiB")
            .and_then(|v| v.as_f64())
            .or(self.properties.storage_capacity_tib)
    }
}

/// Terminal states of an import job or archive.
pub fn job_finished(state: &str) -> bool {
    matches!(
        state,
        "Completed" | "CompletedPartial" | "Failed" | "Canceled"
    )
}

/// Archive states in which an archive still holds the file system's one HSM job slot.
pub fn archive_holds_slot(state: &str) -> bool {
    matches!(state, "InProgress" | "Cancelling" | "FSScanInProgress")
}

/// ARM ids differ in case between calls (`amlFilesystems` vs `amlfilesystems`).
pub fn same_id(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_numbers_and_case_insensitive_ids() {
        let s: JobStatusBody =
            serde_json::from_str(r#"{"state":"InProgress","percentComplete":42.5}"#).unwrap();
        assert_eq!(s.percent_complete, Some(42.5));
        let s: JobStatusBody = serde_json::from_str(r#"{"percentComplete":42}"#).unwrap();
        assert_eq!(s.percent_complete, Some(42.0));
        assert!(same_id(
            "/subscriptions/x/resourceGroups/RG/providers/Microsoft.StorageCache/amlFilesystems/fs1",
            "/subscriptions/x/resourcegroups/rg/providers/microsoft.storagecache/amlfilesystems/fs1/"
        ));
    }
}
