//! When a pipeline tears its file system down, the next run has nothing to compare against
//! but the container. If the container and the pipeline are exactly as the last successful
//! run left them, a new run would recreate the file system (an AMLFS takes 10–20 minutes and
//! bills by the hour), import, find every task up to date and every result already exported,
//! and delete it again: so it is not started. The last run records a fingerprint of both;
//! a run from cron compares it with one listing of the container.

use futures::StreamExt;
use md5::{Digest, Md5};

use crate::spec::{Action, Pipeline};
use crate::store::{BlobStore, Listing, StoreError};

/// What `status` and `report` say of a run that found nothing changed.
pub const STATUS: &str = "nothing to do: the container and the pipeline were as the run before \
     left them, and the file system is torn down after each run, so none was created";

/// Whether the pipeline's file system outlives its runs; only when it does not is the
/// container all there is to compare.
pub fn applies(p: &Pipeline) -> bool {
    p.steps.iter().any(|s| matches!(s.action, Action::Teardown))
}

/// A digest of the pipeline's definition (steps, variables, file system, target) and of
/// every blob in the container (name, size, version), read page by page.
pub async fn fingerprint(p: &Pipeline, store: &dyn BlobStore) -> Result<String, StoreError> {
    let mut md5 = Md5::new();
    // Debug output holds `env:` and variable values, which may be secrets: only the digest
    // is kept.
    md5.update(
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}\n",
            p.steps, p.vars, p.target, p.azure, p.filesystem
        )
        .as_bytes(),
    );
    let mut listing = store.list("");
    while let Some(item) = listing.next().await {
        match item? {
            Listing::Entry(e) => {
                md5.update(format!("{}\0{}\0{}\n", e.name, e.size, e.etag).as_bytes())
            }
            Listing::Unusable(m) => md5.update(format!("!{m}\n").as_bytes()),
        }
    }
    Ok(crate::digest::hex(&md5.finalize()))
}
