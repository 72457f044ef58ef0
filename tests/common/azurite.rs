//! A real Azurite blob service on a free loopback port, started per test and killed on drop.
//! Always with `--disableTelemetry`: nothing may leave this machine.
#![allow(dead_code)]

use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use azure_core::http::{RequestContent, Url};
use azure_storage_blob::BlobContainerClient;
use azure_storage_blob::models::{
    BlobContainerClientListBlobsOptions, BlockBlobClientUploadOptions, ListBlobsIncludeItem,
};
use futures::StreamExt;
use stage::store::azure::{Location, credential};

pub const CONNECTION_STRING: &str = "UseDevelopmentStorage=true";

/// `stage ARGS` in the workspace, with the credentials of every test Azurite.
pub fn stage(ws: &crate::common::Workspace, args: &[&str]) -> Command {
    let mut c = ws.cmd(args);
    c.env("AZURE_STORAGE_CONNECTION_STRING", CONNECTION_STRING);
    c
}

/// The same, run to its end.
pub fn stage_env(ws: &crate::common::Workspace, args: &[&str]) -> Output {
    stage(ws, args).output().expect("run stage")
}

pub struct Azurite {
    child: Option<Child>,
    pub port: u16,
}

impl Azurite {
    /// Binds port 0 and reads back the port Azurite got: no window in which a parallel test
    /// can take a port chosen for it (as probing for a free one then binding had).
    pub fn start() -> Azurite {
        let mut a = Azurite {
            child: None,
            port: 0,
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let mut child = Command::new("azurite-blob")
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .args([
                "--inMemoryPersistence",
                "--loose",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite-blob (npm install -g azurite; scripts/test installs it)");
        let out = child.stdout.take().expect("piped");
        self.child = Some(child);
        self.port = crate::common::announced_port(
            out,
            "listens on http://127.0.0.1:",
            Duration::from_secs(60),
        )
        .expect("azurite did not start listening");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "azurite did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the service (its in-memory blobs are gone) and starts a fresh one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Path-style URL of a container (and optional prefix) in the dev account.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1/{path}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A raw SDK client for the dev account, to set up and inspect containers the way another
/// tool (or AMLFS) would.
pub fn raw(az: &Azurite, container: &str) -> BlobContainerClient {
    let loc = Location::parse(&az.url(container)).unwrap();
    let sas = credential::account_sas(credential::DEV_ACCOUNT, credential::DEV_KEY, &loc).unwrap();
    let mut url = Url::parse(&loc.container_url()).unwrap();
    url.set_query(Some(sas.secret()));
    BlobContainerClient::new(url, None, None).unwrap()
}

pub async fn put(c: &BlobContainerClient, name: &str, data: &[u8], meta: &[(&str, &str)]) {
    let opts = BlockBlobClientUploadOptions {
        metadata: Some(
            meta.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    c.blob_client(name)
        .block_blob_client()
        .upload(RequestContent::from(data.to_vec()), Some(opts))
        .await
        .unwrap();
}

/// Every blob of the container with its metadata.
pub async fn listing(
    c: &BlobContainerClient,
) -> std::collections::BTreeMap<String, std::collections::HashMap<String, String>> {
    let opts = BlobContainerClientListBlobsOptions {
        include: Some(vec![ListBlobsIncludeItem::Metadata]),
        ..Default::default()
    };
    let mut pages = c.list_blobs(Some(opts)).unwrap().into_pages();
    let mut out = std::collections::BTreeMap::new();
    while let Some(page) = pages.next().await {
        for item in page.unwrap().into_model().unwrap().blob_items {
            let meta = item.metadata.and_then(|m| m.values).unwrap_or_default();
            out.insert(item.name.unwrap(), meta);
        }
    }
    out
}
