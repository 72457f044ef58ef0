use std::path::PathBuf;

use async_trait::async_trait;

use super::{FileSystem, FsError};

/// The local target's "Lustre": a plain directory.
pub struct LocalFileSystem {
    root: PathBuf,
}

impl LocalFileSystem {
    pub fn new(root: PathBuf) -> Self {
        LocalFileSystem { root }
    }
}

#[async_trait]
impl FileSystem for LocalFileSystem {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    async fn exists(&self) -> Result<bool, FsError> {
        Ok(self.root.is_dir())
    }

    async fn ensure(&self) -> Result<bool, FsError> {
        if self.root.is_dir() {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.root).map_err(|source| FsError::Io {
            what: "cannot create",
            path: self.root.clone(),
            source,
        })?;
        Ok(true)
    }

    async fn delete(&self) -> Result<(), FsError> {
        match std::fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(FsError::Io {
                what: "cannot delete",
                path: self.root.clone(),
                source,
            }),
        }
    }
}
