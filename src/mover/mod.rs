//! Moving data between the blob container and the file system, with AMLFS semantics.

mod blob;
mod hsm;
pub mod names;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use blob::BlobMover;
pub use hsm::HsmMover;

use crate::journal::JournalError;
use crate::spec::ConflictMode;

#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Hsm(String),
    #[error("interrupted")]
    Interrupted,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct ImportRequest {
    /// Deterministic job name: a resumed run finds its job instead of starting another.
    pub job: String,
    pub prefixes: Vec<String>,
    pub conflict: ConflictMode,
    pub max_errors: i64,
    /// Decide and count, copy nothing (for `plan`).
    pub dry_run: bool,
    /// Set by Ctrl-C: a server-side job is cancelled (or, with `detach`, left running).
    pub cancel: Option<crate::engine::Cancel>,
    pub detach: bool,
}

pub struct ExportRequest {
    pub job: String,
    pub paths: Vec<String>,
    /// Decide and count, copy nothing (for `plan`).
    pub dry_run: bool,
    /// Continuous export (an AMLFS auto-export job) rather than one archive.
    pub auto: bool,
    /// Set by Ctrl-C or SIGTERM: an archive is cancelled (or, with `detach`, left running).
    pub cancel: Option<crate::engine::Cancel>,
    pub detach: bool,
}

/// AMLFS import job states that a finished job can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum JobStatus {
    #[default]
    Completed,
    CompletedPartial,
    Failed,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub status: JobStatus,
    pub imported: u64,
    pub bytes: u64,
    pub up_to_date: u64,
    pub conflicts_skipped: u64,
    pub overwritten: u64,
    pub directories: u64,
    pub errors: Vec<String>,
    /// Set when the job stopped on a conflict in `fail` mode.
    pub conflict: Option<String>,
    /// A dry run of stage's own copy: the files it would write (the first
    /// [`PLANNED_NAMES`]), so `plan` can tell which tasks they feed. An AMLFS job's dry run
    /// cannot know which files it would leave alone, and names none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
}

/// Names a dry-run import lists at most: enough for `plan` to follow ordinary changes, bounded
/// for a first import of millions.
pub const PLANNED_NAMES: usize = 100_000;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    pub exported: u64,
    pub bytes: u64,
    pub unchanged: u64,
    pub verified: u64,
    pub errors: Vec<String>,
}

/// Why a path asked to be exported cannot be, when it is not there: an error, not an empty
/// success, in both movers (a job that wrote nothing must not look exported).
fn missing_export_path(root: &crate::beneath::Root, path: &str) -> Option<String> {
    use crate::beneath::Found;
    match root.lookup(path) {
        Ok(Found::Here(_)) => None,
        Ok(Found::Missing) => Some(format!("{path}: not found in the file system")),
        Ok(Found::Blocked { at, .. }) => Some(format!(
            "{path}: {at:?} is a symbolic link or a file, not a directory; not followed"
        )),
        Err(e) => Some(format!("{path}: {e}")),
    }
}

/// How far a transfer has got. `found_*` is what the listing has shown needs moving so far
/// (it runs up to a batch ahead of the copying); once `listed`, that is the whole job, so a
/// display can show a total and an ETA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
    pub found_files: u64,
    pub found_bytes: u64,
    pub listed: bool,
}

/// Progress callback.
pub type Progress = Box<dyn Fn(Tally) + Send + Sync>;

#[async_trait]
pub trait Mover: Send + Sync {
    async fn import(
        &self,
        req: ImportRequest,
        progress: Progress,
    ) -> Result<ImportReport, MoverError>;
    /// Archives new or changed files under `paths` and verifies every file it wrote.
    async fn export(
        &self,
        req: ExportRequest,
        progress: Progress,
    ) -> Result<ExportReport, MoverError>;
}

/// `1 file` / `2 files`, then what happened to them.
fn files(n: u64, moved: &str) -> String {
    format!("{n} file{} {moved}", if n == 1 { "" } else { "s" })
}

impl ImportReport {
    pub fn summary(&self) -> String {
        self.describe("imported")
    }

    /// The summary of a dry run: what would be imported.
    pub fn planned_summary(&self) -> String {
        self.describe("to import")
    }

    fn describe(&self, moved: &str) -> String {
        let mut s = files(self.imported, moved);
        // An AMLFS job counts files but reports no sizes: "(0 B)" would be wrong.
        if self.bytes > 0 || self.imported == 0 {
            s += &format!(" ({})", indicatif::HumanBytes(self.bytes));
        }
        s += &format!(", {} up to date", self.up_to_date);
        if self.overwritten > 0 {
            s += &format!(", {} overwritten", self.overwritten);
        }
        if self.conflicts_skipped > 0 {
            s += &format!(", {} conflicts skipped", self.conflicts_skipped);
        }
        if !self.errors.is_empty() {
            s += &format!(", {} errors", self.errors.len());
        }
        s
    }
    /// The source held nothing at all: no file, directory, conflict or unusable name. Most
    /// often a mistyped prefix, so the commands that can say so do.
    pub fn found_nothing(&self) -> bool {
        self.imported
            + self.up_to_date
            + self.conflicts_skipped
            + self.directories
            + self.errors.len() as u64
            == 0
    }

    pub fn did_work(&self) -> bool {
        self.imported > 0 || self.directories > 0
    }
}

impl ExportReport {
    pub fn summary(&self) -> String {
        self.describe("exported")
    }

    /// The summary of a dry run: what would be exported.
    pub fn planned_summary(&self) -> String {
        self.describe("to export")
    }

    fn describe(&self, moved: &str) -> String {
        format!(
            "{} ({}), {} unchanged, {} verified",
            files(self.exported, moved),
            indicatif::HumanBytes(self.bytes),
            self.unchanged,
            self.verified
        )
    }
}
