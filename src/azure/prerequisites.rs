//! What must exist before a file system can be created, checked before anything is created:
//! the seed's Terraform makes the subnet, the storage account and both containers, and a
//! create that names a missing or too small one fails on Azure only after minutes (or leaves
//! a file system that cannot grow). Saying so up front, with what to fix, is cheaper.

use serde_json::Value;

use super::arm::{Arm, ArmError};
use super::models::AmlFilesystem;

/// Microsoft.Network's api-version for subnets.
pub const NETWORK_API_VERSION: &str = "2024-05-01";
/// Microsoft.Storage's api-version for storage accounts and blob containers.
pub const STORAGE_API_VERSION: &str = "2023-05-01";

/// What the check found: `problems` stop the create, `notes` are said and the create goes on.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// The smallest subnet (prefix length) Microsoft recommends for a file system of `tib`:
/// 4–16 TiB /27, 20–40 /26, 44–92 /25, 96–196 /24, 200–400 /23 (and no smaller beyond).
pub fn subnet_prefix_for(tib: f64) -> u8 {
    match tib {
        t if t <= 16.0 => 27,
        t if t <= 40.0 => 26,
        t if t <= 92.0 => 25,
        t if t <= 196.0 => 24,
        _ => 23,
    }
}

/// The IPv4 prefix lengths of a subnet resource (`addressPrefix` or `addressPrefixes`).
fn ipv4_prefixes(subnet: &Value) -> (Vec<u8>, usize) {
    let p = &subnet["properties"];
    let all: Vec<&str> = p["addressPrefix"]
        .as_str()
        .into_iter()
        .chain(
            p["addressPrefixes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        )
        .collect();
    let v4 = all
        .iter()
        .filter(|a| !a.contains(':'))
        .filter_map(|a| a.split_once('/')?.1.parse().ok())
        .collect();
    (v4, all.len())
}

/// A GET that tells "missing" from "may not look": `Ok(None)` for 404, `Err(None)` for 403.
async fn fetch(arm: &Arm, path: &str) -> Result<Option<Value>, Option<ArmError>> {
    match arm.get::<Value>(path).await {
        Ok(v) => Ok(v),
        Err(e) if e.status() == Some(403) => Err(None),
        Err(e) => Err(Some(e)),
    }
}

/// Checks the subnet, the HSM storage account and its two containers of `desired`.
pub async fn check(arm: &Arm, desired: &AmlFilesystem) -> Result<Findings, ArmError> {
    let mut f = Findings::default();
    let unreadable = |f: &mut Findings, what: &str, id: &str| {
        f.notes
            .push(format!("cannot read {what} {id} (403): not checked"))
    };
    if let Some(subnet) = desired.properties.filesystem_subnet.as_deref() {
        let path = format!("{subnet}?api-version={NETWORK_API_VERSION}");
        let tib = desired.properties.storage_capacity_tib.unwrap_or(0.0);
        let need = subnet_prefix_for(tib);
        match fetch(arm, &path).await {
            Ok(None) => f.problems.push(format!(
                "subnet {subnet} does not exist: create it first (IPv4, /{need} or larger for {tib} TiB)"
            )),
            Ok(Some(s)) => match ipv4_prefixes(&s) {
                (v4, n) if v4.is_empty() && n > 0 => f.problems.push(format!(
                    "subnet {subnet} has no IPv4 address range: AMLFS needs IPv4"
                )),
                (v4, _) if v4.is_empty() => f.notes.push(format!(
                    "subnet {subnet} reports no address range: its size was not checked"
                )),
                (v4, _) => {
                    let widest = v4.iter().copied().min().unwrap_or(32);
                    if widest > need {
                        f.problems.push(format!(
                            "subnet {subnet} is /{widest}: a {tib} TiB file system needs /{need} or larger (Microsoft's sizing), and cannot move to another subnet later"
                        ));
                    }
                }
            },
            Err(None) => unreadable(&mut f, "subnet", subnet),
            Err(Some(e)) => return Err(e),
        }
    }
    let Some(hsm) = desired.properties.hsm_settings() else {
        return Ok(f);
    };
    if let Some(account) = super::resources::storage_account(&hsm.container) {
        let path = format!("{account}?api-version={STORAGE_API_VERSION}");
        match fetch(arm, &path).await {
            Ok(None) => {
                f.problems
                    .push(format!("storage account {account} does not exist"));
                // Its containers cannot exist either: one line says it.
                return Ok(f);
            }
            Ok(Some(a)) => {
                if a["properties"]["isHnsEnabled"] != Value::Bool(true) {
                    f.notes.push(format!(
                        "storage account {account} has no hierarchical namespace: Microsoft recommends HNS for AMLFS (renames and directories are then real)"
                    ));
                }
            }
            Err(None) => unreadable(&mut f, "storage account", &account),
            Err(Some(e)) => return Err(e),
        }
    }
    for (what, id) in [
        ("container", &hsm.container),
        ("logging container", &hsm.logging_container),
    ] {
        let path = format!("{id}?api-version={STORAGE_API_VERSION}");
        match fetch(arm, &path).await {
            Ok(None) => f.problems.push(format!(
                "{what} {} does not exist in its storage account: create it first",
                super::resources::container_parts(id).map_or(id.clone(), |(_, c)| c)
            )),
            Ok(Some(_)) => {}
            Err(None) => unreadable(&mut f, what, id),
            Err(Some(e)) => return Err(e),
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_sizes_follow_microsofts_table() {
        for (tib, want) in [
            (4.0, 27),
            (16.0, 27),
            (20.0, 26),
            (40.0, 26),
            (48.0, 25),
            (92.0, 25),
            (96.0, 24),
            (196.0, 24),
            (200.0, 23),
            (1000.0, 23),
        ] {
            assert_eq!(subnet_prefix_for(tib), want, "{tib} TiB");
        }
        let s = serde_json::json!({ "properties": { "addressPrefixes": ["fd00::/64", "10.0.1.0/26"] } });
        assert_eq!(ipv4_prefixes(&s), (vec![26], 2));
        let s = serde_json::json!({ "properties": { "addressPrefix": "fd00::/64" } });
        assert_eq!(ipv4_prefixes(&s), (vec![], 1));
    }
}
