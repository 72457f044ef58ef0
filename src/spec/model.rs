//! The validated pipeline: what the rest of the program works with.
//!
//! Everything here has passed validation; paths are resolved against the pipeline file's
//! directory, templates are parsed and their variables checked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::Template;
use crate::pool::hostlist::Host;

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub target: Target,
    /// Required for the azure target.
    pub azure: Option<AzureSettings>,
    /// The pipeline file, as given on the command line.
    pub path: PathBuf,
    pub filesystem: Filesystem,
    pub pool: Pool,
    pub steps: Vec<Step>,
    /// `vars:`, bound as `{{vars.NAME}}` in commands.
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureSettings {
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    /// ARM endpoint; `STAGE_ARM_ENDPOINT` overrides; default https://management.azure.com.
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Local,
    Azure,
}

#[derive(Debug, Clone)]
pub struct Filesystem {
    pub name: String,
    pub sku: Option<Sku>,
    pub capacity_tib: Option<u32>,
    pub zone: Option<String>,
    pub subnet: Option<String>,
    pub maintenance_window: Option<MaintenanceWindow>,
    pub hsm: Hsm,
    /// Local target only: the directory that plays the Lustre namespace.
    pub mount: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Hsm {
    /// Local target: a directory; azure target: a container URL.
    pub container: String,
    pub logging_container: Option<String>,
    pub import_prefixes: Vec<String>,
    /// ARM id of the storage account holding the containers (azure target); default: the
    /// account named in the container URL, in the pipeline's resource group.
    pub storage_account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    pub day: String,
    pub time_utc: String,
}

/// AMLFS SKUs: throughput in MB/s per TiB, which fixes the capacity minimum and step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sku {
    Premium40,
    Premium125,
    Premium250,
    Premium500,
}

impl Sku {
    pub const ALL: [Sku; 4] = [
        Sku::Premium40,
        Sku::Premium125,
        Sku::Premium250,
        Sku::Premium500,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Sku::Premium40 => "AMLFS-Durable-Premium-40",
            Sku::Premium125 => "AMLFS-Durable-Premium-125",
            Sku::Premium250 => "AMLFS-Durable-Premium-250",
            Sku::Premium500 => "AMLFS-Durable-Premium-500",
        }
    }
    pub fn mb_per_tib(self) -> u32 {
        match self {
            Sku::Premium40 => 40,
            Sku::Premium125 => 125,
            Sku::Premium250 => 250,
            Sku::Premium500 => 500,
        }
    }
    /// Minimum capacity, which is also the step capacity grows in.
    pub fn capacity_step_tib(self) -> u32 {
        match self {
            Sku::Premium40 => 48,
            Sku::Premium125 => 16,
            Sku::Premium250 => 8,
            Sku::Premium500 => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub hosts: Vec<Host>,
    pub slots: u32,
    /// An ssh_config file for reaching the hosts (`ssh -F`); default: the user's own.
    pub ssh_config: Option<PathBuf>,
    pub host_key_checking: HostKeyChecking,
    /// Run process tasks as Slurm job arrays instead of over SSH; `slots` is how many run at
    /// once (the arrays' `%` throttle).
    pub slurm: Option<SlurmPool>,
    /// Azure target: a VM scale set stage ensures, whose instances are the hosts.
    pub scale_set: Option<ScaleSet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSet {
    pub name: String,
    /// VM size, e.g. `Standard_HB120rs_v3`.
    pub size: String,
    /// Marketplace image `publisher:offer:sku:version`.
    pub image: [String; 4],
    pub instances: u32,
    /// Subnet id; default: the file system's (the nodes must reach the MGS).
    pub subnet: Option<String>,
    pub admin_user: String,
    /// Public key installed for `admin_user`; default `~/.ssh/id_ed25519.pub` or `id_rsa.pub`.
    pub ssh_public_key: Option<PathBuf>,
    /// Scale to 0 instances once the run has finished.
    pub scale_to_zero: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmPool {
    pub partition: Option<String>,
    pub account: Option<String>,
}

impl Pool {
    pub fn is_local(&self) -> bool {
        self.hosts.iter().all(|h| h.is_local())
    }
}

pub use crate::executor::ssh::HostKeyChecking;

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    Ensure,
    Import(ImportStep),
    Process(ProcessStep),
    Export(ExportStep),
    Teardown,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Ensure => "ensure",
            Action::Import(_) => "import",
            Action::Process(_) => "process",
            Action::Export(_) => "export",
            Action::Teardown => "teardown",
        }
    }
}

