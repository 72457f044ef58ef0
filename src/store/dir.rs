//! A directory that plays a blob container: the local target's "blob storage".
//!
//! Blob metadata (`owner`, `group`, `permissions`, `hdi_isfolder`) is carried by the
//! directory's own POSIX attributes; the ETag is derived from mtime, size and inode so it
//! changes whenever a file is rewritten.

use std::fs::{self, File, Metadata};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::checksum::{self, Hasher};
use super::{Attrs, BlobEntry, BlobStore, Kind, Listing, StoreError, Sum, Uploaded};
use crate::journal::mtime_ns;
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

/// Files being written carry this suffix until renamed: never listed, never final.
pub const TMP_SUFFIX: &str = ".stage-tmp";

pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: PathBuf) -> Self {
        DirStore { root }
    }
}

fn etag(m: &Metadata) -> String {
    format!("{:x}-{:x}-{:x}", mtime_ns(m), m.size(), m.ino())
}

fn entry(rel: String, m: &Metadata) -> Listing {
    if m.file_type().is_symlink() {
        return Listing::Unusable(format!("{rel}: symlinks are not blobs; skipped"));
    }
    Listing::Entry(BlobEntry {
        kind: if m.is_dir() { Kind::Dir } else { Kind::File },
        size: if m.is_dir() { 0 } else { m.size() },
        etag: etag(m),
        sum: None,
        attrs: Attrs::of(m),
        name: rel,
    })
}

/// Walks `base/start` without following symlinks, in byte order of names where a directory
/// sorts as its name plus `/` (the order blob listings use for the files beneath it).
pub fn walk(base: &Path, start: &str) -> impl Iterator<Item = Listing> + Send + use<> {
    let mut stack: Vec<Listing> = Vec::new();
    let first = if start.is_empty() {
        base.to_path_buf()
    } else {
        base.join(start)
    };
    match fs::symlink_metadata(&first) {
        Ok(m) if m.is_dir() && start.is_empty() => push_children(base, "", &mut stack),
        Ok(m) => stack.push(entry(start.to_string(), &m)),
        Err(_) => {}
    }
    let base = base.to_path_buf();
    std::iter::from_fn(move || {
        let item = stack.pop()?;
        if let Listing::Entry(e) = &item
            && e.kind == Kind::Dir
        {
            push_children(&base, &e.name, &mut stack);
        }
        Some(item)
    })
}

fn sort_key(l: &Listing) -> String {
    match l {
        Listing::Entry(e) if e.kind == Kind::Dir => format!("{}/", e.name),
        Listing::Entry(e) => e.name.clone(),
        Listing::Unusable(m) => m.clone(),
    }
}

fn push_children(base: &Path, rel: &str, stack: &mut Vec<Listing>) {
    let dir = if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        // A directory removed while the walk was below its parent.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !rel.is_empty() => return,
        Err(e) => {
            stack.push(Listing::Unusable(format!(
                "cannot list {}: {e}",
                dir.display()
            )));
            return;
        }
    };
    let mut children: Vec<Listing> = rd
        .filter_map(|de| {
            let de = match de {
                Ok(de) => de,
                Err(e) => {
                    return Some(Listing::Unusable(format!(
                        "cannot list {}: {e}",
                        dir.display()
                    )));
                }
            };
            let Some(name) = de.file_name().to_str().map(str::to_string) else {
                return Some(Listing::Unusable(format!(
                    "{}: name is not UTF-8, so it cannot be a blob name",
                    de.path().display()
                )));
            };
            if name.ends_with(TMP_SUFFIX) {
                return None;
            }
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match de.path().symlink_metadata() {
                Ok(m) => Some(entry(rel, &m)),
                // Removed since the directory was read: not there, so not listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(Listing::Unusable(format!(
                    "cannot stat {}: {e}",
                    de.path().display()
                ))),
            }
        })
        .collect();
    // Reverse order on the stack pops in ascending order.
    children.sort_by_key(|l| std::cmp::Reverse(sort_key(l)));
    stack.extend(children);
}

/// Walks the part of `base` that can hold names starting with `prefix`.
fn walk_prefix(base: &Path, prefix: &str) -> impl Iterator<Item = Listing> + Send + use<> {
    let start = match prefix.rsplit_once('/') {
        Some((dir, _)) => dir.to_string(),
        None => String::new(),
    };
    let prefix = prefix.to_string();
    walk(base, &start).filter(move |l| match l {
        Listing::Entry(e) => e.name.starts_with(&prefix) || format!("{}/", e.name) == prefix,
        Listing::Unusable(_) => true,
    })
}

pub fn tmp_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(TMP_SUFFIX);
    dest.with_file_name(name)
}

/// Copies `src` to `dest`, returning the bytes written and their sum.
fn copy_hashed(src: &Path, dest: &Path, mut hasher: Hasher) -> std::io::Result<(u64, Option<Sum>)> {
    let mut input = File::open(src)?;
    let mut out = File::create(dest)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((total, hasher.finish()))
}

async fn blocking<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| StoreError::item(name, e)),
        Err(e) => Err(StoreError::item(name, e)),
    }
}

#[async_trait]
impl BlobStore for DirStore {
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<Listing, StoreError>> {
        stream::iter(walk_prefix(&self.root, prefix).map(Ok)).boxed()
    }

    async fn download(&self, e: &BlobEntry, dest: &Path) -> Result<(u64, Option<Sum>), StoreError> {
        let src = self.root.join(&e.name);
        let dest = dest.to_path_buf();
        let want = e.sum;
        blocking(&e.name, move || {
            copy_hashed(&src, &dest, Hasher::like(want))
        })
        .await
    }

    async fn upload(&self, src: &Path, name: &str, attrs: &Attrs) -> Result<Uploaded, StoreError> {
        let src = src.to_path_buf();
        let dest = self.root.join(name);
        let attrs = *attrs;
        blocking(name, move || {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            let tmp = tmp_path(&dest);
            let (n, sum) = copy_hashed(&src, &tmp, Hasher::crc64())?;
            attrs.apply(&tmp, 0o644)?;
            fs::rename(&tmp, &dest)?;
            let (m, back) = checksum::file(&dest, sum)?;
            if m != n || back != sum {
                return Err(std::io::Error::other(format!(
                    "verification failed: wrote {n} bytes, read back {m}"
                )));
            }
            let meta = fs::symlink_metadata(&dest)?;
            Ok(Uploaded {
                etag: etag(&meta),
                size: n,
            })
        })
        .await
    }

    async fn put_dir(&self, name: &str, attrs: &Attrs) -> Result<(), StoreError> {
        let dest = self.root.join(name);
        let attrs = *attrs;
        blocking(name, move || {
            fs::create_dir_all(&dest)?;
            attrs.apply(&dest, 0o755)
        })
        .await
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}
