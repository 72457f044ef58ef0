//! JSON Schema of the pipeline file, for editors (`stage schema > pipeline.schema.json`).
//!
//! These types exist only to describe the file; decoding is done by `pipeline.rs` so that it can
//! report every problem with its position. A test keeps the two in step key by key.

#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;

/// A stage pipeline: import → process → export on Azure Managed Lustre.
#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct PipelineDoc {
    /// Pipeline name: 2-64 letters, digits, `-` or `_`. Keys the state, so renaming starts over.
    name: String,
    /// Where the pipeline runs: `local` (directories on this machine) or `azure`.
    target: Option<TargetDoc>,
    /// Where the file system lives in Azure (required for `target: azure`).
    azure: Option<AzureDoc>,
    /// Variables usable as `{{vars.NAME}}` in any string; values may use `{{env.NAME}}`.
    vars: Option<BTreeMap<String, String>>,
    filesystem: FilesystemDoc,
    pool: Option<PoolDoc>,
    /// Steps, run in order.
    steps: Vec<StepDoc>,
}

#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct AzureDoc {
    /// Subscription id.
    subscription: String,
    /// Resource group of the file system.
    resource_group: String,
    /// Azure region, e.g. `eastus`.
    location: String,
    /// ARM endpoint (default https://management.azure.com; `STAGE_ARM_ENDPOINT` overrides),
    /// e.g. `stage emulator`'s http://127.0.0.1:PORT.
    endpoint: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum TargetDoc {
    Local,
    Azure,
}

/// The AMLFS file system (on the local target: a directory).
#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct FilesystemDoc {
    /// Resource name of the file system.
    name: String,
    /// AMLFS SKU; fixes the capacity minimum and step (40: 48 TiB, 125: 16, 250: 8, 500: 4).
    sku: Option<SkuDoc>,
    /// Storage capacity in TiB: at least the SKU's minimum, in multiples of it.
    capacity_tib: Option<u32>,
    /// Availability zone.
    zone: Option<ZoneDoc>,
    /// Resource id of the subnet (cannot change after creation).
    subnet: Option<String>,
    maintenance_window: Option<WindowDoc>,
    hsm: HsmDoc,
    /// Local target only: directory that plays the Lustre namespace (default under the state dir).
    mount: Option<String>,
}

#[derive(JsonSchema)]
enum SkuDoc {
    #[serde(rename = "AMLFS-Durable-Premium-40")]
    P40,
    #[serde(rename = "AMLFS-Durable-Premium-125")]
    P125,
    #[serde(rename = "AMLFS-Durable-Premium-250")]
    P250,
    #[serde(rename = "AMLFS-Durable-Premium-500")]
    P500,
}

#[derive(JsonSchema)]
enum ZoneDoc {
    #[serde(rename = "1")]
    One,
    #[serde(rename = "2")]
    Two,
    #[serde(rename = "3")]
    Three,
}

/// Weekly maintenance window (UTC).
#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct WindowDoc {
    day: DayDoc,
    /// HH:MM, UTC.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    time: String,
}

#[derive(JsonSchema)]
enum DayDoc {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// The blob container linked to the file system (hierarchical storage management).
#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct HsmDoc {
    /// Local target: a directory (relative to the pipeline file). Azure: the container URL.
    container: String,
    /// Container for AMLFS's HSM logs (required on Azure).
    logging_container: Option<String>,
    /// Prefixes imported when the file system is created (default: everything).
    import_prefixes: Option<StringsDoc>,
    /// ARM id of the storage account holding the containers (Azure; default: the account in
    /// the container URL, in the pipeline's resource group).
    storage_account: Option<String>,
}

/// The machines tasks run on.
#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct PoolDoc {
    /// Host list in Slurm syntax (`node[01-04]`); default `localhost`.
    hosts: Option<StringsDoc>,
    /// Tasks run at once on each host (default: CPUs of this machine); with `slurm`, tasks
    /// running at once over the step's job arrays (their `%` throttle).
    slots: Option<u32>,
    /// An `ssh -F` config file for reaching the hosts.
    ssh_config: Option<String>,
    /// `accept-new` (default), `yes` or `no`.
    host_key_checking: Option<String>,
    /// Run process tasks as Slurm jobs (sbatch) instead of over SSH.
    slurm: Option<SlurmDoc>,
    /// Azure target: a VM scale set that stage ensures; its instances are the hosts.
    scale_set: Option<ScaleSetDoc>,
}

#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct ScaleSetDoc {
    /// Scale set name (default: `PIPELINE-pool`).
    name: Option<String>,
    /// VM size, e.g. `Standard_HB120rs_v3`.
    size: String,
    /// Marketplace image `publisher:offer:sku:version` (default: Ubuntu HPC 22.04).
    image: Option<String>,
    /// Number of VMs.
    instances: u32,
    /// Subnet id (default: the file system's subnet, so the nodes reach the MGS).
    subnet: Option<String>,
    /// Login user on the VMs (default `azureuser`).
    admin_user: Option<String>,
    /// Public key for the login user (default `~/.ssh/id_ed25519.pub`, then `id_rsa.pub`).
    ssh_public_key: Option<String>,
    /// Scale to zero VMs when the run finishes (default false).
    scale_to_zero: Option<bool>,
}

