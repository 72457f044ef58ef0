//! Which way a `#STAGE in` or `out` goes on a node whose Lustre is an AMLFS file system.
//!
//! AMLFS maps blob `P/x` of its HSM container to `MOUNT/P/x` both ways, server-side: import
//! jobs bring blobs in (data restored on first access), archive writes files back and marks
//! them archived in Lustre's HSM state. So a directive whose container is the file system's
//! own and whose directory is where AMLFS maps the prefix goes through AMLFS's HSM; anything
//! else (another account or container, a directory elsewhere) is copied by the direct mover.
//! Job scripts stay the same whichever way the site stages.

use std::path::{Component, Path, PathBuf};

use crate::store::azure::Location;

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// AMLFS's own HSM (an import job in, an archive out) for this prefix (no leading `/`;
    /// empty for all).
    Hsm { prefix: String },
    /// The direct mover, and why not AMLFS's HSM.
    Direct { why: String },
}

/// A path with `.` removed and no trailing slash, for comparing directories as written.
fn normal(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

pub fn route(url: &Location, dir: &Path, hsm_container_id: &str, mount: &Path) -> Route {
    let Some((account, container)) = crate::azure::resources::container_parts(hsm_container_id)
    else {
        return Route::Direct {
            why: format!(
                "the file system's HSM container `{hsm_container_id}` is not a container id"
            ),
        };
    };
    if !url.account.eq_ignore_ascii_case(&account) || url.container != container {
        return Route::Direct {
            why: format!(
                "{}/{} is not the file system's HSM container ({account}/{container})",
                url.account, url.container
            ),
        };
    }
    let prefix = url.prefix.trim_matches('/').to_string();
    let lands = normal(&mount.join(&prefix));
    if normal(dir) != lands {
        return Route::Direct {
            why: format!(
                "AMLFS maps this prefix to {}, not {}",
                lands.display(),
                dir.display()
            ),
        };
    }
    Route::Hsm { prefix }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HSM: &str = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct/blobServices/default/containers/data";

    fn loc(u: &str) -> Location {
        Location::parse(u).unwrap()
    }

    #[test]
    fn the_file_systems_own_container_at_its_own_path_goes_through_its_hsm() {
        let mount = Path::new("/mnt/lustre");
        assert_eq!(
            route(
                &loc("https://acct.blob.core.windows.net/data/run7/samples"),
                Path::new("/mnt/lustre/run7/samples/"),
                HSM,
                mount
            ),
            Route::Hsm {
                prefix: "run7/samples".into()
            }
        );
        assert_eq!(
            route(
                &loc("https://ACCT.blob.core.windows.net/data"),
                Path::new("/mnt/lustre"),
                HSM,
                mount
            ),
            Route::Hsm { prefix: "".into() }
        );
    }

    #[test]
    fn anything_else_is_copied_directly_and_says_why() {
        let mount = Path::new("/mnt/lustre");
        let why = |u: &str, d: &str| match route(&loc(u), Path::new(d), HSM, mount) {
            Route::Direct { why } => why,
            other => panic!("{other:?}"),
        };
        assert!(
            why(
                "https://other.blob.core.windows.net/data/x",
                "/mnt/lustre/x"
            )
            .contains("not the file system's HSM container")
        );
        assert!(
            why("https://acct.blob.core.windows.net/refs/x", "/mnt/lustre/x")
                .contains("not the file system's HSM container")
        );
        assert!(
            why("https://acct.blob.core.windows.net/data/x", "/mnt/lustre/y")
                .contains("/mnt/lustre/x")
        );
        assert!(
            why("https://acct.blob.core.windows.net/data/x", "/scratch/x")
                .contains("not /scratch/x")
        );
    }
}
