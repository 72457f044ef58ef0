//! What a pipeline asks of Azure, as ARM paths and the desired file-system resource.

use crate::spec::{Pipeline, Sku};
use crate::store::azure::Location;

use super::models::*;

/// ARM identity of the pipeline's file system.
#[derive(Debug, Clone)]
pub struct FsRef {
    pub subscription: String,
    pub group: String,
    pub location: String,
    pub name: String,
}

impl FsRef {
    /// From a file system's ARM id (`/subscriptions/S/resourceGroups/G/providers/
    /// Microsoft.StorageCache/amlFilesystems/N`), matched case-insensitively as ARM does.
    pub fn from_id(id: &str, location: &str) -> Option<FsRef> {
        let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            [s, sub, r, group, p, provider, a, name]
                if s.eq_ignore_ascii_case("subscriptions")
                    && r.eq_ignore_ascii_case("resourceGroups")
                    && p.eq_ignore_ascii_case("providers")
                    && provider.eq_ignore_ascii_case(PROVIDER)
                    && a.eq_ignore_ascii_case("amlFilesystems") =>
            {
                Some(FsRef {
                    subscription: sub.to_string(),
                    group: group.to_string(),
                    location: location.to_string(),
                    name: name.to_string(),
                })
            }
            _ => None,
        }
    }

    pub fn path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{PROVIDER}/amlFilesystems/{}",
            self.subscription, self.group, self.name
        )
    }
    pub fn import_job_path(&self, job: &str) -> String {
        format!("{}/importJobs/{job}", self.path())
    }
    pub fn auto_export_job_path(&self, job: &str) -> String {
        format!("{}/autoExportJobs/{job}", self.path())
    }
    pub fn expansion_job_path(&self, job: &str) -> String {
        format!("{}/expansionJobs/{job}", self.path())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResourceError(pub String);

/// The ARM id of a container named by URL: `STORAGE_ACCOUNT_ID/blobServices/default/containers/C`.
pub fn container_id(p: &Pipeline, url: &str) -> Result<String, ResourceError> {
    let az = p
        .azure
        .as_ref()
        .ok_or_else(|| ResourceError("the azure target needs an `azure:` section".into()))?;
    let loc = Location::parse(url).map_err(|e| ResourceError(format!("{url}: {e}")))?;
    let account = p.filesystem.hsm.storage_account.clone().unwrap_or_else(|| {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}",
            az.subscription, az.resource_group, loc.account
        )
    });
    Ok(format!(
        "{account}/blobServices/default/containers/{}",
        loc.container
    ))
}

/// The storage account id of a container id (`…/storageAccounts/A/blobServices/default/containers/C`).
pub fn storage_account(container: &str) -> Option<String> {
    let at = container.to_ascii_lowercase().find("/blobservices/")?;
    Some(container[..at].to_string())
}

/// `…/storageAccounts/ACCOUNT/blobServices/default/containers/CONTAINER` → (account, container).
pub fn container_parts(id: &str) -> Option<(String, String)> {
    let s: Vec<&str> = id.trim_matches('/').split('/').collect();
    let pos = s
        .iter()
        .position(|p| p.eq_ignore_ascii_case("storageAccounts"))?;
    match &s[pos..] {
        [_, account, bs, _default, cs, container]
            if bs.eq_ignore_ascii_case("blobServices") && cs.eq_ignore_ascii_case("containers") =>
        {
            Some((account.to_string(), container.to_string()))
        }
        _ => None,
    }
}

pub fn fs_ref(p: &Pipeline) -> Result<FsRef, ResourceError> {
    let az = p
        .azure
        .as_ref()
        .ok_or_else(|| ResourceError("the azure target needs an `azure:` section".into()))?;
    Ok(FsRef {
        subscription: az.subscription.clone(),
        group: az.resource_group.clone(),
        location: az.location.clone(),
        name: p.filesystem.name.clone(),
    })
}

