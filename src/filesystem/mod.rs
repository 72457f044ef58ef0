//! The file system the pipeline stages data into: AMLFS on Azure, a directory locally.

mod amlfs;
mod local;

use std::path::PathBuf;

use async_trait::async_trait;

pub use amlfs::AmlfsFileSystem;
pub use local::LocalFileSystem;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Arm(Box<crate::azure::arm::ArmError>),
    #[error("{0}")]
    Azure(String),
    #[error("{name} exists with settings that cannot change after creation:\n  {}\nnothing was changed; point the pipeline at another file system name, or delete this one", diffs.join("\n  "))]
    Drift { name: String, diffs: Vec<String> },
    #[error("{name} cannot be created:\n  {}\nnothing was created", problems.join("\n  "))]
    Prerequisites { name: String, problems: Vec<String> },
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What ensuring the file system would do now, for `plan` to say exactly that.
#[derive(Debug, Clone, PartialEq)]
pub enum FsPlan {
    /// Create it; the notes are said (a storage account without HNS).
    Create(Vec<String>),
    /// It cannot be created until these are fixed (a missing subnet or container).
    Blocked(Vec<String>),
    Keep,
    /// Provisioning is under way: ensure waits for it.
    Wait,
    /// Grow in place to this many TiB (an expansion job).
    Grow(f64),
    /// Change what can change in place (the maintenance window).
    Update(String),
    /// Settings that cannot change differ: ensure refuses, with these lines.
    Refuse(Vec<String>),
    /// It exists in `Failed`: ensure stops until it is deleted (`stage fs delete`).
    Failed,
}

#[async_trait]
pub trait FileSystem: Send + Sync {
    /// Human description, e.g. "directory /x" or "AMLFS scratch in rg/eastus".
    fn describe(&self) -> String;
    /// Where tasks see the namespace (the Lustre mount point).
    fn root(&self) -> PathBuf;
    async fn exists(&self) -> Result<bool, FsError>;
    /// Creates the file system if it is missing; returns true when it created it.
    async fn ensure(&self) -> Result<bool, FsError>;
    async fn delete(&self) -> Result<(), FsError>;
    /// What [`FileSystem::ensure`] would do, changing nothing.
    async fn plan(&self) -> Result<FsPlan, FsError> {
        Ok(if self.exists().await? {
            FsPlan::Keep
        } else {
            FsPlan::Create(Vec::new())
        })
    }
    /// The state the service reports it in (`Succeeded`, `Failed`, …), `None` when absent.
    async fn state(&self) -> Result<Option<String>, FsError> {
        Ok(self.exists().await?.then(|| "Succeeded".to_string()))
    }
    /// Checks an existing file system against the pipeline: refuses settings that cannot
    /// change, updates those that can.
    async fn reconcile(&self) -> Result<(), FsError> {
        Ok(())
    }
}

impl From<crate::azure::arm::ArmError> for FsError {
    fn from(e: crate::azure::arm::ArmError) -> Self {
        FsError::Arm(Box::new(e))
    }
}
