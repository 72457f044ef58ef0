//! POSIX ownership and permissions as AMLFS keeps them in blob metadata (`owner`, `group`,
//! `permissions` such as `0755`), so a container written by `stage` imports correctly into a
//! real AMLFS and the other way round.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

pub const FOLDER_KEY: &str = "hdi_isfolder";

impl Attrs {
    pub fn of(m: &std::fs::Metadata) -> Attrs {
        Attrs {
            mode: Some(m.mode() & 0o7777),
            uid: Some(m.uid()),
            gid: Some(m.gid()),
        }
    }

    /// Reads AMLFS metadata; values that do not parse are ignored, as AMLFS falls back to
    /// its defaults for them.
    pub fn from_metadata<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Attrs {
        let mut a = Attrs::default();
        for (k, v) in pairs {
            match k.to_ascii_lowercase().as_str() {
                "permissions" => {
                    a.mode = u32::from_str_radix(v.trim(), 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                }
                "owner" => a.uid = v.trim().parse().ok(),
                "group" => a.gid = v.trim().parse().ok(),
                _ => {}
            }
        }
        a
    }

    pub fn to_metadata(self, folder: bool) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if let Some(mode) = self.mode {
            m.insert("permissions".to_string(), format!("{mode:04o}"));
        }
        if let Some(uid) = self.uid {
            m.insert("owner".to_string(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            m.insert("group".to_string(), gid.to_string());
        }
        if folder {
            m.insert(FOLDER_KEY.to_string(), "true".to_string());
        }
        m
    }

    /// The same, owned by `uid`:`gid` whatever the metadata says (the Slurm prolog's rule:
    /// a job's files are its user's).
    pub fn owned_by(self, owner: Option<(u32, u32)>) -> Attrs {
        match owner {
            Some((uid, gid)) => Attrs {
                uid: Some(uid),
                gid: Some(gid),
                ..self
            },
            None => self,
        }
    }

    /// The mode stage gives a path from metadata: never setuid, and never setgid on a file.
    /// Metadata is whatever anyone who can write the container wrote, and stage often runs as
    /// root (the Slurm prolog always): honouring those bits would hand out a root shell.
    /// A directory keeps setgid, which only passes its group to new entries.
    pub fn safe_mode(self, default_mode: u32, is_dir: bool) -> u32 {
        let mode = self.mode.unwrap_or(default_mode) & 0o7777;
        if is_dir {
            mode & !0o4000
        } else {
            mode & !0o6000
        }
    }

    /// Applies the mode ([`Attrs::safe_mode`]) and, when running as root, the ownership
    /// (others keep their own, as `cp` does) to an open file or directory. Ownership first:
    /// `chown` clears set-id bits.
    pub fn apply_to(self, file: &std::fs::File, default_mode: u32) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let is_dir = file.metadata()?.is_dir();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 && (self.uid.is_some() || self.gid.is_some()) {
            std::os::unix::fs::fchown(file, self.uid, self.gid)?;
        }
        let mode = self.safe_mode(default_mode, is_dir);
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    }

    /// [`Attrs::apply_to`] for a path known to be no link (a file stage just wrote).
    pub fn apply(self, path: &std::path::Path, default_mode: u32) -> std::io::Result<()> {
        self.apply_to(&std::fs::File::open(path)?, default_mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip() {
        let a = Attrs {
            mode: Some(0o2750),
            uid: Some(1000),
            gid: Some(42),
        };
        let m = a.to_metadata(false);
        assert_eq!(m["permissions"], "2750");
        let back = Attrs::from_metadata(m.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back, a);
        let odd =
            Attrs::from_metadata([("Permissions", "0644"), ("owner", "root"), ("group", "7")]);
        assert_eq!(odd.mode, Some(0o644));
        assert_eq!(odd.uid, None);
        assert_eq!(odd.gid, Some(7));
        assert_eq!(Attrs::from_metadata([("permissions", "99999")]).mode, None);
    }

    #[test]
    fn set_id_bits_never_come_from_metadata() {
        let a = |m| Attrs {
            mode: Some(m),
            ..Attrs::default()
        };
        assert_eq!(a(0o4755).safe_mode(0o644, false), 0o755);
        assert_eq!(a(0o2755).safe_mode(0o644, false), 0o755);
        assert_eq!(a(0o6777).safe_mode(0o644, true), 0o2777);
        assert_eq!(a(0o1777).safe_mode(0o644, true), 0o1777);
        assert_eq!(Attrs::default().safe_mode(0o644, false), 0o644);
    }
}
