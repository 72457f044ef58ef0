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

/// How long a lock held by a process that is exiting is waited for. Tearing down a process
/// with a large sled cache takes milliseconds; this is far more.
const DYING_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The process is gone, a zombie, or has SIGKILL pending: its lock is about to be released.
/// (A pid not ours that the file names — a dead run's — also counts: whoever holds the lock
/// then is a child of it between fork and exec, about to close it.)
fn dying(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
    };
    let zombie = matches!(field("State:").chars().next(), Some('Z' | 'X'));
    let sigkill = |mask: &str| u64::from_str_radix(mask, 16).is_ok_and(|m| m & (1 << 8) != 0);
    zombie || sigkill(field("ShdPnd:")) || sigkill(field("SigPnd:"))
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
            // A holder killed a moment ago still holds the lock while the kernel tears it
            // down (open files close late in exit, and a child between fork and exec keeps a
            // copy): that is no reason to refuse, so wait for such a holder to finish dying.
            let deadline = std::time::Instant::now() + DYING_HOLDER_WAIT;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(std::fs::TryLockError::WouldBlock) => {
                        let mut text = String::new();
                        let _ = file.rewind();
                        let _ = file.read_to_string(&mut text);
                        let holder = text.trim().parse().ok();
                        if holder.is_some_and(dying) && std::time::Instant::now() < deadline {
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            continue;
                        }
                        return Err(LockError::Held {
                            dir: dir.to_path_buf(),
                            holder,
                        });
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
                }
            }
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file })
    }
}
