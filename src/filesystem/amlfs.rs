//! Azure Managed Lustre over ARM: ensure (create, wait, refuse drift), exists, delete.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;

use super::{FileSystem, FsError, FsPlan};
use crate::azure::arm::Arm;
use crate::azure::hsm_slot::{HsmSlot, SlotError};
use crate::azure::models::AmlFilesystem;
use crate::azure::resources::{FsRef, drift};

/// How long role assignments may take to propagate, with a margin: Microsoft documents up
/// to five minutes.
const ROLE_PROPAGATION: std::time::Duration = std::time::Duration::from_secs(6 * 60);

pub struct AmlfsFileSystem {
    arm: Arc<Arm>,
    fs: FsRef,
    desired: AmlFilesystem,
    /// Where the compute nodes mount it.
    mount: PathBuf,
    /// An expansion job is an HSM job: it takes its turn like the others.
    slot: HsmSlot,
}

impl AmlfsFileSystem {
    pub fn new(
        arm: Arc<Arm>,
        fs: FsRef,
        desired: AmlFilesystem,
        mount: PathBuf,
        journal: Arc<crate::journal::Journal>,
    ) -> Self {
        AmlfsFileSystem {
            slot: HsmSlot::new(arm.clone(), fs.clone(), journal),
            arm,
            fs,
            desired,
            mount,
        }
    }

    async fn get(&self) -> Result<Option<AmlFilesystem>, FsError> {
        Ok(self.arm.get::<AmlFilesystem>(&self.fs.path()).await?)
    }

    /// Polls until provisioning ends; a file system that failed to provision is an error.
    async fn wait_ready(&self) -> Result<AmlFilesystem, FsError> {
        loop {
            let Some(r) = self.get().await? else {
                return Err(FsError::Azure(format!(
                    "{} disappeared while provisioning",
                    self.describe()
                )));
            };
            match r.properties.provisioning_state.as_deref() {
                Some("Succeeded") => return Ok(r),
                Some("Failed" | "Canceled") => {
                    return Err(FsError::Azure(format!(
                        "{} failed to provision; delete it with `stage fs delete PIPELINE` and run again",
                        self.describe()
                    )));
                }
                _ => tokio::time::sleep(self.arm.poll_interval()).await,
            }
        }
    }

    /// Grows the file system in place with an expansion job named after the target capacity,
    /// so a resumed run finds the job it started; waits for it to complete.
    async fn grow(&self, tib: f64) -> Result<(), FsError> {
        let name = format!("stage-grow-{tib}tib").replace('.', "-");
        let path = self.fs.expansion_job_path(&name);
        let slot = |e: SlotError| match e {
            SlotError::Arm(a) => FsError::Arm(a),
            other => FsError::Azure(other.to_string()),
        };
        let mut turn = None;
        if self.arm.get::<serde_json::Value>(&path).await?.is_none() {
            tracing::info!("growing {} to {tib} TiB", self.describe());
            let body = serde_json::json!({
                "location": self.fs.location,
                "properties": { "newStorageCapacityTiB": tib },
            });
            // Ctrl-C is answered by the engine, which drops this wait.
            let mut t = self.slot.acquire(&name, true, None).await.map_err(slot)?;
            let started = self
                .slot
                .start(&mut t, &name, true, None, (Method::PUT, &path), &body)
                .await;
            if let Err(e) = started {
                self.slot.release(t).await.map_err(slot)?;
                return Err(slot(e));
            }
            turn = Some(t);
        }
        let grown = self.wait_expansion(&name, &path, tib).await;
        // Paused auto-export jobs come back once the expansion no longer holds the slot.
        if let Some(t) = turn {
            self.slot.release(t).await.map_err(slot)?;
        }
        grown
    }

    async fn wait_expansion(&self, name: &str, path: &str, tib: f64) -> Result<(), FsError> {
        loop {
            let job: serde_json::Value = self.arm.get(path).await?.unwrap_or_default();
            let status = &job["properties"]["status"];
            match status["state"].as_str() {
                Some("Completed") => return Ok(()),
                Some(state @ ("Failed" | "RollingBack" | "Deleting")) => {
                    return Err(FsError::Azure(format!(
                        "growing {} to {tib} TiB: expansion job {name} is {state}: {}",
                        self.describe(),
                        status["statusMessage"].as_str().unwrap_or("no message")
                    )));
                }
                _ => tokio::time::sleep(self.arm.poll_interval()).await,
            }
        }
    }

    /// Sends the create. Role assignments take up to five minutes to propagate (Microsoft's
    /// documentation), and a create in that window is refused as unauthorized: it is sent
    /// again, saying why, for as long as propagation can take, then the refusal stands.
    async fn create(&self) -> Result<(), FsError> {
        let path = self.fs.path();
        let started = std::time::Instant::now();
        let mut said = false;
        loop {
            let reply = self
                .arm
                .send(Method::PUT, &path, Some(&self.desired))
                .await?;
            let err = match Arm::check(&Method::PUT, &path, reply) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let propagating = matches!(
                &err,
                crate::azure::arm::ArmError::Service { code, status: 400 | 403, .. }
                    if code.contains("AuthorizationFailed")
            );
            if !propagating || started.elapsed() > ROLE_PROPAGATION {
                return Err(err.into());
            }
            if !said {
                tracing::warn!(
                    "{}: the provider's role assignments on the storage account are not in effect yet (Azure takes up to five minutes); retrying the create",
                    self.describe()
                );
                said = true;
            }
            tokio::time::sleep(self.arm.poll_interval() * 5).await;
        }
    }

