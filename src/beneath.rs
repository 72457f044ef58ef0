//! Reading and writing beneath a root directory without ever leaving it.
//!
//! The roots are the file system a pipeline imports into and a directory playing a container.
//! The names come from blob listings and directory walks, text nobody here controls, and the
//! tree itself may hold symbolic links put there by anyone who can write to it. So every
//! component below the root is resolved without following a link (one `openat(O_NOFOLLOW)` per
//! component, after an `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` fast path), and a link
//! or a file where a directory is needed is reported, never crossed. The root itself is the
//! user's to choose and may be reached through links.
//!
//! Temporary files live in [`TMP_DIR`] at the root, in a directory private to the user, so no
//! name anyone gives (`big.stage-tmp`, say) can meet one of stage's own.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Where stage keeps the files it is still writing: imports refuse names beneath it and walks
/// do not enter it.
pub const TMP_DIR: &str = ".stage-tmp";

/// A directory that names are resolved beneath.
pub struct Root {
    path: PathBuf,
    /// The root held open, when its path must not be looked up again (someone else may
    /// change what it leads to: a Slurm job's user, for the hooks running as root).
    pin: Option<OwnedFd>,
    swept: std::sync::Once,
    /// A temporary file was made here: on drop, the private directory goes if empty, so a
    /// finished transfer leaves nothing of stage's among the user's files.
    used: std::sync::atomic::AtomicBool,
}

impl Drop for Root {
    fn drop(&mut self) {
        if !*self.used.get_mut() {
            return;
        }
        // Fails harmlessly while anyone (another process) still has a file there.
        if let Ok(root) = self.open_root() {
            let mine = format!("{TMP_DIR}/{}", rustix::process::geteuid().as_raw());
            let _ = rustix::fs::unlinkat(&root, mine.as_str(), AtFlags::REMOVEDIR);
            let _ = rustix::fs::unlinkat(&root, TMP_DIR, AtFlags::REMOVEDIR);
        }
    }
}

/// What is at a path, looked at without following links.
#[derive(Debug)]
pub enum Found {
    Missing,
    /// `at`, the path itself or one of its ancestors, is not a directory where one is needed:
    /// a symbolic link or a file.
    Blocked {
        at: String,
        meta: Metadata,
    },
    Here(Metadata),
}

/// A file being written in the root's private temporary directory. `path` reaches it through
/// the directory's descriptor, so nothing swapped in at the root can redirect it; dropped
/// before [`Root::persist`], the file is removed.
pub struct Tmp {
    pub path: PathBuf,
    dir: OwnedFd,
    name: String,
}

impl Drop for Tmp {
    fn drop(&mut self) {
        // Gone already once persisted.
        let _ = rustix::fs::unlinkat(&self.dir, self.name.as_str(), AtFlags::empty());
    }
}

/// Runs on each directory a call creates (to give it its owner).
pub type Made<'a> = &'a dyn Fn(&File) -> io::Result<()>;

fn blocked(at: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!(
            "{at:?} is a symbolic link or a file where a directory is needed; \
             stage never reads or writes through one"
        ),
    )
}

const TRAVERSE: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
pub fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// Makes directory `name` in `at` unless it is there (someone else may make it meanwhile), and
/// opens it without following a link: the directory, and whether this call made it. An error
/// of `NOTDIR` or `LOOP` means a file or a link stands there; `mode` is cut by the umask.
pub fn make_dir_at<P: rustix::path::Arg + Copy>(
    at: &OwnedFd,
    name: P,
    mode: u32,
) -> Result<(OwnedFd, bool), Errno> {
    let new = match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(mode)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(e),
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok((rustix::fs::openat(at, name, flags, Mode::empty())?, new))
}

fn host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .replace(['/', '.'], "_")
}

