//! Builds the backends a pipeline's target needs.

use std::path::Path;
use std::sync::Arc;

use crate::engine::Backends;
use crate::executor::LocalExecutor;
use crate::filesystem::LocalFileSystem;
use crate::journal::Journal;
use crate::mover::LocalMover;
use crate::spec::{Pipeline, Target};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "the azure target is not available in this build yet; rehearse the pipeline with `target: local`"
    )]
    AzureUnavailable,
}

/// Where the local target keeps a file system that names no `mount`.
pub fn local_root(p: &Pipeline, state_dir: &Path) -> std::path::PathBuf {
    p.filesystem
        .mount
        .clone()
        .unwrap_or_else(|| state_dir.join("lustre").join(&p.filesystem.name))
}

pub fn backends(
    p: &Pipeline,
    state_dir: &Path,
    journal: Arc<Journal>,
) -> Result<Backends, TargetError> {
    match p.target {
        Target::Azure => Err(TargetError::AzureUnavailable),
        Target::Local => {
            let state_dir =
                std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
            let root = local_root(p, &state_dir);
            Ok(Backends {
                fs: Arc::new(LocalFileSystem::new(root.clone())),
                mover: Arc::new(LocalMover::new(
                    p.filesystem.name.clone(),
                    root,
                    p.filesystem.hsm.container.clone().into(),
                    journal,
                )),
                executor: Arc::new(LocalExecutor),
            })
        }
    }
}
