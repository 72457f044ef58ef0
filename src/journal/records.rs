//! What the journal stores. JSON values: readable with any sled tool when debugging a run.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
    /// Left behind by `stage run --new`.
    Abandoned,
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Abandoned)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: u64,
    pub pipeline: String,
    pub file: String,
    pub status: RunStatus,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// Set when a run finds nothing to do.
    #[serde(default)]
    pub did_work: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// For a pipeline that tears its file system down: the digest of its definition and
    /// its container when it succeeded (`engine::unchanged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub kind: String,
    pub state: StepState,
    /// The step's definition when it ran: a resumed run redoes a step whose definition changed.
    pub definition: String,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    #[serde(default)]
    pub summary: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Intent recorded: the task may have started.
    Dispatched,
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl TaskRecord {
    /// A task that may have started and has no outcome yet.
    pub fn dispatched(key: String, attempts: u32) -> Self {
        TaskRecord {
            key,
            state: TaskState::Dispatched,
            attempts,
            host: None,
            exit_code: None,
            signal: None,
            started_ms: None,
            finished_ms: None,
            error: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub key: String,
    pub state: TaskState,
    pub attempts: u32,
    pub host: Option<String>,
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Why the attempt failed. Logs are not recorded: `engine::tasks::log_files` derives
    /// their paths from run, step, key and attempt, which keeps a million records small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Size and modification time of a file: the change detector for tasks and exports.
///
/// Content hashes would survive `touch` but cost a full read of every input on every run;
/// size + nanosecond mtime is what make and rsync use, and it is what `explain` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
}

/// The last successful execution of a task (per pipeline and step, across runs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoneRecord {
    pub command: String,
    pub inputs: Vec<Stamp>,
    pub outputs: Vec<Stamp>,
    pub run: u64,
    pub finished_ms: u64,
    /// The successful attempt (host, exit code, times, logs): run `run`'s record of the task,
    /// kept here so a success costs one journal write, not two.
    #[serde(default)]
    pub task: Option<TaskRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Intent: an import of this blob version into this path has begun.
    Importing,
    /// Intent: an export of this path has begun.
    Archiving,
    /// The path matches the blob (Lustre HSM "archived, not dirty").
    Clean,
}

/// Local-target HSM state of one path: what Lustre's HSM flags track on a real AMLFS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    pub state: FileState,
    /// The blob version this path was imported from or exported to.
    pub blob_etag: String,
    pub size: u64,
    pub mtime_ns: i128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsState {
    Creating,
    Ready,
    Deleting,
    Deleted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FsRecord {
    pub state: FsState,
    /// Teardown deletes only file systems this state created (unless forced).
    pub created_here: bool,
    pub location: String,
    pub updated_ms: u64,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Modification time in nanoseconds since the epoch.
pub fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}
