//! The emulator's resources: file systems, import jobs, async operations, and what holds a
//! file system's one HSM job slot.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::azure::models::{AmlFilesystem, AsyncOperation, ErrorDetail, ImportJob};
use crate::journal::Journal;

use super::Options;

/// Faults to inject, for tests of the client's resilience.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer every Nth request with 429 and `Retry-After: 1`.
    pub throttle_every: Option<u64>,
    /// Answer every Nth request with 500.
    pub error_every: Option<u64>,
    /// Import jobs end `Failed`.
    pub fail_jobs: bool,
    /// Creating a file system never finishes.
    pub stuck_create: bool,
    /// Creating a file system ends in `Failed` (as a capacity shortage in the region does).
    pub fail_create: bool,
    /// The caller may not create role assignments (403), like an identity without
    /// Owner or User Access Administrator on the storage account.
    pub deny_role_assignments: bool,
}

/// The emulated tenant's object id of the HPC Cache Resource Provider's service principal.
pub const PROVIDER_PRINCIPAL: &str = "6a3a5c1e-0d2b-4e7f-9c1d-5e8f7a6b4c3d";

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct RoleAssignment {
    pub scope: String,
    pub role_definition_id: String,
    pub principal_id: String,
    /// When it takes effect: Azure's role assignments propagate for up to five minutes.
    /// Wall-clock time, so that it means the same after a restart.
    pub effective: std::time::SystemTime,
}

/// Work an async operation waits for, kept so that a restarted emulator finishes it (Azure
/// does not forget a create because a front end restarted).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Owed {
    Provision(super::paths::FsKey),
    Delete(super::paths::FsKey),
    /// A scale set's create or update, by its lower-case id.
    ScaleSet(String),
}

pub struct FsEntry {
    pub resource: AmlFilesystem,
    pub dir: PathBuf,
    pub archive: Option<tokio::task::AbortHandle>,
}

pub struct JobEntry {
    pub fs_key: String,
    pub resource: ImportJob,
    pub task: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
pub struct Inner {
    pub filesystems: HashMap<String, FsEntry>,
    pub jobs: HashMap<String, JobEntry>,
    pub operations: HashMap<String, AsyncOperation>,
    /// What each unfinished operation is waiting for.
    pub owed: HashMap<String, Owed>,
    /// By lower-case name.
    pub role_assignments: HashMap<String, RoleAssignment>,
    /// Expansion jobs by lower-case `FS_KEY/expansionjobs/NAME`, as their JSON resources.
    pub expansions: HashMap<String, serde_json::Value>,
    /// Auto-export jobs by lower-case `FS_KEY/autoexportjobs/NAME`, as their JSON resources.
    pub auto_exports: HashMap<String, serde_json::Value>,
    /// Auto-import jobs by lower-case `FS_KEY/autoimportjobs/NAME`, as their JSON resources.
    pub auto_imports: HashMap<String, serde_json::Value>,
    /// The export loop each enabled auto-export job should have: an older loop that sees
    /// another number here stops.
    pub auto_export_loops: HashMap<String, u64>,
    /// VM scale sets by lower-case id, as their JSON resources.
    pub scale_sets: HashMap<String, serde_json::Value>,
    /// Subnets by lower-case id, as their JSON resources: made by the caller, as the seed's
    /// Terraform makes them.
    pub subnets: HashMap<String, serde_json::Value>,
}

impl Inner {
    /// The HSM job running on the file system `fs` (a key), described as Azure's 409 would:
    /// an import job, an archive, an expansion, or an enabled auto-export job, each until it
    /// has really stopped (`Cancelling`, `Disabling`).
    pub fn hsm_holder(&self, fs: &super::paths::FsKey) -> Option<String> {
        let key = fs.key();
        if let Some((_, j)) = self.jobs.iter().find(|(_, j)| {
            j.fs_key == key
                && !j
                    .resource
                    .properties
                    .status
                    .as_ref()
                    .and_then(|s| s.state.as_deref())
                    .is_some_and(crate::azure::models::job_finished)
        }) {
            return Some(format!(
                "import job '{}'",
                j.resource.name.as_deref().unwrap_or_default()
            ));
        }
        if let Some(e) = self.filesystems.get(&key)
            && e.resource
                .archive_state()
                .is_some_and(crate::azure::models::archive_holds_slot)
        {
            return Some("an archive".into());
        }
        let running = |prefix: String, map: &HashMap<String, serde_json::Value>, what: &str| {
            map.iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .find(|(_, v)| {
                    let p = &v["properties"];
                    match what {
                        "expansion job" => p["status"]["state"] == "InProgress",
                        _ => p["adminStatus"] == "Enable" || p["status"]["state"] == "Disabling",
                    }
                })
                .map(|(_, v)| format!("{what} '{}'", v["name"].as_str().unwrap_or_default()))
        };
        running(
            fs.children(super::work::EXPANSIONS),
            &self.expansions,
            "expansion job",
        )
        .or_else(|| {
            running(
                fs.children(super::work::AUTO_EXPORTS),
                &self.auto_exports,
                "auto-export job",
            )
        })
        .or_else(|| {
            running(
                fs.children(super::work::AUTO_IMPORTS),
                &self.auto_imports,
                "auto-import job",
            )
        })
    }

