//! ARM paths, matched case-insensitively as ARM does (`resourceGroups` and `resourcegroups`
//! are the same resource), with names kept as given.

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Filesystem {
        fs: FsKey,
    },
    Archive {
        fs: FsKey,
    },
    CancelArchive {
        fs: FsKey,
    },
    ImportJobs {
        fs: FsKey,
    },
    ImportJob {
        fs: FsKey,
        job: String,
    },
    Operation {
        id: String,
    },
    /// Microsoft Graph's service principal lookup (the emulator stands in for Graph too).
    ServicePrincipals,
    /// `SCOPE/providers/Microsoft.Authorization/roleAssignments[/NAME]`.
    RoleAssignments {
        scope: String,
    },
    RoleAssignment {
        scope: String,
        name: String,
    },
    ExpansionJob {
        fs: FsKey,
        job: String,
    },
    ExpansionJobs {
        fs: FsKey,
    },
    AutoImportJobs {
        fs: FsKey,
    },
    AutoImportJob {
        fs: FsKey,
        job: String,
    },
    AutoExportJob {
        fs: FsKey,
        job: String,
    },
    AutoExportJobs {
        fs: FsKey,
    },
    /// A VM scale set, by its resource id as given.
    ScaleSet {
        id: String,
    },
    ScaleSetNics {
        id: String,
    },
    /// `…/Microsoft.Network/virtualNetworks/V/subnets/S`, by its id as given.
    Subnet {
        id: String,
    },
    StorageAccount {
        id: String,
        account: String,
    },
    /// `ACCOUNT_ID/blobServices/default/containers/C`.
    BlobContainer {
        id: String,
        account: String,
        container: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FsKey {
    pub subscription: String,
    pub group: String,
    pub name: String,
}

impl FsKey {
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.StorageCache/amlFilesystems/{}",
            self.subscription, self.group, self.name
        )
    }
    /// ARM names compare case-insensitively.
    pub fn key(&self) -> String {
        self.id().to_ascii_lowercase()
    }
    /// Key prefix of a child collection (`importjobs`, `expansionjobs`, `autoexportjobs`).
    pub fn children(&self, collection: &str) -> String {
        format!("{}/{collection}/", self.key())
    }
    pub fn child_key(&self, collection: &str, name: &str) -> String {
        self.children(collection) + &name.to_ascii_lowercase()
    }
    pub fn job_key(&self, job: &str) -> String {
        self.child_key("importjobs", job)
    }
}

pub fn parse(path: &str) -> Option<Target> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if let [v, sp] = s.as_slice()
        && eq(v, "v1.0")
        && eq(sp, "servicePrincipals")
    {
        return Some(Target::ServicePrincipals);
    }
    if let Some(at) = s.windows(3).position(|w| {
        eq(w[0], "providers") && eq(w[1], "Microsoft.Authorization") && eq(w[2], "roleAssignments")
    }) {
        let scope = format!("/{}", s[..at].join("/"));
        return match &s[at + 3..] {
            [] => Some(Target::RoleAssignments { scope }),
            [name] => Some(Target::RoleAssignment {
                scope,
                name: name.to_string(),
            }),
            _ => None,
        };
    }
    if let [sub, _, rgs, _, prov, ns, kind, _, rest @ ..] = s.as_slice()
        && eq(sub, "subscriptions")
        && eq(rgs, "resourceGroups")
        && eq(prov, "providers")
        && eq(ns, "Microsoft.Compute")
        && eq(kind, "virtualMachineScaleSets")
    {
        let id = format!("/{}", s[..8].join("/"));
        return match rest {
            [] => Some(Target::ScaleSet { id }),
            [n] if eq(n, "networkInterfaces") => Some(Target::ScaleSetNics { id }),
            _ => None,
        };
    }
    if let [sub, _, rgs, _, prov, ns, rest @ ..] = s.as_slice()
        && eq(sub, "subscriptions")
        && eq(rgs, "resourceGroups")
        && eq(prov, "providers")
    {
        let id = format!("/{}", s.join("/"));
        match rest {
            [vnets, _, subnets, _]
                if eq(ns, "Microsoft.Network")
                    && eq(vnets, "virtualNetworks")
                    && eq(subnets, "subnets") =>
            {
                return Some(Target::Subnet { id });
            }
            [accounts, account]
                if eq(ns, "Microsoft.Storage") && eq(accounts, "storageAccounts") =>
            {
                return Some(Target::StorageAccount {
                    id,
                    account: account.to_string(),
                });
            }
            [accounts, account, services, default, containers, container]
                if eq(ns, "Microsoft.Storage")
                    && eq(accounts, "storageAccounts")
                    && eq(services, "blobServices")
                    && eq(default, "default")
                    && eq(containers, "containers") =>
            {
                return Some(Target::BlobContainer {
                    id,
                    account: account.to_string(),
                    container: container.to_string(),
                });
            }
            _ => {}
        }
    }
    match s.as_slice() {
        [sub, subscription, prov, ns, loc, _, ops, id]
            if eq(sub, "subscriptions")
                && eq(prov, "providers")
                && eq(ns, "Microsoft.StorageCache")
                && eq(loc, "locations")
                && (eq(ops, "ascOperations") || eq(ops, "azureAsyncOperation")) =>
        {
            let _ = subscription;
            Some(Target::Operation { id: id.to_string() })
        }
        [
            sub,
            subscription,
            rgs,
            group,
            prov,
            ns,
            kind,
            name,
            rest @ ..,
        ] if eq(sub, "subscriptions")
            && eq(rgs, "resourceGroups")
            && eq(prov, "providers")
            && eq(ns, "Microsoft.StorageCache")
            && eq(kind, "amlFilesystems") =>
        {
            let fs = FsKey {
                subscription: subscription.to_string(),
                group: group.to_string(),
                name: name.to_string(),
            };
            match rest {
                [] => Some(Target::Filesystem { fs }),
                [a] if eq(a, "archive") => Some(Target::Archive { fs }),
                [a] if eq(a, "cancelArchive") => Some(Target::CancelArchive { fs }),
                [a] if eq(a, "importJobs") => Some(Target::ImportJobs { fs }),
                [a] if eq(a, "autoExportJobs") => Some(Target::AutoExportJobs { fs }),
                [a] if eq(a, "expansionJobs") => Some(Target::ExpansionJobs { fs }),
                [a] if eq(a, "autoImportJobs") => Some(Target::AutoImportJobs { fs }),
                [a, job] if eq(a, "autoExportJobs") => Some(Target::AutoExportJob {
                    fs,
                    job: job.to_string(),
                }),
                [a, job] if eq(a, "autoImportJobs") => Some(Target::AutoImportJob {
                    fs,
                    job: job.to_string(),
                }),
                [a, job] if eq(a, "expansionJobs") => Some(Target::ExpansionJob {
                    fs,
                    job: job.to_string(),
                }),
                [a, job] if eq(a, "importJobs") => Some(Target::ImportJob {
                    fs,
                    job: job.to_string(),
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_case_insensitively() {
        let t = parse("/subscriptions/s1/resourcegroups/RG/providers/Microsoft.StorageCache/amlfilesystems/fs1/importJobs/job1").unwrap();
        match t {
            Target::ImportJob { fs, job } => {
                assert_eq!(
                    (fs.group.as_str(), fs.name.as_str(), job.as_str()),
                    ("RG", "fs1", "job1")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(
                "/subscriptions/s/providers/Microsoft.StorageCache/locations/eastus/ascOperations/abc"
            ),
            Some(Target::Operation { .. })
        ));
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/r/providers/Other/x/y"),
            None
        );
    }
}
