//! Builds the backends a pipeline's target needs.

use std::path::Path;
use std::sync::Arc;

use crate::engine::Backends;
use crate::executor::ssh::SshOptions;
use crate::executor::{Executor, LocalExecutor, SshExecutor};
use crate::filesystem::LocalFileSystem;
use crate::journal::Journal;
use crate::mover::BlobMover;
use crate::spec::{Pipeline, Target};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("azure target: {0}")]
    Azure(String),
    #[error("cannot prepare the state directory for SSH")]
    State(#[source] std::io::Error),
    #[error("container {container}: {source}")]
    Store {
        container: String,
        #[source]
        source: StoreError,
    },
}

/// Where the local target keeps a file system that names no `mount`.
pub fn local_root(p: &Pipeline, state_dir: &Path) -> std::path::PathBuf {
    p.filesystem
        .mount
        .clone()
        .unwrap_or_else(|| state_dir.join("lustre").join(&p.filesystem.name))
}

/// Local slots, or SSH to the pool's hosts when any of them is remote.
pub fn executor(p: &Pipeline, state_dir: &Path) -> Result<Arc<dyn Executor>, TargetError> {
    let slots = p.pool.slots as usize;
    if let Some(slurm) = &p.pool.slurm {
        let token = state_token(state_dir).map_err(TargetError::State)?;
        return Ok(Arc::new(crate::executor::SlurmExecutor::new(
            slots,
            slurm.clone(),
            token,
            state_dir,
        )));
    }
    if let Some(set) = &p.pool.scale_set {
        return scale_set_executor(p, set, state_dir);
    }
    if p.pool.is_local() {
        return Ok(Arc::new(LocalExecutor::new(slots, state_dir)));
    }
    Ok(Arc::new(SshExecutor::new(
        p.pool.hosts.clone(),
        slots,
        ssh_options(p, state_dir)?,
    )))
}

fn ssh_options(p: &Pipeline, state_dir: &Path) -> Result<SshOptions, TargetError> {
    let token = state_token(state_dir).map_err(TargetError::State)?;
    Ok(SshOptions {
        config: p.pool.ssh_config.clone(),
        host_keys: p.pool.host_key_checking,
        known_hosts: state_dir.join("known_hosts"),
        token,
    })
}

/// Tasks over SSH to the instances of a scale set that stage ensures.
fn scale_set_executor(
    p: &Pipeline,
    set: &crate::spec::ScaleSet,
    state_dir: &Path,
) -> Result<Arc<dyn Executor>, TargetError> {
    let fs = crate::azure::resources::fs_ref(p).map_err(|e| TargetError::Azure(e.to_string()))?;
    let subnet = set
        .subnet
        .clone()
        .or_else(|| p.filesystem.subnet.clone())
        .ok_or_else(|| {
            TargetError::Azure("the scale set needs a `subnet` (or the file system's)".into())
        })?;
    Ok(Arc::new(crate::executor::ScaleSetExecutor {
        arm: Arc::new(arm_client(p)?),
        set: scale_set_ref(p, set)?,
        spec: set.clone(),
        fs_path: fs.path(),
        mount: mount_point(p).display().to_string(),
        subnet,
        slots_per_host: p.pool.slots as usize,
        ssh: ssh_options(p, state_dir)?,
        inner: Default::default(),
    }))
}

pub fn scale_set_ref(
    p: &Pipeline,
    set: &crate::spec::ScaleSet,
) -> Result<crate::azure::vmss::ScaleSetRef, TargetError> {
    let fs = crate::azure::resources::fs_ref(p).map_err(|e| TargetError::Azure(e.to_string()))?;
    Ok(crate::azure::vmss::ScaleSetRef {
        subscription: fs.subscription,
        group: fs.group,
        location: fs.location,
        name: set.name.clone(),
    })
}

/// Where the compute nodes see the file system on the azure target.
pub fn mount_point(p: &Pipeline) -> std::path::PathBuf {
    p.filesystem
        .mount
        .clone()
        .unwrap_or_else(|| "/mnt/lustre".into())
}

/// A random name for this state directory, made once: names its files on the nodes and its
/// control sockets, which must stay short.
fn state_token(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let token = format!("{:012x}", crate::digest::nonce() & 0xffff_ffff_ffff);
    std::fs::create_dir_all(state_dir)?;
    std::fs::write(&path, &token)?;
    Ok(token)
}