#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct SlurmDoc {
    /// Partition to submit to (default: the cluster's default).
    partition: Option<String>,
    /// Account to charge.
    account: Option<String>,
}

/// One string or a list of them.
#[derive(JsonSchema)]
#[serde(untagged)]
enum StringsDoc {
    One(String),
    Many(Vec<String>),
}

/// One step: exactly one of ensure, import, process, export, teardown.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum StepDoc {
    /// Make sure the file system and pool exist.
    Ensure(Option<NamedDoc>),
    /// Import blobs into the file system (an AMLFS import job).
    Import(ImportDoc),
    /// Run a command per input file (or once), in parallel across the pool.
    Process(ProcessDoc),
    /// Archive files back to the container (only new or changed files), then verify them.
    Export(ExportDoc),
    /// Delete the file system; only after a verified export.
    Teardown(Option<NamedDoc>),
}

#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct NamedDoc {
    /// Step name (defaults to the step's kind).
    name: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct ImportDoc {
    name: Option<String>,
    /// `hsm` (default): the file system's own import job; `direct`: stage copies itself.
    mover: Option<MoverDoc>,
    /// Blob prefixes to import (default: everything).
    prefixes: Option<StringsDoc>,
    /// What to do when a path already exists in the file system (AMLFS conflictResolutionMode).
    conflict: Option<ConflictDoc>,
    /// Errors tolerated before the import fails: 0 stops at the first, -1 never stops.
    #[schemars(range(min = -1))]
    max_errors: Option<i64>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum MoverDoc {
    Hsm,
    Direct,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum ConflictDoc {
    Fail,
    Skip,
    OverwriteIfDirty,
    OverwriteAlways,
}

#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct ProcessDoc {
    name: Option<String>,
    /// Glob(s) relative to the file system root: one task per matching file.
    foreach: Option<StringsDoc>,
    /// Glob(s) every task reads (`{{inputs}}`); a change reruns the tasks.
    inputs: Option<StringsDoc>,
    /// Shell command; `{{input}}`, `{{stem}}`, `{{output}}`… are substituted shell-quoted.
    command: String,
    /// Files each task writes, relative to the file system root; may use `{{stem}}` etc.
    outputs: Option<StringsDoc>,
    /// Extra attempts after a failure.
    retries: Option<u32>,
    /// Wait before a retry, doubled for each failed attempt (e.g. `10s`).
    retry_delay: Option<String>,
    /// Per-attempt time limit, e.g. `30m`.
    timeout: Option<String>,
    /// Environment variables for the command.
    env: Option<BTreeMap<String, String>>,
}

#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = false))]
struct ExportDoc {
    name: Option<String>,
    /// `hsm` (default): the file system's own archive; `direct`: stage copies itself.
    mover: Option<MoverDoc>,
    /// Files or directories relative to the file system root.
    paths: Option<StringsDoc>,
    /// Process steps whose declared outputs are exported.
    outputs_of: Option<StringsDoc>,
    /// Export continuously: an AMLFS auto-export job over the paths, left enabled after the
    /// run (the step waits until the container matches). Default false (one archive).
    auto: Option<bool>,
}

/// The schema as pretty JSON.
pub fn json() -> String {
    let schema = schemars::schema_for!(PipelineDoc);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::pipeline::*;
    use serde_json::Value;

    fn props<'a>(v: &'a Value, defs: &'a Value) -> Vec<String> {
        let v = match v.get("$ref").and_then(Value::as_str) {
            Some(r) => &defs[r.trim_start_matches("#/$defs/")],
            None => v,
        };
        let mut keys: Vec<String> = v["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut k: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    }

    /// The schema and the decoder must accept exactly the same keys.
    #[test]
    fn schema_matches_decoder_keys() {
        let s: Value = serde_json::from_str(&super::json()).unwrap();
        let defs = &s["$defs"];
        assert_eq!(props(&s, defs), sorted(PIPELINE_KEYS));
        assert_eq!(props(&defs["FilesystemDoc"], defs), sorted(FILESYSTEM_KEYS));
        assert_eq!(props(&defs["HsmDoc"], defs), sorted(HSM_KEYS));
        assert_eq!(props(&defs["WindowDoc"], defs), sorted(WINDOW_KEYS));
        assert_eq!(props(&defs["PoolDoc"], defs), sorted(POOL_KEYS));
        assert_eq!(props(&defs["ImportDoc"], defs), sorted(IMPORT_KEYS));
        assert_eq!(props(&defs["ProcessDoc"], defs), sorted(PROCESS_KEYS));
        assert_eq!(props(&defs["ExportDoc"], defs), sorted(EXPORT_KEYS));
        assert_eq!(props(&defs["NamedDoc"], defs), sorted(ENSURE_KEYS));
        let kinds: Vec<String> = defs["StepDoc"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v["required"].as_array().unwrap().clone())
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let mut kinds = kinds;
        kinds.sort();
        assert_eq!(kinds, sorted(STEP_KINDS));
    }
}