    fn check_drift(&self, have: &AmlFilesystem) -> Result<(), FsError> {
        let d = drift(&self.desired, have);
        if d.is_empty() {
            return Ok(());
        }
        Err(FsError::Drift {
            name: self.describe(),
            diffs: d,
        })
    }
}

#[async_trait]
impl FileSystem for AmlfsFileSystem {
    fn describe(&self) -> String {
        format!(
            "AMLFS {} in {}/{}",
            self.fs.name, self.fs.group, self.fs.location
        )
    }

    fn root(&self) -> PathBuf {
        self.mount.clone()
    }

    async fn exists(&self) -> Result<bool, FsError> {
        Ok(self
            .get()
            .await?
            .is_some_and(|r| r.properties.provisioning_state.as_deref() == Some("Succeeded")))
    }

    async fn ensure(&self) -> Result<bool, FsError> {
        if let Some(have) = self.get().await? {
            self.check_drift(&have)?;
            let creating = have.properties.provisioning_state.as_deref() != Some("Succeeded");
            // A run killed while the file system was provisioning waits for it, never makes
            // a second one; what Azure did not report while creating is compared once ready.
            let have = self.wait_ready().await?;
            self.check_drift(&have)?;
            if let Some(tib) = crate::azure::resources::growth(&self.desired, &have) {
                self.grow(tib).await?;
            }
            if have.properties.maintenance_window != self.desired.properties.maintenance_window {
                let patch = serde_json::json!({
                    "properties": { "maintenanceWindow": self.desired.properties.maintenance_window }
                });
                let r = self
                    .arm
                    .call_lro(Method::PATCH, &self.fs.path(), Some(&patch), || {})
                    .await?;
                Arm::check(&Method::PATCH, &self.fs.path(), r)?;
            }
            return Ok(creating);
        }
        // What the create needs must exist: Azure would fail it only minutes in.
        let found = crate::azure::prerequisites::check(&self.arm, &self.desired).await?;
        for note in &found.notes {
            tracing::warn!("{}: {note}", self.describe());
        }
        if !found.problems.is_empty() {
            return Err(FsError::Prerequisites {
                name: self.describe(),
                problems: found.problems,
            });
        }
        // The provider's roles on the HSM account first: without them Azure fails the
        // create minutes in.
        if let Some(account) = self
            .desired
            .properties
            .hsm_settings()
            .and_then(|s| crate::azure::resources::storage_account(&s.container))
        {
            let granted = crate::azure::roles::ensure(&self.arm, &account)
                .await
                .map_err(|e| match e {
                    crate::azure::roles::RoleError::Arm(a) => FsError::Arm(a),
                    other => FsError::Azure(other.to_string()),
                })?;
            for role in granted {
                tracing::info!("granted the HPC Cache Resource Provider {role} on {account}");
            }
        }
        // Accepted is enough: provisioning is followed on the resource itself, which a
        // resumed run can do too (the operation URL is not journaled).
        self.create().await?;
        crate::failpoint::hit("amlfs.after-create");
        self.wait_ready().await?;
        Ok(true)
    }

    async fn reconcile(&self) -> Result<(), FsError> {
        self.ensure().await.map(|_| ())
    }

    async fn plan(&self) -> Result<FsPlan, FsError> {
        let Some(have) = self.get().await? else {
            let found = crate::azure::prerequisites::check(&self.arm, &self.desired).await?;
            if !found.problems.is_empty() {
                return Ok(FsPlan::Blocked(found.problems));
            }
            return Ok(FsPlan::Create(found.notes));
        };
        let d = drift(&self.desired, &have);
        if !d.is_empty() {
            return Ok(FsPlan::Refuse(d));
        }
        Ok(match have.properties.provisioning_state.as_deref() {
            Some("Failed" | "Canceled") => FsPlan::Failed,
            Some("Succeeded") => {
                if let Some(tib) = crate::azure::resources::growth(&self.desired, &have) {
                    FsPlan::Grow(tib)
                } else if have.properties.maintenance_window
                    != self.desired.properties.maintenance_window
                {
                    FsPlan::Update("maintenance window".into())
                } else {
                    FsPlan::Keep
                }
            }
            _ => FsPlan::Wait,
        })
    }

    async fn state(&self) -> Result<Option<String>, FsError> {
        Ok(self
            .get()
            .await?
            .map(|r| r.properties.provisioning_state.unwrap_or_default()))
    }

    async fn delete(&self) -> Result<(), FsError> {
        self.arm
            .call_lro(Method::DELETE, &self.fs.path(), None::<&()>, || {})
            .await?;
        Ok(())
    }
}