pub fn backends(
    p: &Pipeline,
    state_dir: &Path,
    journal: Arc<Journal>,
) -> Result<Backends, TargetError> {
    match p.target {
        Target::Azure => azure_backends(p, state_dir, journal),
        Target::Local => {
            let state_dir =
                std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
            let root = local_root(p, &state_dir);
            let store = open_store(p)?;
            let mover: Arc<dyn crate::mover::Mover> =
                Arc::new(direct_mover(p, root.clone(), store.clone(), journal));
            Ok(Backends {
                fs: Arc::new(LocalFileSystem::new(root.clone())),
                // On the local target the HSM emulation is stage's own copy: both are one.
                mover: mover.clone(),
                direct: mover,
                executor: executor(p, &state_dir)?,
                container: store,
            })
        }
    }
}

/// The ARM endpoint: `STAGE_ARM_ENDPOINT`, else the pipeline's, else Azure's public cloud.
pub fn arm_endpoint(p: &Pipeline) -> String {
    env_arm_endpoint()
        .or_else(|| p.azure.as_ref().and_then(|a| a.endpoint.clone()))
        .unwrap_or_else(|| DEFAULT_ARM_ENDPOINT.into())
}

pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";

/// `STAGE_ARM_ENDPOINT`, which overrides any pipeline's endpoint.
pub fn env_arm_endpoint() -> Option<String> {
    std::env::var("STAGE_ARM_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
}

fn azure_backends(
    p: &Pipeline,
    state_dir: &Path,
    journal: Arc<Journal>,
) -> Result<Backends, TargetError> {
    use crate::azure::resources;
    let bad = |e: &dyn std::fmt::Display| TargetError::Azure(e.to_string());
    let arm = Arc::new(arm_client(p)?);
    let fs_ref = resources::fs_ref(p).map_err(|e| bad(&e))?;
    let desired = resources::desired(p).map_err(|e| bad(&e))?;
    let root = mount_point(p);
    let store = open_store(p)?;
    let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    Ok(Backends {
        fs: Arc::new(crate::filesystem::AmlfsFileSystem::new(
            arm.clone(),
            fs_ref.clone(),
            desired,
            root.clone(),
            journal.clone(),
        )),
        mover: Arc::new(crate::mover::HsmMover::new(
            arm,
            fs_ref,
            journal.clone(),
            store.clone(),
            root.clone(),
        )),
        direct: Arc::new(direct_mover(p, root, store.clone(), journal)),
        executor: executor(p, &state_dir)?,
        container: store,
    })
}

/// stage's own copy between the container and the file system: the local target's HSM, and
/// `mover: direct` on both targets.
fn direct_mover(
    p: &Pipeline,
    root: std::path::PathBuf,
    store: Arc<dyn crate::store::BlobStore>,
    journal: Arc<Journal>,
) -> BlobMover {
    let transfers = store.default_transfers();
    BlobMover::new(p.filesystem.name.clone(), root, store, journal, transfers)
}

/// An ARM client for the pipeline's endpoint: a loopback emulator takes any bearer token;
/// everything else gets a real one from azure_identity.
pub fn arm_client(p: &Pipeline) -> Result<crate::azure::arm::Arm, TargetError> {
    arm_client_at(&arm_endpoint(p))
}

pub fn arm_client_at(endpoint: &str) -> Result<crate::azure::arm::Arm, TargetError> {
    use crate::azure::arm::{Arm, Auth};
    let bad = |e: &dyn std::fmt::Display| TargetError::Azure(e.to_string());
    let auth = if crate::azure::is_loopback_http(endpoint) {
        Auth::Emulator
    } else {
        Auth::Credential(crate::store::azure::credential::token_credential().map_err(|e| bad(&e))?)
    };
    Arm::new(endpoint, auth).map_err(|e| bad(&e))
}

/// The pipeline's HSM container, as a blob store.
fn open_store(p: &Pipeline) -> Result<Arc<dyn crate::store::BlobStore>, TargetError> {
    let container = &p.filesystem.hsm.container;
    crate::store::open(container).map_err(|source| TargetError::Store {
        container: container.clone(),
        source,
    })
}