    /// Whether the provider holds `role` (a role definition GUID) on `account` or above it,
    /// in effect (`effective`) or only assigned.
    pub fn provider_has(&self, account: &str, role: &str, effective: bool) -> bool {
        let account = account.to_ascii_lowercase();
        let now = std::time::SystemTime::now();
        self.role_assignments.values().any(|a| {
            a.principal_id == PROVIDER_PRINCIPAL
                && account.starts_with(&a.scope.to_ascii_lowercase())
                && a.role_definition_id.to_ascii_lowercase().ends_with(role)
                && (!effective || a.effective <= now)
        })
    }
}

pub struct State {
    pub opts: Options,
    pub journal: Arc<Journal>,
    /// `http://ADDR` as clients reach it, for async-operation URLs.
    pub base_url: String,
    inner: Mutex<Inner>,
    requests: AtomicU64,
    /// HSM jobs started, by kind (`import`, `archive`, `expansion`, `auto-export`), for
    /// benchmarks of how many a pipeline costs.
    started: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Azure's time the emulated work stood for, in milliseconds (before scaling).
    modelled_ms: AtomicU64,
    /// The resources as last written to disk (`persist`); held while writing, so that
    /// writes land in order.
    pub saved: Mutex<Vec<u8>>,
}

impl State {
    pub fn new(opts: Options, journal: Arc<Journal>, base_url: String, inner: Inner) -> State {
        State {
            opts,
            journal,
            base_url,
            inner: Mutex::new(inner),
            saved: Mutex::default(),
            requests: AtomicU64::new(0),
            started: Mutex::default(),
            modelled_ms: AtomicU64::new(0),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough data for an emulator.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `secs` of Azure's time, as the emulator spends it, counted for benchmarks.
    pub fn azure(&self, secs: f64) -> std::time::Duration {
        self.modelled_ms
            .fetch_add((secs.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
        self.opts.timing.of(secs)
    }

    pub fn modelled_secs(&self) -> f64 {
        self.modelled_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn count_job(&self, kind: &'static str) {
        *self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    pub fn jobs_started(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a request; says which fault, if any, it should get.
    pub fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Starts an async operation and returns its id.
    pub fn start_operation(&self) -> String {
        start_operation(&mut self.lock())
    }

    pub fn finish_operation(&self, id: &str, error: Option<ErrorDetail>) {
        let mut inner = self.lock();
        inner.owed.remove(id);
        if let Some(op) = inner.operations.get_mut(id) {
            op.status = if error.is_some() {
                "Failed"
            } else {
                "Succeeded"
            }
            .into();
            op.end_time = Some(crate::clock::iso8601(crate::clock::now_secs()));
            op.error = error;
        }
    }

    /// The status URL of an operation, as `Azure-AsyncOperation` names it.
    pub fn operation_url(&self, subscription: &str, location: &str, id: &str) -> String {
        format!(
            "{}/subscriptions/{subscription}/providers/Microsoft.StorageCache/locations/{location}/ascOperations/{id}?api-version={}",
            self.base_url,
            crate::azure::models::API_VERSION
        )
    }
}

/// Starts an async operation for `work`, under a lock the caller already holds.
pub fn start_owed(inner: &mut Inner, work: Owed) -> String {
    let id = start_operation(inner);
    inner.owed.insert(id.clone(), work);
    id
}

/// Starts an async operation under a lock the caller already holds.
pub fn start_operation(inner: &mut Inner) -> String {
    let id = format!("{:032x}", crate::digest::nonce());
    inner.operations.insert(
        id.clone(),
        AsyncOperation {
            id: None,
            name: Some(id.clone()),
            status: "InProgress".into(),
            start_time: Some(crate::clock::iso8601(crate::clock::now_secs())),
            end_time: None,
            error: None,
        },
    );
    id
}
