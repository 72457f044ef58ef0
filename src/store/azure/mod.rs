//! A blob container over the official Azure Storage SDK (`azure_storage_blob`), also against
//! Azurite.
//!
//! Throughput comes from many files in flight (the mover's `transfers`); a large file moves
//! in blocks, a few at a time, read and hashed as it streams so memory does not grow with
//! file size. The SDK retries 429/5xx honouring `Retry-After`; this layer adds whole-file
//! retries with jittered backoff for what the SDK cannot retry (a connection cut mid-body).

pub mod credential;
pub mod location;

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::num::NonZero;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RequestContent, RetryOptions, Url};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobContainerClientListBlobsOptions, BlobItem,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientCommitBlockListResultHeaders,
    BlockBlobClientStageBlockOptions, BlockBlobClientUploadOptions, BlockLookupList, HttpRange,
    ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use crc_fast::CrcAlgorithm;
use futures::stream::{self, BoxStream, FuturesUnordered, StreamExt};
use md5::{Digest, Md5};
use tokio::sync::{OnceCell, Semaphore};

pub use credential::Credential;
pub use location::Location;

use super::attrs::FOLDER_KEY;
use super::checksum::{self, CRC64_KEY, Hasher};
use super::{Attrs, BlobEntry, BlobStore, Kind, Listing, StoreError, Sum, Uploaded};

/// Block size for uploading large files; files up to this size go in one request.
const BLOCK: usize = 8 << 20;
/// Range size for downloading large files; blobs up to this size come in one request.
const RANGE: u64 = 64 << 20;
/// Blobs up to this size are read into memory whole (at most `transfers` of them at once).
const SMALL: u64 = 1 << 20;
/// Blocks (or ranges) of one large file in flight at once.
const BLOCKS_IN_FLIGHT: usize = 4;
/// Large files moving at once: bounds memory to about 4 × 4 × 8 MiB whatever `transfers` is.
const LARGE_FILES: usize = 4;
/// Whole-file attempts for transient failures.
const ATTEMPTS: u32 = 5;

pub struct AzureStore {
    loc: Location,
    /// `loc.prefix` as a directory: blob names are relative to it.
    root: String,
    client: BlobContainerClient,
    large: Semaphore,
    container_checked: OnceCell<()>,
    /// Uploads record `stage_crc64` (see [`checksum`]); off only where the writer plays AMLFS.
    record_crc: bool,
}

/// One line for a failed request: status and service error code, not the XML body.
fn describe(e: &azure_core::Error) -> String {
    let text = match e.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => format!(
            "HTTP {} {}",
            u16::from(*status),
            error_code.as_deref().unwrap_or_default()
        ),
        _ => {
            // Transport errors chain their causes: keep them, on one line, without the
            // wrappers that say only that a request failed (the callers name the URL, and a
            // link of the chain that repeats it would repeat the signed query too).
            const WRAPPERS: [&str; 3] = [
                "retry policy expired",
                "failed to execute `reqwest` request",
                "error sending request for url",
            ];
            let mut links = vec![e.to_string()];
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                links.push(s.to_string());
                source = s.source();
            }
            let specific: Vec<&str> = links
                .iter()
                .map(String::as_str)
                .filter(|l| !WRAPPERS.iter().any(|w| l.starts_with(w)))
                .collect();
            let joined = if specific.is_empty() {
                links.join(": ")
            } else {
                specific.join(": ")
            };
            joined.replace('\n', " ")
        }
    };
    super::redact::secrets(text.trim())
}

fn sdk_error(e: azure_core::Error) -> Failure {
    use azure_core::http::StatusCode;
    let text = describe(&e);
    match e.http_status() {
        Some(StatusCode::Unauthorized | StatusCode::Forbidden) => Failure::Fatal(format!(
            "access denied ({text}); check the storage credentials"
        )),
        Some(s) if matches!(u16::from(s), 408 | 429 | 500..=599) => Failure::Transient(text),
        Some(StatusCode::NotFound) if text.contains("ContainerNotFound") => {
            Failure::Fatal(format!("container not found ({text})"))
        }
        // Only reads send a condition (the listed version).
        Some(StatusCode::PreconditionFailed) => Failure::Changed(text),
        Some(_) => Failure::Item(text),
        // No response at all: connection refused or cut, timeouts.
        None => Failure::Transient(text),
    }
}

/// How one attempt failed, which decides whether to try again.
enum Failure {
    Transient(String),
    Item(String),
    Fatal(String),
    /// The read's condition (the listed version) failed.
    Changed(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Transient(m) | Failure::Item(m) | Failure::Fatal(m) | Failure::Changed(m) => m,
        }
    }
}

