//! Blob containers behind one small trait, so the movers' AMLFS semantics (conflict modes,
//! journal, verification) are written once for every kind of container.
//!
//! - [`DirStore`]: a directory plays the container (the local target, tests, rehearsals);
//! - [`AzureStore`]: a real container over the official Azure Storage SDK (or Azurite).
//!
//! Both list in byte order of names so an export can merge-join a directory walk against the
//! listing without holding either in memory.

mod attrs;
pub mod azure;
pub mod checksum;
pub mod dir;
pub mod join;
pub mod redact;

use std::path::Path;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use attrs::Attrs;
pub use azure::AzureStore;
pub use checksum::Sum;
pub use dir::DirStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The container, the network or the credentials failed: the job cannot go on.
    #[error("{0}")]
    Service(String),
    /// One blob or file failed: counted against the job's maximum errors.
    #[error("{}: {message}", crate::mover::names::shown(.name))]
    Item { name: String, message: String },
}

impl StoreError {
    pub fn item(name: &str, message: impl std::fmt::Display) -> Self {
        StoreError::Item {
            name: name.to_string(),
            message: redact::secrets(&message.to_string()),
        }
    }
    pub fn service(message: impl std::fmt::Display) -> Self {
        StoreError::Service(redact::secrets(&message.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    /// A zero-length blob with `hdi_isfolder=true`, or a directory.
    Dir,
}

/// One blob as a listing reports it.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    /// Changes whenever the blob is rewritten: what the journal pins an import to.
    pub etag: String,
    /// The checksum recorded with the blob, the cheapest to check when there are two
    /// (see [`checksum`]); `None` leaves only the length to verify.
    pub sum: Option<Sum>,
    pub attrs: Attrs,
}

/// One item of a listing: an entry, or a name that cannot be used (counted as a job error).
#[derive(Debug)]
pub enum Listing {
    Entry(BlobEntry),
    Unusable(String),
}

/// What an upload produced: the blob as now stored, already verified against what was read.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub etag: String,
    pub size: u64,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Entries whose names start with `prefix`, in byte order of names (a directory ordered
    /// as its name plus `/`), fetched lazily page by page.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<Listing, StoreError>>;
    /// Writes the blob's content to `dest`, a temporary path the caller renames; returns the
    /// bytes written and their sum of the kind `entry.sum` is, for [`checksum::verify`].
    async fn download(
        &self,
        entry: &BlobEntry,
        dest: &Path,
    ) -> Result<(u64, Option<Sum>), StoreError>;
    /// Export creates a missing container, as azcopy does.
    async fn create_if_missing(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Stores `src` (read from its start, however often a retry needs) as blob `name` with
    /// `attrs`, replacing what is there; verified. An open file, not a path: the caller found
    /// it without following links, and a path could be swapped for one meanwhile.
    async fn upload(
        &self,
        src: &std::fs::File,
        name: &str,
        attrs: &Attrs,
    ) -> Result<Uploaded, StoreError>;
    /// Stores a directory marker blob.
    async fn put_dir(&self, name: &str, attrs: &Attrs) -> Result<(), StoreError>;
    /// Refuses a name this container cannot hold exactly, so export never renames silently.
    fn check_name(&self, _name: &str) -> Result<(), String> {
        Ok(())
    }
    /// Where this is, for messages; never carries a secret.
    fn describe(&self) -> String;
    /// Files to move at once when the user does not say: local copies are bound by the
    /// disks and cores, network transfers by latency.
    fn default_transfers(&self) -> usize {
        cores()
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Opens the container a pipeline or command names: an `http(s)://` URL is a blob container
/// (credentials from the environment), anything else a directory.
pub fn open(container: &str) -> Result<std::sync::Arc<dyn BlobStore>, StoreError> {
    if is_url(container) {
        Ok(std::sync::Arc::new(AzureStore::from_env(container)?))
    } else {
        Ok(std::sync::Arc::new(DirStore::new(container.into())))
    }
}

/// A container named by URL (`http(s)://…/container/prefix`) rather than by directory.
pub fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// Keeps the prefixes not already covered by a shorter one, so listings never overlap and
/// no set of seen names is needed (which would grow with the container).
pub fn disjoint_prefixes(prefixes: &[String]) -> Vec<String> {
    let mut sorted: Vec<String> = prefixes.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    for p in sorted {
        if out
            .last()
            .is_some_and(|q: &String| p.starts_with(q.as_str()))
        {
            continue;
        }
        out.push(p);
    }
    out
}

/// Same for paths of a tree: `a` covers `a/b` but not `ab`.
pub fn disjoint_paths(paths: &[String]) -> Vec<String> {
    let mut sorted: Vec<String> = paths
        .iter()
        .map(|p| p.trim_end_matches('/').to_string())
        .collect();
    sorted.sort();
    sorted.dedup();
    let mut kept = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for p in sorted {
        let mut ancestors = p.match_indices('/').map(|(i, _)| &p[..i]);
        let covered = kept.contains("") || ancestors.any(|a| kept.contains(a));
        if !covered {
            kept.insert(p.clone());
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_prefixes_and_paths_collapse() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            disjoint_prefixes(&v(&["samples/", "samples/a", "ref", "reference/"])),
            v(&["ref", "samples/"])
        );
        assert_eq!(
            disjoint_paths(&v(&[
                "results/qc",
                "results/qc/a.tsv",
                "results/qcx",
                "results/"
            ])),
            v(&["results"])
        );
        assert_eq!(
            disjoint_paths(&v(&["a/b", "a/bc", "a/b/c"])),
            v(&["a/b", "a/bc"])
        );
    }
}
