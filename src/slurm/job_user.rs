//! The hooks run as root on behalf of a job's user, and the paths in `#STAGE` lines are that
//! user's to name. So stage writes and reads there only what the user could, gives them what it
//! makes, and holds each directory open once checked, so that nothing swapped in on its path
//! later redirects it. Without this, `#STAGE in URL /etc/cron.d`, or a link planted at the
//! stage-in path, would have root write there for them; `#STAGE out /etc URL` would have root
//! export what the user cannot read.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, Stat};
use rustix::io::Errno;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobUser {
    pub uid: u32,
    pub gid: u32,
}

/// The directory's owner, group and mode grant `want` (octal `rwx` bits, `0o2` write,
/// `0o4` read) to the user. Supplementary groups are not known to a hook: only the job's
/// primary group counts, which errs on the side of refusing.
fn grants(st: &Stat, user: JobUser, want: u32) -> bool {
    let mode = st.st_mode;
    (st.st_uid == user.uid && mode & (want << 6) != 0)
        || (st.st_gid == user.gid && mode & (want << 3) != 0)
        || mode & want != 0
}

fn refused(path: &Path, user: JobUser, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "the job's user (uid {}) cannot {what} {}, so stage will not do it for them",
            user.uid,
            path.display()
        ),
    )
}

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

impl JobUser {
    /// The job's user, from what slurmd gives a prolog or epilog; `None` unless running as
    /// root (an unprivileged hook can only act as itself anyway).
    pub fn from_env() -> Option<JobUser> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let id = |k: &str| std::env::var(k).ok()?.trim().parse::<u32>().ok();
        Some(JobUser {
            uid: id("SLURM_JOB_UID")?,
            gid: id("SLURM_JOB_GID")?,
        })
    }

    /// Makes `dir` as the user would: the deepest directory of it that exists must be one
    /// they can write; each missing one is created and given to them.
    pub fn make_dir(&self, dir: &Path) -> io::Result<OwnedFd> {
        let mut existing: PathBuf = dir.to_path_buf();
        let mut missing = Vec::new();
        loop {
            match std::fs::metadata(&existing) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let (Some(name), Some(parent)) = (existing.file_name(), existing.parent())
                    else {
                        return Err(e);
                    };
                    missing.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                Err(e) => return Err(e),
            }
        }
        // Checked and used through one descriptor: what was checked is what is written.
        let mut fd = rustix::fs::open(&existing, DIR, Mode::empty())?;
        if !grants(&rustix::fs::fstat(&fd)?, *self, 0o2) {
            return Err(refused(&existing, *self, "write to"));
        }
        for name in missing.iter().rev() {
            let (next, made) =
                crate::beneath::make_dir_at(&fd, name.as_os_str(), 0o755).map_err(|e| match e {
                    Errno::LOOP | Errno::NOTDIR => refused(dir, *self, "use a link on the way to"),
                    e => e.into(),
                })?;
            if made {
                rustix::fs::fchown(
                    &next,
                    Some(rustix::fs::Uid::from_raw(self.uid)),
                    Some(rustix::fs::Gid::from_raw(self.gid)),
                )?;
            } else if !grants(&rustix::fs::fstat(&next)?, *self, 0o2) {
                return Err(refused(dir, *self, "write to"));
            }
            fd = next;
        }
        Ok(fd)
    }

    /// Opens `dir` to export from: it must be the user's own. (Readable is not enough: a
    /// world-readable `/etc` holds files only root may read, and root is who reads them.)
    pub fn open_dir(&self, dir: &Path) -> io::Result<OwnedFd> {
        let fd = rustix::fs::open(dir, DIR, Mode::empty())?;
        if rustix::fs::fstat(&fd)?.st_uid != self.uid {
            return Err(refused(dir, *self, "export (it is not theirs)"));
        }
        Ok(fd)
    }
}
