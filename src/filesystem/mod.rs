//! The file system the pipeline stages data into: AMLFS on Azure, a directory locally.

mod local;

use std::path::PathBuf;

use async_trait::async_trait;

pub use local::LocalFileSystem;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
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
}
