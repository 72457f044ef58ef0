//! The user data every compute instance boots with: the Azure Managed Lustre client for its
//! running kernel from Microsoft's package repository (the `amlfs-lustre-client-VERSION`
//! metapackage whose version is the kernel release keeps client and kernel in lockstep), then
//! the file system mounted as Azure's own mount command says, and kept in `/etc/fstab` so a
//! rebooted instance mounts it again. An instance is used only once the mount answers
//! (`executor::scale_set`), never because cloud-init was merely started.

use crate::azure::models::AmlFilesystem;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CloudInitError {
    #[error("the file system reports no MGS address yet")]
    NoMgs,
    #[error("the file system's MGS address {0:?} is not an address stage can put in a mount")]
    BadMgs(String),
    #[error(
        "mount point {0:?} must be an absolute path without spaces, quotes or control characters (it goes into /etc/fstab)"
    )]
    BadMount(String),
}

/// What to mount and how: from Azure's mount command when it is one stage can read
/// (`mount -t lustre -o OPTIONS SOURCE /<local path>`), else the documented default from
/// the MGS address.
#[derive(Debug, Clone, PartialEq)]
pub struct LustreMount {
    pub source: String,
    pub options: String,
    pub mount: String,
}

/// Characters a Lustre source (`10.0.0.4@tcp0:/lustrefs`) or option list is made of; nothing
/// that a shell, fstab or YAML would read differently.
fn plain(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c) || extra.contains(&c))
}

impl LustreMount {
    pub fn of(fs: &AmlFilesystem, mount: &str) -> Result<LustreMount, CloudInitError> {
        if !mount.starts_with('/')
            || mount
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "'\"\\".contains(c))
        {
            return Err(CloudInitError::BadMount(mount.to_string()));
        }
        let info = fs.properties.client_info.as_ref();
        let from_azure = info
            .and_then(|c| c.mount_command.as_deref())
            .and_then(
                |cmd| match cmd.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["mount", "-t", "lustre", "-o", options, source, _placeholder]
                        if plain(options, &[',', '=']) && plain(source, &['@', ':', '/']) =>
                    {
                        Some(((*source).to_string(), (*options).to_string()))
                    }
                    _ => None,
                },
            );
        let (source, options) = match from_azure {
            Some(v) => v,
            None => {
                let mgs = info
                    .and_then(|c| c.mgs_address.as_deref())
                    .filter(|m| !m.is_empty())
                    .ok_or(CloudInitError::NoMgs)?;
                if !plain(mgs, &[':']) {
                    return Err(CloudInitError::BadMgs(mgs.to_string()));
                }
                (
                    format!("{mgs}@tcp0:/lustrefs"),
                    "noatime,user_xattr".to_string(),
                )
            }
        };
        Ok(LustreMount {
            source,
            options,
            mount: mount.to_string(),
        })
    }

    /// The `#cloud-config` document.
    pub fn user_data(&self) -> String {
        let script = SCRIPT
            .replace("@SOURCE@", &self.source)
            .replace("@OPTIONS@", &self.options)
            .replace("@MOUNT@", &self.mount);
        let indented: String = script.lines().map(|l| format!("      {l}\n")).collect();
        format!(
            "#cloud-config\n\
             # Written by stage: the Azure Managed Lustre client for the running kernel, then\n\
             # the file system at {mount}.\n\
             write_files:\n  \
               - path: /usr/local/sbin/stage-lustre-mount\n    \
                 permissions: \"0755\"\n    \
                 content: |\n{indented}\
             runcmd:\n  \
               - [/usr/local/sbin/stage-lustre-mount]\n",
            mount = self.mount
        )
    }
}

/// Run once at first boot (and harmless again): install, record in fstab, mount. Values are
/// checked by [`LustreMount::of`] to hold no character a shell or fstab reads specially.
const SCRIPT: &str = r#"#!/bin/sh
set -eu
source='@SOURCE@'
options='@OPTIONS@'
mount='@MOUNT@'
kernel=$(uname -r)
if ! modinfo lustre >/dev/null 2>&1; then
  . /etc/os-release
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q ca-certificates curl gnupg
  curl -fsSL https://packages.microsoft.com/keys/microsoft.asc \
    | gpg --dearmor --yes -o /usr/share/keyrings/microsoft-amlfs.gpg
  echo "deb [arch=$(dpkg --print-architecture) signed-by=/usr/share/keyrings/microsoft-amlfs.gpg] https://packages.microsoft.com/repos/amlfs-$VERSION_CODENAME/ $VERSION_CODENAME main" \
    > /etc/apt/sources.list.d/amlfs.list
  apt-get update -q
  # The newest Lustre client built for this very kernel.
  pkg=$(apt-cache search --names-only '^amlfs-lustre-client-' | cut -d' ' -f1 | sort -V \
    | while read -r p; do
        apt-cache madison "$p" | awk -F'|' -v k="$kernel" -v p="$p" '{ gsub(/ /, "", $2) } $2 == k { print p }'
      done | tail -n 1)
  if [ -z "$pkg" ]; then
    echo "stage: no amlfs-lustre-client package for kernel $kernel in amlfs-$VERSION_CODENAME" >&2
    exit 1
  fi
  apt-get install -y -q "$pkg=$kernel"
fi
mkdir -p "$mount"
awk -v s="$source" -v m="$mount" '$1 == s && $2 == m { found = 1 } END { exit !found }' /etc/fstab \
  || echo "$source $mount lustre $options,_netdev 0 0" >> /etc/fstab
mountpoint -q "$mount" || mount -t lustre -o "$options" "$source" "$mount"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::models::ClientInfo;

    fn fs(mgs: &str, cmd: Option<&str>) -> AmlFilesystem {
        let mut f = AmlFilesystem::default();
        f.properties.client_info = Some(ClientInfo {
            mgs_address: Some(mgs.into()),
            mount_command: cmd.map(str::to_string),
            ..Default::default()
        });
        f
    }

    #[test]
    fn the_mount_follows_azures_command_and_refuses_what_a_shell_would_read() {
        let cmd = "mount -t lustre -o noatime,user_xattr 10.5.0.4@tcp0:/lustrefs /<local path>";
        let m = LustreMount::of(&fs("10.5.0.4", Some(cmd)), "/mnt/lustre").unwrap();
        assert_eq!(m.source, "10.5.0.4@tcp0:/lustrefs");
        assert_eq!(m.options, "noatime,user_xattr");
        // While creating Azure sends empty strings: no mount yet.
        assert_eq!(
            LustreMount::of(&fs("", Some("")), "/mnt"),
            Err(CloudInitError::NoMgs)
        );
        // An unreadable command falls back to the MGS; a hostile one is refused.
        let m = LustreMount::of(&fs("10.0.0.9", Some("mount $(reboot)")), "/mnt").unwrap();
        assert_eq!(m.source, "10.0.0.9@tcp0:/lustrefs");
        let evil = "mount -t lustre -o x 10.0.0.9@tcp0:/l;reboot /<local path>";
        assert_eq!(
            LustreMount::of(&fs("10.0.0.9", Some(evil)), "/mnt")
                .unwrap()
                .source,
            "10.0.0.9@tcp0:/lustrefs"
        );
        assert!(matches!(
            LustreMount::of(&fs("1.2.3.4'; reboot; '", None), "/mnt"),
            Err(CloudInitError::BadMgs(_))
        ));
        for bad in ["relative", "/with space", "/quo'te", "/new\nline"] {
            assert!(matches!(
                LustreMount::of(&fs("10.0.0.9", None), bad),
                Err(CloudInitError::BadMount(_))
            ));
        }
    }
}