/// The file system as the pipeline describes it, ready to PUT.
pub fn desired(p: &Pipeline) -> Result<AmlFilesystem, ResourceError> {
    let f = &p.filesystem;
    let missing = |what: &str| ResourceError(format!("the azure target needs filesystem.{what}"));
    let sku: Sku = f.sku.ok_or_else(|| missing("sku"))?;
    let logging = f
        .hsm
        .logging_container
        .as_deref()
        .ok_or_else(|| missing("hsm.logging_container"))?;
    let window = f
        .maintenance_window
        .as_ref()
        .ok_or_else(|| missing("maintenance_window"))?;
    Ok(AmlFilesystem {
        location: Some(fs_ref(p)?.location),
        zones: f.zone.clone().map(|z| vec![z]),
        sku: Some(super::models::Sku {
            name: sku.name().to_string(),
        }),
        properties: FsProperties {
            storage_capacity_tib: Some(f64::from(
                f.capacity_tib.ok_or_else(|| missing("capacity_tib"))?,
            )),
            filesystem_subnet: Some(f.subnet.clone().ok_or_else(|| missing("subnet"))?),
            maintenance_window: Some(MaintenanceWindow {
                day_of_week: Some(window.day.clone()),
                time_of_day_utc: Some(window.time_utc.clone()),
            }),
            hsm: Some(Hsm {
                settings: Some(HsmSettings {
                    container: container_id(p, &f.hsm.container)?,
                    logging_container: container_id(p, logging)?,
                    import_prefixes_initial: Some(
                        f.hsm
                            .import_prefixes
                            .iter()
                            .map(|x| format!("/{x}"))
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Settings fixed at creation that differ between `want` and `have`, as readable lines.
/// The capacity to grow to, when the pipeline asks for more than the file system has.
pub fn growth(want: &AmlFilesystem, have: &AmlFilesystem) -> Option<f64> {
    match (want.current_capacity_tib(), have.current_capacity_tib()) {
        (Some(w), Some(h)) if w > h => Some(w),
        _ => None,
    }
}

pub fn drift(want: &AmlFilesystem, have: &AmlFilesystem) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |what: &str, a: String, b: String, ci: bool| {
        let same = if ci {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        };
        if !same {
            out.push(format!("{what}: pipeline wants {a}, Azure has {b}"));
        }
    };
    let sku = |r: &AmlFilesystem| r.sku.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    cmp("sku", sku(want), sku(have), false);
    let cap = |r: &AmlFilesystem| {
        r.current_capacity_tib()
            .map(|c| format!("{c} TiB"))
            .unwrap_or_default()
    };
    // Growing is done in place by an expansion job (see `growth`); shrinking is impossible.
    if growth(want, have).is_none() {
        cmp("capacity", cap(want), cap(have), false);
    }
    let subnet = |r: &AmlFilesystem| r.properties.filesystem_subnet.clone().unwrap_or_default();
    cmp("subnet", subnet(want), subnet(have), true);
    // While it is being created Azure reports no HSM settings yet (`hsm: {}`, as the
    // recorded 201 of a create shows): nothing to compare until it is ready.
    let settled = have.properties.provisioning_state.as_deref() == Some("Succeeded");
    if !settled && have.properties.hsm_settings().is_none() {
        return out;
    }
    let settings = |r: &AmlFilesystem| r.properties.hsm_settings().cloned().unwrap_or_default();
    let (w, h) = (settings(want), settings(have));
    cmp("HSM container", w.container, h.container, true);
    cmp(
        "HSM logging container",
        w.logging_container,
        h.logging_container,
        true,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_split_into_account_and_container() {
        assert_eq!(
            container_parts(
                "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/acct/blobServices/default/containers/data"
            ),
            Some(("acct".into(), "data".into()))
        );
        assert_eq!(
            container_parts("/subscriptions/s/storageAccounts/acct"),
            None
        );
    }

    #[test]
    fn drift_names_each_immutable_difference_and_ignores_case_of_ids() {
        let a = AmlFilesystem {
            sku: Some(super::super::models::Sku {
                name: "AMLFS-Durable-Premium-250".into(),
            }),
            properties: FsProperties {
                storage_capacity_tib: Some(8.0),
                filesystem_subnet: Some("/subscriptions/s/resourceGroups/RG/x".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut b = a.clone();
        b.properties.filesystem_subnet = Some("/subscriptions/s/resourcegroups/rg/x".into());
        assert!(drift(&a, &b).is_empty());
        b.properties.storage_capacity_tib = Some(16.0);
        let d = drift(&a, &b);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].contains("capacity: pipeline wants 8 TiB, Azure has 16 TiB"),
            "{d:?}"
        );
        // More than Azure has is growth, not drift.
        assert!(drift(&b, &a).is_empty());
        assert_eq!(growth(&b, &a), Some(16.0));
    }

    #[test]
    fn hsm_settings_not_reported_while_creating_are_no_drift_but_missing_once_ready_are() {
        let mut want = AmlFilesystem::default();
        want.properties.hsm = Some(Hsm {
            settings: Some(HsmSettings {
                container: "/s/storageAccounts/a/blobServices/default/containers/data".into(),
                logging_container: "/s/storageAccounts/a/blobServices/default/containers/logs"
                    .into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        // The recorded 201 of a create: `"hsm": {}`.
        let creating: AmlFilesystem = serde_json::from_str(include_str!(
            "../../tests/fixtures/recordings/fs_put_201_creating.json"
        ))
        .unwrap();
        assert_eq!(
            creating.properties.provisioning_state.as_deref(),
            Some("Creating")
        );
        let mut want_like = want.clone();
        want_like.sku = creating.sku.clone();
        want_like.properties.storage_capacity_tib = creating.properties.storage_capacity_tib;
        want_like.properties.filesystem_subnet = creating.properties.filesystem_subnet.clone();
        assert!(drift(&want_like, &creating).is_empty());
        let mut ready = creating.clone();
        ready.properties.provisioning_state = Some("Succeeded".into());
        assert_eq!(
            drift(&want_like, &ready).len(),
            2,
            "{:?}",
            drift(&want_like, &ready)
        );
    }
}
