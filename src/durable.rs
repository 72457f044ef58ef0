//! Replacing a small file so that a reader (a resumed run, a browser) sees the old content or
//! the new, never half of it, and the new survives a crash once written.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temporary sibling, syncs it, renames it over `path`, and syncs the
/// directory so the rename itself is durable.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // A bare name's parent is `""`, which names no directory: it is the current one.
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()?;
    Ok(())
}
