//! One writer per state directory: a second `stage run` must not interleave with the first.
//!
//! An advisory `flock` on `state/lock` (released by the kernel when the process dies, even by
//! SIGKILL, so a crash never leaves a stale lock). The holder's pid is written into the file so
//! the refusal can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another stage process{} is using the state directory {}", holder_text(.holder), .dir.display())]
    Held { dir: PathBuf, holder: Option<u32> },
    #[error("cannot lock the state directory {}", .dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn holder_text(h: &Option<u32>) -> String {
    h.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// Held for as long as the state directory is open.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock, or fails at once (`wait = false`) or blocks until it is free.
    pub fn acquire(dir: &Path, wait: bool) -> Result<StateLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if wait {
            file.lock().map_err(io)?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(LockError::Held {
                        dir: dir.to_path_buf(),
                        holder: text.trim().parse().ok(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file })
    }
}