/// Why a read of the listed version of `name` failed its condition. A name with a control
/// character fails it on every run: the XML listing does not carry `\r` (and other control
/// characters) exactly, so the read asks for another name's version. Saying "it changed"
/// would send the user waiting for a next run that fails the same way.
fn changed(name: &str, text: &str) -> String {
    if name.chars().any(char::is_control) {
        format!(
            "the name holds a control character, which the service's XML listing does not \
             carry exactly, so this blob cannot be read by the name listed ({text}); rename it \
             without control characters"
        )
    } else {
        format!(
            "the blob changed since it was listed ({text}); the next run imports the new version"
        )
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Item(e.to_string())
    }
}

impl From<azure_core::Error> for Failure {
    fn from(e: azure_core::Error) -> Self {
        sdk_error(e)
    }
}

/// Runs `attempt` until it succeeds, fails for good, or runs out of attempts; waits 0.5 s,
/// 1 s, 2 s … (with ±50 % jitter) between tries.
async fn with_retries<T, F, Fut>(name: &str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut delay = Duration::from_millis(500);
    for n in 1..=ATTEMPTS {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(m)) => return Err(StoreError::service(m)),
            Err(Failure::Item(m)) => return Err(StoreError::item(name, m)),
            Err(Failure::Changed(m)) => return Err(StoreError::item(name, changed(name, &m))),
            Err(Failure::Transient(m)) if n == ATTEMPTS => {
                return Err(StoreError::item(
                    name,
                    format!("{m} (after {ATTEMPTS} attempts)"),
                ));
            }
            Err(Failure::Transient(m)) => {
                tracing::debug!(name, attempt = n, "transient failure, retrying: {m}");
                let jitter = 0.5 + (crate::digest::nonce() % 1000) as f64 / 1000.0;
                tokio::time::sleep(delay.mul_f64(jitter)).await;
                delay *= 2;
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

fn md5_array(v: Option<&Vec<u8>>) -> Option<[u8; 16]> {
    v.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
}

fn unquote(etag: impl std::fmt::Display) -> String {
    etag.to_string().trim_matches('"').to_string()
}

/// `If-Match` for the version a listing saw: reads of a blob rewritten since then fail (412)
/// instead of mixing versions across ranges or pairing new content with the old ETag and
/// checksum in the journal.
fn listed_version(e: &BlobEntry) -> Option<azure_core::http::Etag> {
    (!e.etag.is_empty()).then(|| format!("\"{}\"", e.etag).into())
}

impl AzureStore {
    /// Opens `url` with credentials from the environment (see [`credential`]). Errors do not
    /// repeat `url`: every caller names it already.
    pub fn from_env(url: &str) -> Result<AzureStore, StoreError> {
        let loc = Location::parse(url).map_err(|e| StoreError::service(e.to_string()))?;
        let cred = credential::from_env(&loc)?;
        AzureStore::new(loc, cred)
    }

    pub fn new(loc: Location, cred: Credential) -> Result<AzureStore, StoreError> {
        let mut url = Url::parse(&loc.container_url())
            .map_err(|e| StoreError::service(format!("{}: {e}", loc.display())))?;
        let token = match cred {
            Credential::Sas(sas) => {
                url.set_query(Some(sas.secret()));
                None
            }
            Credential::Token(t) => Some(t),
        };
        let options = BlobContainerClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions::exponential(ExponentialRetryOptions {
                    initial_delay: azure_core::time::Duration::milliseconds(400),
                    max_retries: 4,
                    max_total_elapsed: azure_core::time::Duration::seconds(120),
                    max_delay: azure_core::time::Duration::seconds(30),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let client = BlobContainerClient::new(url, token, Some(options))
            .map_err(|e| StoreError::service(format!("{}: {e}", loc.display())))?;
        let root = match loc.prefix.as_str() {
            "" => String::new(),
            p if p.ends_with('/') => p.to_string(),
            p => format!("{p}/"),
        };
        Ok(AzureStore {
            loc,
            root,
            client,
            large: Semaphore::new(LARGE_FILES),
            record_crc: true,
            container_checked: OnceCell::new(),
        })
    }

    /// Writes blobs as AMLFS's own archive does, without `stage_crc64`: for the emulator, so
    /// what it archives verifies the way a real archive's blobs do (by Content-MD5 where the
    /// upload set one, else by length).
    pub fn without_checksum_metadata(mut self) -> Self {
        self.record_crc = false;
        self
    }

    pub fn location(&self) -> &Location {
        &self.loc
    }

    fn entry(&self, item: BlobItem) -> Option<Listing> {
        let full = item.name?;
        let rel = full.strip_prefix(&self.root)?.to_string();
        let metadata: HashMap<String, String> =
            item.metadata.and_then(|m| m.values).unwrap_or_default();
        let folder = metadata
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(FOLDER_KEY) && v.eq_ignore_ascii_case("true"));
        let props = item.properties.unwrap_or_default();
        // Zero-length `dir/` markers written by other tools are directories too.
        let (name, kind) = match rel.strip_suffix('/') {
            Some(d) => (d.to_string(), Kind::Dir),
            None if folder => (rel, Kind::Dir),
            None => (rel, Kind::File),
        };
        if name.is_empty() {
            return None;
        }
        Some(Listing::Entry(BlobEntry {
            name,
            kind,
            size: if kind == Kind::Dir {
                0
            } else {
                props.content_length.unwrap_or(0)
            },
            etag: props.etag.map(unquote).unwrap_or_default(),
            sum: metadata
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(CRC64_KEY))
                .and_then(|(_, v)| Sum::parse_crc64(v))
                .or_else(|| md5_array(props.content_md5.as_ref()).map(Sum::Md5)),
            attrs: Attrs::from_metadata(metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        }))
    }

    /// Export creates the container if it is missing, as azcopy does. One attempt, failing the
    /// whole export: the SDK has retried each request already, and a service that cannot be
    /// reached or refuses this now will not serve the files either (whole-file retries are for
    /// bodies cut mid-transfer).
    /// Whether the container exists (an ARM container GET answers from this in the emulator).
    pub async fn exists(&self) -> Result<bool, StoreError> {
        self.client
            .exists()
            .await
            .map_err(|e| StoreError::service(sdk_error(e).message()))
    }

    async fn ensure_container(&self) -> Result<(), StoreError> {
        self.container_checked
            .get_or_try_init(|| async {
                let checked: Result<(), Failure> = async {
                    if !self.client.exists().await? {
                        match self.client.create(None).await {
                            Ok(_) => {}
                            // Someone else created it meanwhile.
                            Err(e) if e.http_status().is_some_and(|s| u16::from(s) == 409) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Ok(())
                }
                .await;
                checked.map_err(|f| StoreError::service(f.message()))
            })
            .await
            .map(|_| ())
    }

    async fn download_once(
        &self,
        e: &BlobEntry,
        dest: &Path,
    ) -> Result<(u64, Option<Sum>), Failure> {
        let blob = self.client.blob_client(&format!("{}{}", self.root, e.name));
        if e.size <= RANGE {
            return stream_whole(&blob, e, dest).await;
        }
        // Large: ranges fetched a few at a time, each streamed straight to its offset, so
        // memory holds only chunks in flight. A CRC is taken per range as it lands and the
        // ranges' CRCs joined; an MD5 cannot be split, so it is taken afterwards from the
        // page cache.
        let _permit = self.large.acquire().await.ok();
        let file = std::fs::File::create(dest)?;
        file.set_len(e.size)?;
        let file = &file;
        let blob = &blob;
        let per_range = matches!(e.sum, Some(Sum::Crc64(_)));
        let ranges = (0..e.size)
            .step_by(RANGE as usize)
            .map(|start| (start, RANGE.min(e.size - start)));
        let mut fetches = stream::iter(ranges)
            .map(|(start, len)| async move {
                let opts = BlobClientDownloadOptions {
                    range: Some(HttpRange::new(start, len)),
                    parallel: NonZero::new(1),
                    partition_size: NonZero::new(len as usize),
                    if_match: listed_version(e),
                    ..Default::default()
                };
                let mut hasher = if per_range {
                    Hasher::crc64()
                } else {
                    Hasher::Nothing
                };
                let mut body = blob.download(Some(opts)).await?.body;
                let mut pos = start;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    std::os::unix::fs::FileExt::write_all_at(file, &chunk, pos)?;
                    hasher.update(&chunk);
                    pos += chunk.len() as u64;
                }
                if pos != start + len {
                    return Err(Failure::Transient(format!(
                        "short read: range at {start} ended after {} of {len} bytes",
                        pos - start
                    )));
                }
                Ok((start, hasher))
            })
            .buffer_unordered(BLOCKS_IN_FLIGHT);
        let mut done = std::collections::BTreeMap::new();
        while let Some(r) = fetches.next().await {
            let (start, hasher) = r?;
            done.insert(start, hasher);
        }
        drop(fetches);
        if per_range {
            let mut whole = Hasher::crc64();
            for part in done.values() {
                whole.append(part);
            }
            return Ok((e.size, whole.finish()));
        }
        let path = dest.to_path_buf();
        let want = e.sum;
        tokio::task::spawn_blocking(move || checksum::file(&path, want))
            .await
            .map_err(|e| Failure::Item(e.to_string()))?
            .map_err(Failure::from)
    }

    async fn upload_once(
        &self,
        src: &std::fs::File,
        name: &str,
        attrs: &Attrs,
    ) -> Result<Uploaded, Failure> {
        let full = format!("{}{name}", self.root);
        let blob = self.client.blob_client(&full).block_blob_client();
        let mut file = src.try_clone()?;
        file.rewind()?;
        let size = file.metadata()?.len();
        let mut metadata = attrs.to_metadata(false);
        if size <= BLOCK as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data)?;
            // Content-MD5 on a single-request upload is checked by the service on arrival.
            let md5: [u8; 16] = Md5::digest(&data).into();
            let n = data.len() as u64;
            if self.record_crc {
                metadata.insert(
                    CRC64_KEY.to_string(),
                    Sum::crc64_hex(crc_fast::checksum(CrcAlgorithm::Crc64Nvme, &data)),
                );
            }
            let opts = BlockBlobClientUploadOptions {
                metadata: Some(metadata),
                blob_content_md5: Some(md5.to_vec()),
                parallel: NonZero::new(1),
                ..Default::default()
            };
            let r = blob.upload(RequestContent::from(data), Some(opts)).await?;
            // The service returns the MD5 of the body it received.
            if let Some(got) = md5_array(r.content_md5.as_ref())
                && got != md5
            {
                return Err(Failure::Transient(
                    "MD5 returned by the service differs".into(),
                ));
            }
            let etag = r.etag.map(unquote).unwrap_or_default();
            return Ok(Uploaded { etag, size: n });
        }
        let _permit = self.large.acquire().await.ok();
        // Each block carries its MD5 for the service to check on arrival; the whole file's
        // CRC goes into metadata for whoever downloads it (an MD5 of the whole would cost a
        // second pass of the slowest hash for nothing the service checks).
        let mut whole = Hasher::crc64();
        let mut ids = Vec::new();
        let mut total = 0u64;
        let mut in_flight = FuturesUnordered::new();
        loop {
            let mut buf = Vec::with_capacity(BLOCK);
            (&mut file).take(BLOCK as u64).read_to_end(&mut buf)?;
            if buf.is_empty() {
                break;
            }
            whole.update(&buf);
            total += buf.len() as u64;
            let id = format!("stage-block-{:08}", ids.len()).into_bytes();
            ids.push(id.clone());
            let block_md5 = Md5::digest(&buf).to_vec();
            let blob = &blob;
            in_flight.push(async move {
                let len = buf.len() as u64;
                let opts = BlockBlobClientStageBlockOptions {
                    transactional_content_md5: Some(block_md5),
                    ..Default::default()
                };
                blob.stage_block(&id, len, RequestContent::from(buf), Some(opts))
                    .await
                    .map(|_| ())
            });
            if in_flight.len() >= BLOCKS_IN_FLIGHT
                && let Some(r) = in_flight.next().await
            {
                r?;
            }
        }
        while let Some(r) = in_flight.next().await {
            r?;
        }
        if let Some(Sum::Crc64(crc)) = whole.finish()
            && self.record_crc
        {
            metadata.insert(CRC64_KEY.to_string(), Sum::crc64_hex(crc));
        }
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let opts = BlockBlobClientCommitBlockListOptions {
            metadata: Some(metadata),
            ..Default::default()
        };
        let r = blob.commit_block_list(list.try_into()?, Some(opts)).await?;
        let etag = r.etag()?.map(unquote).unwrap_or_default();
        Ok(Uploaded { etag, size: total })
    }
}

#[async_trait]
impl BlobStore for AzureStore {
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<Listing, StoreError>> {
        let opts = BlobContainerClientListBlobsOptions {
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            prefix: Some(format!("{}{prefix}", self.root)),
            ..Default::default()
        };
        let pager = match self.client.list_blobs(Some(opts)) {
            Ok(p) => p,
            Err(e) => return stream::once(async move { Err(fail_listing(e)) }).boxed(),
        };
        pager
            .into_pages()
            .flat_map(move |page| {
                let items: Vec<Result<Listing, StoreError>> =
                    match page.and_then(|p| p.into_model()) {
                        Ok(model) => model
                            .blob_items
                            .into_iter()
                            .filter_map(|item| self.entry(item).map(Ok))
                            .collect(),
                        Err(e) => vec![Err(fail_listing(e))],
                    };
                stream::iter(items)
            })
            .boxed()
    }

    async fn download(&self, e: &BlobEntry, dest: &Path) -> Result<(u64, Option<Sum>), StoreError> {
        with_retries(&e.name, || self.download_once(e, dest)).await
    }

    async fn create_if_missing(&self) -> Result<(), StoreError> {
        self.ensure_container().await
    }

    async fn upload(
        &self,
        src: &std::fs::File,
        name: &str,
        attrs: &Attrs,
    ) -> Result<Uploaded, StoreError> {
        with_retries(name, || self.upload_once(src, name, attrs)).await
    }

    async fn put_dir(&self, name: &str, attrs: &Attrs) -> Result<(), StoreError> {
        let blob = self
            .client
            .blob_client(&format!("{}{name}", self.root))
            .block_blob_client();
        with_retries(name, || async {
            let opts = BlockBlobClientUploadOptions {
                metadata: Some(attrs.to_metadata(true)),
                ..Default::default()
            };
            blob.upload(RequestContent::from(Vec::<u8>::new()), Some(opts))
                .await?;
            Ok(())
        })
        .await
    }

    fn describe(&self) -> String {
        self.loc.display()
    }

    /// URLs cannot carry control characters (they are stripped on the way), and blob names
    /// are at most 1,024 characters.
    fn check_name(&self, name: &str) -> Result<(), String> {
        if name.chars().any(char::is_control) {
            return Err("a control character (such as a newline) in the name cannot be stored in blob storage".into());
        }
        if self.root.chars().count() + name.chars().count() > 1024 {
            return Err("blob names are limited to 1,024 characters".into());
        }
        Ok(())
    }

    fn default_transfers(&self) -> usize {
        (super::cores() * 8).clamp(16, 64)
    }
}

fn fail_listing(e: azure_core::Error) -> StoreError {
    StoreError::service(format!("cannot list the container: {}", describe(&e)))
}

/// One GET for the whole blob. A small one is written from memory; for a larger one, hashing
/// and writing run on a blocking thread fed through a short queue, so the network side keeps
/// reading while the previous chunk is hashed.
async fn stream_whole(
    blob: &azure_storage_blob::BlobClient,
    e: &BlobEntry,
    dest: &Path,
) -> Result<(u64, Option<Sum>), Failure> {
    let size = e.size;
    let mut hasher = Hasher::like(e.sum);
    if size == 0 {
        // Nothing to fetch (and ranged reads of an empty blob are malformed in some services).
        std::fs::File::create(dest)?;
        return Ok((0, hasher.finish()));
    }
    let opts = BlobClientDownloadOptions {
        parallel: NonZero::new(1),
        partition_size: NonZero::new(size as usize),
        if_match: listed_version(e),
        ..Default::default()
    };
    let mut body = blob.download(Some(opts)).await?.body;
    if size <= SMALL {
        // Small: gathered in memory and written in one go from this task. Handing each
        // chunk to a blocking thread cost more in wake-ups than the write itself.
        let mut data = Vec::with_capacity(size as usize);
        while let Some(chunk) = body.next().await {
            data.extend_from_slice(&chunk?);
            if data.len() as u64 > size {
                break;
            }
        }
        if data.len() as u64 != size {
            // Cut short, or the blob changed since it was listed: try again.
            return Err(Failure::Transient(format!(
                "read {} bytes of a blob listed with {size}",
                data.len()
            )));
        }
        hasher.update(&data);
        std::fs::write(dest, &data)?;
        return Ok((size, hasher.finish()));
    }
    let file = std::fs::File::create(dest)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<azure_core::Bytes>(16);
    let sink = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Option<Sum>)> {
        let mut file = file;
        let mut n = 0u64;
        for chunk in rx {
            hasher.update(&chunk);
            file.write_all(&chunk)?;
            n += chunk.len() as u64;
        }
        Ok((n, hasher.finish()))
    });
    let mut fed = Ok(());
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                // A full queue blocks briefly: the backpressure that bounds memory.
                let tx = tx.clone();
                if tokio::task::block_in_place(move || tx.send(c)).is_err() {
                    break;
                }
            }
            Err(e) => {
                fed = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let written = sink.await.map_err(|e| Failure::Item(e.to_string()))?;
    fed?;
    let (n, sum) = written?;
    if n != size {
        // A cut stream can end early without an error: try again.
        return Err(Failure::Transient(format!(
            "short read: {n} of {size} bytes"
        )));
    }
    Ok((n, sum))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_read_condition_names_its_real_cause() {
        assert!(super::changed("a\rb", "412").contains("control character"));
        assert!(super::changed("a b", "412").contains("changed since it was listed"));
    }
}
