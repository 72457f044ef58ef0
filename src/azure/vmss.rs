//! The compute pool as a VM scale set: created (or scaled) to the pipeline's instance count,
//! its instances' private addresses read from their network interfaces, and optionally
//! scaled to zero when the run is over (a stopped pool costs nothing but its disks).

use reqwest::Method;
use serde_json::{Value, json};

use super::arm::{Arm, ArmError};
use crate::spec::ScaleSet;

pub const API_VERSION: &str = "2024-07-01";
/// VMSS network interfaces are served by Microsoft.Network under this version.
pub const NIC_API_VERSION: &str = "2018-10-01";

#[derive(Debug, Clone)]
pub struct ScaleSetRef {
    pub subscription: String,
    pub group: String,
    pub location: String,
    pub name: String,
}

impl ScaleSetRef {
    /// The path with Microsoft.Compute's api-version, as every call here sends it.
    pub fn url(&self) -> String {
        format!("{}?api-version={API_VERSION}", self.path())
    }
    pub fn path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{}",
            self.subscription, self.group, self.name
        )
    }
}

/// cloud-init for every instance: the Lustre client for the running kernel, then the mount.
pub fn cloud_init(mgs: &str, mount: &str) -> String {
    format!(
        "#cloud-config\nruncmd:\n  - [sh, -c, 'apt-get update -q && apt-get install -y -q \"amlfs-lustre-client-2.15.7*$(uname -r)\" || apt-get install -y -q lustre-client-modules-$(uname -r)']\n  - [mkdir, -p, {mount}]\n  - [mount, -t, lustre, -o, noatime,flock, '{mgs}@tcp:/lustrefs', {mount}]\n"
    )
}

/// The scale set to PUT.
pub fn desired(
    ss: &ScaleSet,
    location: &str,
    subnet: &str,
    public_key: &str,
    custom_data: &str,
) -> Value {
    use base64::Engine;
    let [publisher, offer, sku, version] = &ss.image;
    json!({
        "location": location,
        "sku": { "name": ss.size, "tier": "Standard", "capacity": ss.instances },
        "properties": {
            "upgradePolicy": { "mode": "Manual" },
            "overprovision": false,
            "singlePlacementGroup": true,
            "virtualMachineProfile": {
                "storageProfile": {
                    "imageReference": { "publisher": publisher, "offer": offer, "sku": sku, "version": version },
                    "osDisk": { "createOption": "FromImage", "managedDisk": { "storageAccountType": "Premium_LRS" } },
                },
                "osProfile": {
                    "computerNamePrefix": ss.name.chars().filter(char::is_ascii_alphanumeric).take(9).collect::<String>(),
                    "adminUsername": ss.admin_user,
                    "customData": base64::engine::general_purpose::STANDARD.encode(custom_data),
                    "linuxConfiguration": {
                        "disablePasswordAuthentication": true,
                        "ssh": { "publicKeys": [{
                            "path": format!("/home/{}/.ssh/authorized_keys", ss.admin_user),
                            "keyData": public_key.trim(),
                        }]},
                    },
                },
                "networkProfile": {
                    "networkInterfaceConfigurations": [{
                        "name": format!("{}-nic", ss.name),
                        "properties": {
                            "primary": true,
                            "enableAcceleratedNetworking": true,
                            "ipConfigurations": [{
                                "name": "ipconfig",
                                "properties": { "subnet": { "id": subnet } },
                            }],
                        },
                    }],
                },
            },
        },
    })
}

