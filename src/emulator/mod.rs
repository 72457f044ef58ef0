//! An ARM/AMLFS emulator: the `amlFilesystems`, `importJobs`, `archive` and async-operation
//! calls of api-version 2026-01-01, served on loopback so the azure target runs offline.
//!
//! It is not a mock: a file system is a directory, import jobs copy blobs from a real blob
//! service (Azurite) into it and archive copies back, through the same AMLFS semantics as
//! `stage`'s own mover (conflict modes, maximum errors, metadata). What it emulates is the
//! control plane: long-running operations, job states, the one-HSM-job-at-a-time rule (a
//! second job is refused with 409, as Azure does, never queued), Azure's timings scaled by
//! one factor (`timing`), lists paged with `nextLink`, and injectable faults. Its resources
//! survive a restart with the same data directory (`persist`).

mod handlers;
mod paths;
mod persist;
mod state;
pub mod timing;
mod vmss;
mod work;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use state::Faults;

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Blob service holding the HSM containers, e.g. Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1`; default `https://ACCOUNT.blob.core.windows.net`.
    pub blob_endpoint: Option<String>,
    pub timing: timing::Timing,
    /// Addresses of the machines (sshd nodes) that stand in for scale-set instances, in order.
    pub vmss_hosts: Vec<String>,
    pub faults: Faults,
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serves until `shutdown` resolves. Prints nothing; `listening` is told the address bound
/// (the port the system chose, for `--listen 127.0.0.1:0`), for the caller to say.
pub async fn serve(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    listening: impl FnOnce(std::net::SocketAddr),
) -> Result<(), EmulatorError> {
    std::fs::create_dir_all(opts.data_dir.join("filesystems")).map_err(|source| {
        EmulatorError::DataDir {
            path: opts.data_dir.clone(),
            source,
        }
    })?;
    let journal = Arc::new(crate::journal::Journal::open(
        &opts.data_dir.join("journal"),
        false,
    )?);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| EmulatorError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(EmulatorError::Serve)?;
    listening(addr);
    let (inner, saved) = persist::load(&opts.data_dir)?;
    let state = Arc::new(state::State::new(
        opts,
        journal,
        format!("http://{addr}"),
        inner,
    ));
    *state.saved.lock().unwrap_or_else(|e| e.into_inner()) = saved;
    persist::resume(&state);
    // Background work changes resources between requests (a job completes): written a few
    // times a second, and once more at the end.
    let flusher = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                persist::save_soon(&state).await;
            }
        })
    };
    let app = axum::Router::new()
        .fallback(handlers::dispatch)
        .with_state(state.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(EmulatorError::Serve);
    flusher.abort();
    persist::save_soon(&state).await;
    served
}