/// AMLFS `conflictResolutionMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictMode {
    Fail,
    Skip,
    OverwriteIfDirty,
    OverwriteAlways,
}

impl ConflictMode {
    pub const NAMES: [&'static str; 4] = ["fail", "skip", "overwrite-if-dirty", "overwrite-always"];
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "fail" => ConflictMode::Fail,
            "skip" => ConflictMode::Skip,
            "overwrite-if-dirty" => ConflictMode::OverwriteIfDirty,
            "overwrite-always" => ConflictMode::OverwriteAlways,
            _ => return None,
        })
    }
}

/// Who moves the data of an import or export step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MoverKind {
    /// The file system's own HSM: AMLFS import jobs and archive (on the local target,
    /// its emulation).
    #[default]
    Hsm,
    /// `stage` itself copies between the container and the mounted file system.
    Direct,
}

impl MoverKind {
    pub const NAMES: [&'static str; 2] = ["hsm", "direct"];
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "hsm" => Some(MoverKind::Hsm),
            "direct" => Some(MoverKind::Direct),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImportStep {
    pub mover: MoverKind,
    pub prefixes: Vec<String>,
    pub conflict: ConflictMode,
    /// 0 stops at the first error, -1 never stops (AMLFS `maximumErrors`).
    pub max_errors: i64,
}

#[derive(Debug, Clone)]
pub struct ProcessStep {
    /// Globs (relative to the file system root); one task per matching file. Empty: one task.
    pub foreach: Vec<String>,
    /// Globs every task reads; part of each task's fingerprint; `{{inputs}}` in templates.
    pub inputs: Vec<String>,
    pub command: Template,
    pub outputs: Vec<Template>,
    pub retries: u32,
    /// Wait before a retry: doubled for each failed attempt (at most 10 minutes).
    pub retry_delay: Option<Duration>,
    pub timeout: Option<Duration>,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct ExportStep {
    pub mover: MoverKind,
    /// Paths relative to the file system root (files or directories).
    pub paths: Vec<String>,
    /// Steps whose declared outputs are exported.
    pub outputs_of: Vec<String>,
    /// Export continuously with an AMLFS auto-export job left enabled after the run, instead
    /// of a one-off archive.
    pub auto: bool,
}

impl ExportStep {
    /// Whether this export carries `path` (relative to the file system root), written by
    /// step `by`: by `outputs_of`, or by a `paths` entry that is it or holds it (`""` and `.`
    /// hold everything).
    pub fn takes(&self, path: &str, by: &str) -> bool {
        self.outputs_of.iter().any(|s| s == by)
            || self.paths.iter().any(|p| {
                let p = p.trim_end_matches('/');
                p.is_empty()
                    || p == "."
                    || path == p
                    || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
            })
    }
}

/// Variables every process template may use, with what they mean (for errors and docs).
pub const TASK_VARS: &[(&str, &str)] = &[
    (
        "input",
        "the task's input file (absolute path; foreach steps only)",
    ),
    ("rel", "the input's path relative to the file system root"),
    ("name", "the input's file name"),
    ("stem", "the input's file name up to its first dot"),
    (
        "dir",
        "the input's directory relative to the file system root",
    ),
    ("inputs", "every file matched by `inputs` (absolute paths)"),
    ("output", "the task's first declared output (absolute path)"),
    (
        "outputs",
        "all the task's declared outputs (absolute paths)",
    ),
    ("fs", "the file system root"),
    ("step", "the step's name"),
];

/// Variables an output path template may use (outputs cannot name themselves).
pub const OUTPUT_VARS: &[&str] = &["rel", "name", "stem", "dir", "step"];

/// Variables that need a foreach step.
pub const FOREACH_VARS: &[&str] = &["input", "rel", "name", "stem", "dir"];