/// Creates the scale set, or scales it to `want`'s capacity, and waits for it; returns the
/// instances' private addresses once there are as many as asked for, and whether instances
/// were created by this call.
pub async fn ensure(
    arm: &Arm,
    r: &ScaleSetRef,
    want: &Value,
) -> Result<(Vec<String>, bool), ArmError> {
    let path = r.url();
    let capacity = want["sku"]["capacity"].as_u64().unwrap_or(0);
    let fresh = match arm.get::<Value>(&path).await? {
        None => {
            arm.call_lro(Method::PUT, &path, Some(want), || {}).await?;
            true
        }
        Some(have) => {
            let diffs = drift(want, &have);
            if !diffs.is_empty() {
                return Err(ArmError::Operation {
                    path: r.path(),
                    status: "exists with other settings".into(),
                    message: Some(format!(
                        "{}; nothing was changed: delete the scale set or name another one",
                        diffs.join(", ")
                    )),
                });
            }
            if have["sku"]["capacity"].as_u64() != Some(capacity) {
                scale(arm, r, capacity).await?;
                true
            } else {
                false
            }
        }
    };
    // Instances get their addresses as they come up.
    loop {
        let ips = addresses(arm, r).await?;
        if ips.len() as u64 >= capacity {
            return Ok((ips, fresh));
        }
        tokio::time::sleep(arm.poll_interval()).await;
    }
}

/// The set's instance count, or None when it does not exist.
pub async fn capacity(arm: &Arm, r: &ScaleSetRef) -> Result<Option<u64>, ArmError> {
    let path = r.url();
    Ok(arm
        .get::<Value>(&path)
        .await?
        .map(|v| v["sku"]["capacity"].as_u64().unwrap_or(0)))
}

/// What differs between an existing set and the wanted one in settings stage does not change
/// in place (VM size, image): changing them means new VMs, which is the user's call.
pub fn drift(want: &Value, have: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let size = |v: &Value| v["sku"]["name"].as_str().unwrap_or_default().to_string();
    if !size(want).eq_ignore_ascii_case(&size(have)) {
        out.push(format!("size: {} (wanted {})", size(have), size(want)));
    }
    let image = |v: &Value| {
        let i = &v["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"];
        ["publisher", "offer", "sku", "version"]
            .map(|k| i[k].as_str().unwrap_or_default().to_ascii_lowercase())
            .join(":")
    };
    if image(want) != image(have) {
        out.push(format!("image: {} (wanted {})", image(have), image(want)));
    }
    out
}

/// Scales the set to zero instances if it exists and has any.
pub async fn scale_to_zero(arm: &Arm, r: &ScaleSetRef) -> Result<(), ArmError> {
    let path = r.url();
    match arm.get::<Value>(&path).await? {
        Some(have) if have["sku"]["capacity"].as_u64().unwrap_or(0) > 0 => scale(arm, r, 0).await,
        _ => Ok(()),
    }
}

pub async fn scale(arm: &Arm, r: &ScaleSetRef, capacity: u64) -> Result<(), ArmError> {
    let path = r.url();
    let patch = json!({ "sku": { "capacity": capacity } });
    arm.call_lro(Method::PATCH, &path, Some(&patch), || {})
        .await?;
    Ok(())
}

async fn addresses(arm: &Arm, r: &ScaleSetRef) -> Result<Vec<String>, ArmError> {
    let path = format!(
        "{}/networkInterfaces?api-version={NIC_API_VERSION}",
        r.path()
    );
    // A pool of hundreds of instances spans pages.
    let nics: Vec<Value> = arm.list(&path).await?;
    let mut ips: Vec<String> = nics
        .iter()
        .filter_map(|nic| {
            nic["properties"]["ipConfigurations"]
                .as_array()?
                .iter()
                .find_map(|c| c["properties"]["privateIPAddress"].as_str())
                .map(str::to_string)
        })
        .collect();
    ips.sort();
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_image_changes_are_drift_and_case_is_not() {
        let set = |size: &str, sku: &str| {
            json!({ "sku": { "name": size, "capacity": 2 }, "properties": { "virtualMachineProfile": {
                "storageProfile": { "imageReference": { "publisher": "p", "offer": "o", "sku": sku, "version": "latest" } } } } })
        };
        assert!(
            drift(
                &set("Standard_HB120rs_v3", "2204"),
                &set("standard_hb120rs_v3", "2204")
            )
            .is_empty()
        );
        let d = drift(
            &set("Standard_HB120rs_v3", "2204"),
            &set("Standard_HB176rs_v4", "2004"),
        );
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("Standard_HB176rs_v4 (wanted Standard_HB120rs_v3)"));
    }
}