fn alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|p| rustix::process::test_kill_process(p) != Err(Errno::SRCH))
}

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Root {
        Root {
            path: path.into(),
            pin: None,
            swept: std::sync::Once::new(),
            used: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The directory `fd` (opened from `path`, which messages name).
    pub fn pinned(path: impl Into<PathBuf>, fd: OwnedFd) -> Root {
        let mut root = Root::new(path);
        root.pin = Some(fd);
        root
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_root(&self) -> io::Result<OwnedFd> {
        if let Some(pin) = &self.pin {
            return Ok(rustix::fs::openat(pin, ".", TRAVERSE, Mode::empty())?);
        }
        Ok(rustix::fs::open(
            &self.path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// The root, made first if missing (as `mkdir -p` would: it is the user's own path).
    fn open_root_to_write(&self) -> io::Result<OwnedFd> {
        match self.open_root() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.path)?;
                self.open_root()
            }
            r => r,
        }
    }

    /// Opens directory `rel` (`""`: the root) for traversal; `made` runs on each directory
    /// created on the way when missing ones are to be created.
    fn dir(&self, root: &OwnedFd, rel: &str, made: Option<Made>) -> io::Result<OwnedFd> {
        if rel.is_empty() {
            return Ok(rustix::fs::openat(root, ".", TRAVERSE, Mode::empty())?);
        }
        // One system call when the whole path is there and plain.
        let fast = rustix::fs::openat2(
            root,
            rel,
            TRAVERSE,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        );
        match fast {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if made.is_none() => return Err(io::ErrorKind::NotFound.into()),
            // Missing parts to make, a link or file on the way (find which), or a kernel
            // without openat2: one component at a time.
            Err(_) => {}
        }
        let mut fd = rustix::fs::openat(root, ".", TRAVERSE, Mode::empty())?;
        let mut end = 0;
        for comp in rel.split('/') {
            end += comp.len();
            let prefix = &rel[..end];
            end += 1;
            fd = match rustix::fs::openat(&fd, comp, TRAVERSE, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::NOENT) if made.is_some() => {
                    let made = made.expect("checked");
                    let (next, new) = match make_dir_at(&fd, comp, 0o755) {
                        Ok(made) => made,
                        Err(Errno::NOTDIR | Errno::LOOP) => return Err(blocked(prefix)),
                        Err(e) => return Err(e.into()),
                    };
                    if new {
                        made(&File::from(next.try_clone()?))?;
                    }
                    next
                }
                Err(Errno::NOTDIR | Errno::LOOP) => return Err(blocked(prefix)),
                Err(e) => return Err(e.into()),
            };
        }
        Ok(fd)
    }

    /// What is at `rel`, and if something on the way is not a directory, what and where.
    pub fn lookup(&self, rel: &str) -> io::Result<Found> {
        let root = match self.open_root() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            r => r?,
        };
        if rel.is_empty() {
            return Ok(Found::Here(File::from(root).metadata()?));
        }
        let mut fd = rustix::fs::openat(&root, ".", TRAVERSE, Mode::empty())?;
        let comps: Vec<&str> = rel.split('/').collect();
        let mut end = 0;
        for (i, comp) in comps.iter().enumerate() {
            end += comp.len();
            let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&fd, *comp, flags, Mode::empty()) {
                Ok(f) => File::from(f),
                Err(Errno::NOENT) => return Ok(Found::Missing),
                Err(e) => return Err(e.into()),
            };
            let meta = next.metadata()?;
            if i + 1 == comps.len() {
                return Ok(Found::Here(meta));
            }
            if !meta.is_dir() {
                return Ok(Found::Blocked {
                    at: rel[..end].to_string(),
                    meta,
                });
            }
            end += 1;
            fd = OwnedFd::from(next);
        }
        Ok(Found::Missing)
    }

    /// Like `std::fs::symlink_metadata`, refusing a link on the way.
    pub fn symlink_metadata(&self, rel: &str) -> io::Result<Metadata> {
        match self.lookup(rel)? {
            Found::Here(m) => Ok(m),
            Found::Missing => Err(io::ErrorKind::NotFound.into()),
            Found::Blocked { at, .. } => Err(blocked(&at)),
        }
    }

    /// Opens a file to read; a link, at the end or on the way, is refused.
    pub fn open_file(&self, rel: &str) -> io::Result<File> {
        let root = self.open_root()?;
        let (parent, name) = split(rel);
        let dir = self.dir(&root, parent, None)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::LOOP) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{rel:?} is a symbolic link; stage never reads through one"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists directory `rel` (reached without links), for a walk.
    pub fn read_dir(&self, rel: &str) -> io::Result<std::fs::ReadDir> {
        let root = self.open_root()?;
        let dir = self.dir(&root, rel, None)?;
        std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
    }

    /// Makes directory `rel` and its missing ancestors, running `made` on each new one, and
    /// opens it. A link or file on the way is an error: the conflict modes decide first.
    pub fn create_dirs(&self, rel: &str, made: Made) -> io::Result<File> {
        let root = self.open_root_to_write()?;
        let dir = self.dir(&root, rel, Some(made))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(
            &dir,
            ".",
            flags,
            Mode::empty(),
        )?))
    }

    /// Removes what is at `rel` (a directory with everything in it, unless `keep_dir`); a
    /// link is removed itself, never what it points to.
    pub fn remove(&self, rel: &str, keep_dir: bool) -> io::Result<()> {
        let root = match self.open_root() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            r => r?,
        };
        let (parent, name) = split(rel);
        let dir = match self.dir(&root, parent, None) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let st = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
            if keep_dir {
                return Ok(());
            }
            // std's remove_dir_all never follows a link below the path it is given, and the
            // descriptor's path pins the parent.
            return std::fs::remove_dir_all(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()));
        }
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::empty())?)
    }

    /// Removes whatever stands in the way of writing `rel`: a link or file where one of its
    /// directories should be, and what is at `rel` itself (a directory too, unless
    /// `keep_dir`). For the conflict modes that overwrite.
    pub fn clear_way(&self, rel: &str, keep_dir: bool) -> io::Result<()> {
        loop {
            match self.lookup(rel)? {
                Found::Missing => return Ok(()),
                Found::Here(_) => return self.remove(rel, keep_dir),
                Found::Blocked { at, .. } => self.remove(&at, false)?,
            }
        }
    }

    /// A new, empty temporary file in the root's directory private to this user. Made here
    /// rather than by the writer, so the directory is never empty while in use and another
    /// process tidying it away cannot pull it from under us (if it did just before, the
    /// directory is made again).
    pub fn tmp(&self) -> io::Result<Tmp> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        self.used.store(true, Ordering::Relaxed);
        let mut tries = 0;
        loop {
            let dir = self.private_dir()?;
            let name = format!(
                "{}.{}.{}",
                host(),
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(&dir, name.as_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(_) => {}
                Err(Errno::NOENT) if tries < 3 => {
                    tries += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            return Ok(Tmp {
                path: PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())),
                dir,
                name,
            });
        }
    }

    /// Moves a finished temporary file to `rel`, making its directories (`made` on each new
    /// one). Replaces a file or link at `rel` itself, never what a link points to.
    pub fn persist(&self, tmp: &Tmp, rel: &str, made: Made) -> io::Result<()> {
        let (parent, name) = split(rel);
        let root = self.open_root_to_write()?;
        let dir = self.dir(&root, parent, Some(made))?;
        Ok(rustix::fs::renameat(
            &tmp.dir,
            tmp.name.as_str(),
            &dir,
            name,
        )?)
    }

    /// `TMP_DIR` (shared, sticky like /tmp) and this user's directory in it, which must be a
    /// real directory of this user's that nobody else can write.
    fn private_dir(&self) -> io::Result<OwnedFd> {
        let root = self.open_root_to_write()?;
        let open = |at: &OwnedFd, name: &str, mode: u32, what: &str| -> io::Result<OwnedFd> {
            let (fd, new) = match make_dir_at(at, name, mode) {
                Ok(made) => made,
                Err(Errno::NOTDIR | Errno::LOOP) => {
                    return Err(io::Error::other(format!(
                        "{what} is not a directory; remove it so stage can keep its temporary files there"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if new {
                // mkdir's mode is cut by the umask.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            }
            Ok(fd)
        };
        let shared_name = self.path.join(TMP_DIR).display().to_string();
        let shared = open(&root, TMP_DIR, 0o1777, &shared_name)?;
        let euid = rustix::process::geteuid();
        let mine_name = format!("{shared_name}/{}", euid.as_raw());
        let mine = open(&shared, &euid.as_raw().to_string(), 0o700, &mine_name)?;
        let st = rustix::fs::fstat(&mine)?;
        if st.st_uid != euid.as_raw() || st.st_mode & 0o077 != 0 {
            return Err(io::Error::other(format!(
                "{mine_name} belongs to another user or is open to others; stage keeps its \
                 temporary files only where nobody else can write"
            )));
        }
        self.swept.call_once(|| sweep(&mine));
        Ok(mine)
    }
}

/// Removes what runs of this host killed before they could clean up left in the directory.
fn sweep(dir: &OwnedFd) {
    let prefix = format!("{}.", host());
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| !alive(p)) {
            let _ = rustix::fs::unlinkat(dir.as_fd(), name.as_os_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(_: &File) -> io::Result<()> {
        Ok(())
    }

    #[test]
    fn links_are_never_crossed() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        let r = Root::new(&root);

        assert!(
            matches!(r.lookup("link/evil").unwrap(), Found::Blocked { at, .. } if at == "link")
        );
        assert!(matches!(r.lookup("file/x/y").unwrap(), Found::Blocked { at, .. } if at == "file"));
        assert!(matches!(r.lookup("d/none").unwrap(), Found::Missing));
        assert!(matches!(r.lookup("link").unwrap(), Found::Here(m) if m.file_type().is_symlink()));

        let e = r.create_dirs("link/sub", &noop).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory, "{e}");
        assert!(r.open_file("link/x").is_err());
        let tmp = r.tmp().unwrap();
        std::fs::write(&tmp.path, "data").unwrap();
        assert!(r.persist(&tmp, "link/evil", &noop).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        // Overwriting replaces the link itself.
        r.clear_way("link/evil", false).unwrap();
        r.persist(&tmp, "link/evil", &noop).unwrap();
        assert!(root.join("link").is_dir() && !root.join("link").is_symlink());
        assert_eq!(std::fs::read(root.join("link/evil")).unwrap(), b"data");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn temporary_files_are_private_and_swept() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path());
        let tmp = r.tmp().unwrap();
        std::fs::write(&tmp.path, "x").unwrap();
        let mine = t
            .path()
            .join(TMP_DIR)
            .join(rustix::process::geteuid().as_raw().to_string());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&mine).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(tmp);
        assert_eq!(
            std::fs::read_dir(&mine).unwrap().count(),
            0,
            "dropped, removed"
        );

        // A dead process's leftover goes at the next start; a live one's stays.
        let dead = mine.join(format!("{}.{}.0", host(), i32::MAX - 1));
        let live = mine.join(format!("{}.{}.7", host(), std::process::id()));
        std::fs::write(&dead, "x").unwrap();
        std::fs::write(&live, "x").unwrap();
        let _ = Root::new(t.path()).tmp().unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
        std::fs::remove_file(&live).unwrap();
        drop(r);
        assert!(!t.path().join(TMP_DIR).exists(), "tidied away once done");
    }
}
