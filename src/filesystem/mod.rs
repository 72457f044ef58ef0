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
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
