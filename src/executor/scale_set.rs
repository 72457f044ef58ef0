//! A pool whose hosts are a VM scale set's instances. The set is ensured when the first
//! process step starts — by then the file system exists, and the instances' cloud-init needs
//! its MGS address to mount it — and the tasks then go over SSH to the instances' private
//! addresses. At the end of a successful run the set may be scaled to zero.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::ssh::SshOptions;
use super::*;
use crate::azure::arm::Arm;
use crate::azure::cloud_init::LustreMount;
use crate::azure::models::AmlFilesystem;
use crate::azure::vmss::{self, ScaleSetRef};
use crate::pool::hostlist::Host;
use crate::spec::ScaleSet;

pub struct ScaleSetExecutor {
    pub arm: Arc<Arm>,
    pub set: ScaleSetRef,
    pub spec: ScaleSet,
    /// The file system's ARM path (for its MGS address) and where the instances mount it.
    pub fs_path: String,
    pub mount: String,
    pub subnet: String,
    pub slots_per_host: usize,
    pub ssh: SshOptions,
    /// The SSH executor over the instances, once the set is ready.
    pub inner: OnceCell<SshExecutor>,
}

impl ScaleSetExecutor {
    async fn hosts(&self) -> Result<&SshExecutor, ExecError> {
        self.inner
            .get_or_try_init(|| async {
                let pool = |m: String| ExecError::Pool(format!("scale set {}: {m}", self.set.name));
                let fs: AmlFilesystem = self
                    .arm
                    .get(&self.fs_path)
                    .await
                    .map_err(|e| pool(e.to_string()))?
                    .ok_or_else(|| pool("the file system does not exist yet; put `- ensure: {}` before the process steps".into()))?;
                let lustre = LustreMount::of(&fs, &self.mount).map_err(|e| pool(e.to_string()))?;
                let key = public_key(&self.spec).map_err(pool)?;
                let want = vmss::desired(
                    &self.spec,
                    &self.set.location,
                    &self.subnet,
                    &key,
                    &lustre.user_data(),
                );
                let (ips, fresh) = vmss::ensure(&self.arm, &self.set, &want)
                    .await
                    .map_err(|e| pool(e.to_string()))?;
                if fresh {
                    // New instances have new host keys, possibly at addresses stage has seen.
                    forget_host_keys(&self.ssh.known_hosts, &ips);
                }
                tracing::info!(hosts = ?ips, "scale set {} is provisioned", self.set.name);
                let hosts = ips
                    .into_iter()
                    .map(|ip| Host {
                        user: Some(self.spec.admin_user.clone()),
                        name: ip,
                        port: None,
                    })
                    .collect();
                let ssh = SshExecutor::new(hosts, self.slots_per_host, self.ssh.clone());
                self.wait_mounted(&ssh).await?;
                Ok(ssh)
            })
            .await
    }

    /// Waits until every instance has the file system mounted: a provisioned instance is
    /// still booting and installing the Lustre client, and a task run before the mount
    /// would write into the bare directory beneath it. Asked over SSH, of the kernel
    /// (`stat -f`), not of cloud-init's word.
    async fn wait_mounted(&self, ssh: &SshExecutor) -> Result<(), ExecError> {
        let probe = format!(
            "stat -f -c %T -- {}",
            crate::spec::template::shell_quote(&self.mount)
        );
        let started = std::time::Instant::now();
        let mut said = None;
        loop {
            let out = ssh.broadcast(&probe).await;
            let waiting: Vec<&str> = out
                .iter()
                .filter(|o| {
                    let lustre = String::from_utf8_lossy(&o.stdout).trim() == "lustre";
                    !(lustre && o.exit.as_ref().is_ok_and(|e| e.success()))
                })
                .map(|o| o.host.as_str())
                .collect();
            if waiting.is_empty() {
                tracing::info!("every instance has Lustre mounted at {}", self.mount);
                return Ok(());
            }
            if started.elapsed() > MOUNT_READY {
                return Err(ExecError::Pool(format!(
                    "scale set {}: {} of {} instances have no Lustre mount at {} after {} minutes ({}); see /var/log/cloud-init-output.log on them",
                    self.set.name,
                    waiting.len(),
                    out.len(),
                    self.mount,
                    MOUNT_READY.as_secs() / 60,
                    waiting.join(", ")
                )));
            }
            if said != Some(waiting.len()) {
                tracing::warn!(
                    "waiting for {} of {} instances to mount Lustre at {} (cloud-init installs the client first)",
                    waiting.len(),
                    out.len(),
                    self.mount
                );
                said = Some(waiting.len());
            }
            tokio::time::sleep(self.arm.poll_interval()).await;
        }
    }
}

/// How long new instances may take to boot, install the Lustre client and mount it.
const MOUNT_READY: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The key installed on the instances: the configured one, or the user's usual one.
fn public_key(spec: &ScaleSet) -> Result<String, String> {
    let candidates = match &spec.ssh_public_key {
        Some(p) => vec![p.clone()],
        None => {
            let home = std::env::var_os("HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_default();
            vec![
                home.join(".ssh/id_ed25519.pub"),
                home.join(".ssh/id_rsa.pub"),
            ]
        }
    };
    for path in &candidates {
        if let Ok(key) = std::fs::read_to_string(path) {
            return Ok(key);
        }
    }
    Err(format!(
        "no SSH public key for the instances (looked for {}); set `ssh_public_key`",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn forget_host_keys(known_hosts: &std::path::Path, ips: &[String]) {
    if !known_hosts.exists() {
        return;
    }
    for ip in ips {
        let _ = std::process::Command::new("ssh-keygen")
            .arg("-R")
            .arg(ip)
            .arg("-f")
            .arg(known_hosts)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[async_trait]
impl Executor for ScaleSetExecutor {
    fn slots(&self) -> Vec<String> {
        self.inner.get().map(|s| s.slots()).unwrap_or_default()
    }

    async fn prepare(&self) -> Result<Vec<(String, String)>, ExecError> {
        self.hosts().await?.prepare().await
    }

    async fn run(&self, slot: usize, cmd: &TaskCommand) -> Result<TaskExit, ExecError> {
        self.hosts().await?.run(slot, cmd).await
    }

    async fn shutdown(&self) {
        if let Some(s) = self.inner.get() {
            s.shutdown().await;
        }
    }

    async fn release(&self) -> Result<(), ExecError> {
        if !self.spec.scale_to_zero {
            return Ok(());
        }
        vmss::scale_to_zero(&self.arm, &self.set)
            .await
            .map_err(|e| ExecError::Pool(format!("scale set {}: {e}", self.set.name)))
    }

    async fn broadcast(&self, command: &str) -> Vec<HostOutput> {
        match self.hosts().await {
            Ok(s) => s.broadcast(command).await,
            Err(e) => vec![HostOutput {
                host: self.set.name.clone(),
                exit: Err(e.to_string()),
                stdout: Vec::new(),
                stderr: Vec::new(),
            }],
        }
    }
}
