//! A directory that plays a blob container: the local target's "blob storage".
//!
//! Blob metadata (`owner`, `group`, `permissions`, `hdi_isfolder`) is carried by the
//! directory's own POSIX attributes; the ETag is derived from mtime, size and inode so it
//! changes whenever a file is rewritten.

use std::fs::{File, Metadata};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checksum::{self, Hasher};
use super::{Attrs, BlobEntry, BlobStore, Kind, Listing, StoreError, Sum, Uploaded};
use crate::beneath::{Found, Root, TMP_DIR};
use crate::journal::mtime_ns;
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

pub struct DirStore {
    root: PathBuf,
    tree: Arc<Root>,
}

impl DirStore {
    pub fn new(root: PathBuf) -> Self {
        DirStore {
            tree: Arc::new(Root::new(&root)),
            root,
        }
    }
}

fn keep(_: &File) -> std::io::Result<()> {
    Ok(())
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
/// sorts as its name plus `/` (the order blob listings use for the files beneath it). Stage's
/// own [`TMP_DIR`] at the top is not part of the tree.
pub fn walk(tree: Arc<Root>, start: &str) -> impl Iterator<Item = Listing> + Send + use<> {
    let mut stack: Vec<Listing> = Vec::new();
    if start.is_empty() {
        if tree.symlink_metadata("").is_ok_and(|m| m.is_dir()) {
            push_children(&tree, "", &mut stack);
        }
    } else {
        match tree.lookup(start) {
            Ok(Found::Here(m)) => stack.push(entry(start.to_string(), &m)),
            Ok(Found::Blocked { at, .. }) => stack.push(Listing::Unusable(format!(
                "{start}: {at:?} is a symbolic link or a file, not a directory; not followed"
            ))),
            Ok(Found::Missing) => {}
            Err(e) => stack.push(Listing::Unusable(format!("cannot stat {start}: {e}"))),
        }
    }
    std::iter::from_fn(move || {
        let item = stack.pop()?;
        if let Listing::Entry(e) = &item
            && e.kind == Kind::Dir
        {
            push_children(&tree, &e.name, &mut stack);
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

fn push_children(tree: &Root, rel: &str, stack: &mut Vec<Listing>) {
    let shown = || {
        if rel.is_empty() {
            tree.path().display().to_string()
        } else {
            tree.path().join(rel).display().to_string()
        }
    };
    let rd = match tree.read_dir(rel) {
        Ok(rd) => rd,
        // A directory removed while the walk was below its parent.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !rel.is_empty() => return,
        Err(e) => {
            stack.push(Listing::Unusable(format!("cannot list {}: {e}", shown())));
            return;
        }
    };
    let mut children: Vec<Listing> = rd
        .filter_map(|de| {
            let de = match de {
                Ok(de) => de,
                Err(e) => {
                    return Some(Listing::Unusable(format!("cannot list {}: {e}", shown())));
                }
            };
            let Some(name) = de.file_name().to_str().map(str::to_string) else {
                return Some(Listing::Unusable(format!(
                    "{}/{}: name is not UTF-8, so it cannot be a blob name",
                    shown(),
                    de.file_name().to_string_lossy()
                )));
            };
            if rel.is_empty() && name == TMP_DIR {
                return None;
            }
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // Taken from the listed directory itself, never following a link.
            match de.metadata() {
                Ok(m) => Some(entry(rel, &m)),
                // Removed since the directory was read: not there, so not listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(Listing::Unusable(format!("cannot stat {rel}: {e}"))),
            }
        })
        .collect();
    // Reverse order on the stack pops in ascending order.
    children.sort_by_key(|l| std::cmp::Reverse(sort_key(l)));
    stack.extend(children);
}

/// Walks the part of the tree that can hold names starting with `prefix`.
fn walk_prefix(tree: Arc<Root>, prefix: &str) -> impl Iterator<Item = Listing> + Send + use<> {
    let start = match prefix.rsplit_once('/') {
        Some((dir, _)) => dir.to_string(),
        None => String::new(),
    };
    let prefix = prefix.to_string();
    walk(tree, &start).filter(move |l| match l {
        Listing::Entry(e) => e.name.starts_with(&prefix) || format!("{}/", e.name) == prefix,
        Listing::Unusable(_) => true,
    })
}

/// Copies `src` (from its start) to `dest`, returning the bytes written and their sum.
fn copy_hashed(src: &File, dest: &Path, mut hasher: Hasher) -> std::io::Result<(u64, Option<Sum>)> {
    let mut input = src.try_clone()?;
    input.rewind()?;
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
        stream::iter(walk_prefix(Arc::clone(&self.tree), prefix).map(Ok)).boxed()
    }

    async fn download(&self, e: &BlobEntry, dest: &Path) -> Result<(u64, Option<Sum>), StoreError> {
        let tree = Arc::clone(&self.tree);
        let name = e.name.clone();
        let dest = dest.to_path_buf();
        let want = e.sum;
        blocking(&e.name, move || {
            let src = tree.open_file(&name)?;
            copy_hashed(&src, &dest, Hasher::like(want))
        })
        .await
    }

    async fn upload(&self, src: &File, name: &str, attrs: &Attrs) -> Result<Uploaded, StoreError> {
        let src = src.try_clone().map_err(|e| StoreError::item(name, e))?;
        let tree = Arc::clone(&self.tree);
        let rel = name.to_string();
        let attrs = *attrs;
        blocking(name, move || {
            let tmp = tree.tmp()?;
            let (n, sum) = copy_hashed(&src, &tmp.path, Hasher::crc64())?;
            attrs.apply(&tmp.path, 0o644)?;
            tree.persist(&tmp, &rel, &keep)?;
            let back = tree.open_file(&rel)?;
            let meta = back.metadata()?;
            let (m, read) = checksum::read(back, sum)?;
            if m != n || read != sum {
                return Err(std::io::Error::other(format!(
                    "verification failed: wrote {n} bytes, read back {m}"
                )));
            }
            Ok(Uploaded {
                etag: etag(&meta),
                size: n,
            })
        })
        .await
    }

    async fn put_dir(&self, name: &str, attrs: &Attrs) -> Result<(), StoreError> {
        let tree = Arc::clone(&self.tree);
        let rel = name.to_string();
        let attrs = *attrs;
        blocking(name, move || {
            let dir = tree.create_dirs(&rel, &keep)?;
            attrs.apply_to(&dir, 0o755)
        })
        .await
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}
