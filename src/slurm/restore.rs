//! `#STAGE restore PATH`: bring the data of already-imported files back onto Lustre before the
//! job starts.
//!
//! AMLFS imports metadata and restores a file's data from blob on its first read; a job that
//! opens thousands of such files pays that latency inside its time limit, one file at a time.
//! Reading the first byte of each file, many at once, triggers the same whole-file HSM
//! restore and blocks until it is done, with nothing but the standard library: no `lfs`
//! binary, no parsing of its output, and on a file system without HSM it is merely a cheap
//! read. Symlinks are not followed, so a link cannot make the prolog read outside PATH.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct RestoreError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads one byte of every regular file under `root` (or of `root` itself), `parallel` at a
/// time. Stops at the first file that cannot be read: the job would fail on it too.
pub fn restore(root: &Path, parallel: usize) -> Result<Restored, RestoreError> {
    // The walk runs first: directory listings are metadata, cheap next to restores.
    let mut files = Vec::new();
    let mut found = Restored::default();
    let mut dirs = Vec::new();
    let meta = fs::symlink_metadata(root).map_err(err(root))?;
    if meta.is_dir() {
        dirs.push(root.to_path_buf());
    } else if meta.is_file() {
        files.push(root.to_path_buf());
        found.bytes += meta.len();
    }
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(err(&dir))? {
            let entry = entry.map_err(err(&dir))?;
            let path = entry.path();
            // `DirEntry::metadata` does not follow symlinks.
            let m = entry.metadata().map_err(err(&path))?;
            if m.is_dir() {
                dirs.push(path);
            } else if m.is_file() {
                found.bytes += m.len();
                files.push(path);
            }
        }
    }
    found.files = files.len() as u64;
    let queue = Mutex::new(files);
    let failed: Mutex<Option<RestoreError>> = Mutex::new(None);
    let next = || {
        let stop = failed.lock().map_or(true, |f| f.is_some());
        if stop {
            return None;
        }
        queue.lock().ok().and_then(|mut q| q.pop())
    };
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                while let Some(path) = next() {
                    let mut byte = [0u8; 1];
                    if let Err(source) = File::open(&path).and_then(|mut f| f.read(&mut byte))
                        && let Ok(mut f) = failed.lock()
                    {
                        f.get_or_insert(RestoreError { path, source });
                    }
                }
            });
        }
    });
    match failed.into_inner() {
        Ok(None) => Ok(found),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(RestoreError {
            path: root.to_path_buf(),
            source: std::io::Error::other("a reader thread panicked"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_file_under_the_path_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/one"), "1").unwrap();
        fs::write(root.join("a/b/two"), "22").unwrap();
        fs::write(root.join("empty"), "").unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "xxxx").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        assert_eq!(restore(&root, 4).unwrap(), Restored { files: 3, bytes: 3 });
        assert_eq!(
            restore(&root.join("a/one"), 4).unwrap(),
            Restored { files: 1, bytes: 1 }
        );
        let e = restore(&root.join("missing"), 4).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
