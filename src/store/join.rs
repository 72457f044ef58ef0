//! Pairs a directory walk with a container listing. Both come in byte order of names (a
//! directory ordered as its name plus `/`), so one pass over each finds every file's blob:
//! an export or a verification of ten million files holds neither side in memory.

use std::collections::HashSet;
use std::pin::Pin;

use futures::stream::{BoxStream, Peekable, StreamExt};

use super::{BlobEntry, Kind, Listing, StoreError};

pub struct Cursor<'a> {
    listing: Peekable<BoxStream<'a, Result<Listing, StoreError>>>,
    /// Directory markers passed over, for an export to create only the missing ones.
    dirs: HashSet<String>,
}

impl<'a> Cursor<'a> {
    pub fn new(listing: BoxStream<'a, Result<Listing, StoreError>>) -> Self {
        Cursor {
            listing: listing.peekable(),
            dirs: HashSet::new(),
        }
    }

    /// The file blob named `name`, if there is one. Calls must come in increasing name order;
    /// blobs between two calls' names (no file of that name) are passed over.
    pub async fn find(&mut self, name: &str) -> Result<Option<BlobEntry>, StoreError> {
        loop {
            let b = match Pin::new(&mut self.listing).peek().await {
                None => return Ok(None),
                Some(Ok(Listing::Entry(b))) => b,
                Some(Ok(Listing::Unusable(_))) => {
                    self.listing.next().await;
                    continue;
                }
                Some(Err(_)) => match self.listing.next().await {
                    Some(Err(e)) => return Err(e),
                    _ => continue,
                },
            };
            if b.kind == Kind::Dir {
                self.dirs.insert(b.name.clone());
            } else if b.name.as_str() > name {
                return Ok(None);
            } else if b.name == name {
                let found = b.clone();
                self.listing.next().await;
                return Ok(Some(found));
            }
            self.listing.next().await;
        }
    }

    /// Reads the rest of the listing; returns every directory marker it held.
    pub async fn finish(mut self) -> Result<HashSet<String>, StoreError> {
        while let Some(item) = self.listing.next().await {
            if let Listing::Entry(b) = item?
                && b.kind == Kind::Dir
            {
                self.dirs.insert(b.name);
            }
        }
        Ok(self.dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Attrs;
    use futures::stream;

    fn entry(name: &str, kind: Kind) -> Result<Listing, StoreError> {
        Ok(Listing::Entry(BlobEntry {
            name: name.into(),
            kind,
            size: 1,
            etag: String::new(),
            sum: None,
            attrs: Attrs::default(),
        }))
    }

    #[tokio::test]
    async fn finds_files_in_one_pass_and_keeps_directory_markers() {
        let listing = stream::iter(vec![
            entry("a", Kind::Dir),
            entry("a/1", Kind::File),
            entry("a/3", Kind::File),
            Ok(Listing::Unusable("bad name".into())),
            entry("b", Kind::File),
            entry("c", Kind::Dir),
        ])
        .boxed();
        let mut c = Cursor::new(listing);
        assert_eq!(c.find("a/1").await.unwrap().unwrap().name, "a/1");
        assert!(c.find("a/2").await.unwrap().is_none());
        assert_eq!(c.find("a/3").await.unwrap().unwrap().name, "a/3");
        assert_eq!(c.find("b").await.unwrap().unwrap().name, "b");
        assert!(c.find("z").await.unwrap().is_none());
        let dirs = c.finish().await.unwrap();
        assert_eq!(dirs, HashSet::from(["a".to_string(), "c".to_string()]));
    }

    #[tokio::test]
    async fn a_listing_error_is_returned() {
        let listing = stream::iter(vec![
            entry("a", Kind::File),
            Err(StoreError::service("gone")),
        ])
        .boxed();
        let mut c = Cursor::new(listing);
        assert!(c.find("a").await.unwrap().is_some());
        assert!(c.find("b").await.is_err());
    }
}
