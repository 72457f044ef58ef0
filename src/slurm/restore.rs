//! `#STAGE restore PATH`: bring the data of already-imported files back onto Lustre before the
//! job starts.
//!
//! AMLFS imports metadata and restores a file's data from blob on its first read; a job that
//! opens thousands of such files pays that latency inside its time limit, one file at a time.
//!
//! Two steps. When `lfs` is installed, every file's restore is queued first with
//! `lfs hsm_restore` in batches, so the HSM copytools work on all of them at once (restores
//! are asynchronous; its exit status is not trusted, since files not archived or not on
//! Lustre make it complain). Then the first byte of each file is read, many at once: a read
//! of a released file blocks until its whole-file restore is done (and starts it if nothing
//! queued it), so when the reads return the data is there. No output of `lfs hsm_state` is
//! parsed or polled, and on a file system without HSM the reads are merely cheap. Symlinks are
//! not followed, so a link cannot make the prolog read outside PATH.

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
    queue_restores(&files);
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

/// Files per `lfs hsm_restore`, and bytes of paths per call (well under `ARG_MAX`).
const LFS_BATCH_FILES: usize = 1000;
const LFS_BATCH_BYTES: usize = 96 << 10;

/// Splits `files` into argument lists of at most `max_files` paths and `max_bytes` bytes.
fn batches(files: &[PathBuf], max_files: usize, max_bytes: usize) -> Vec<&[PathBuf]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, f) in files.iter().enumerate() {
        let len = f.as_os_str().len() + 1;
        if i > start && (i - start == max_files || bytes + len > max_bytes) {
            out.push(&files[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    out
}

/// Asks Lustre to restore all `files` now, when `lfs` is there; best effort (see above).
fn queue_restores(files: &[PathBuf]) {
    for batch in batches(files, LFS_BATCH_FILES, LFS_BATCH_BYTES) {
        // Arguments, not a shell line: names with spaces or quotes pass as they are.
        let run = std::process::Command::new("lfs")
            .arg("hsm_restore")
            .arg("--")
            .args(batch)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        match run {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::debug!("lfs hsm_restore did not run: {e}");
                return;
            }
            Ok(status) if !status.success() => {
                tracing::debug!("lfs hsm_restore exited {status}; the reads restore instead");
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lfs_batches_bound_files_and_bytes_and_keep_every_path() {
        let files: Vec<PathBuf> = (0..25)
            .map(|i| PathBuf::from(format!("/l/f{i:02}")))
            .collect();
        let b = batches(&files, 10, usize::MAX);
        assert_eq!(
            b.iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        // "/l/fNN" is 6 bytes + 1: 3 paths fit in 21 bytes, not 4.
        let b = batches(&files, 100, 21);
        assert!(b.iter().all(|b| b.len() == 3 || b.len() == 1));
        assert_eq!(b.concat(), files);
        // A path longer than the byte bound still goes, alone.
        let long = vec![PathBuf::from("/".repeat(50)), PathBuf::from("/x")];
        assert_eq!(batches(&long, 10, 20).len(), 2);
        assert!(batches(&[], 10, 10).is_empty());
    }

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
