//! `stage emulator`: the ARM/AMLFS emulator, for rehearsing azure-target pipelines offline
//! and for the tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{CliError, Ctx};
use crate::emulator::{Faults, Options};
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Point a pipeline at it with `azure: { endpoint: http://127.0.0.1:PORT, … }` or
STAGE_ARM_ENDPOINT; it accepts any bearer token. Blob data lives in the service given by
--blob-endpoint (Azurite: http://127.0.0.1:10000/devstoreaccount1), reached with the
credentials in AZURE_STORAGE_CONNECTION_STRING; each file system's Lustre namespace is a
directory under DATA_DIR/filesystems/ (set the pipeline's filesystem.mount to it).")]
pub struct Args {
    /// Address to serve on (loopback only).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Directory for the file systems' namespaces and the emulator's journal.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Blob service holding the HSM containers.
    #[arg(long)]
    pub blob_endpoint: Option<String>,
    /// Emulated seconds per Azure second. Every duration is modelled on Azure's (a create
    /// takes 15 minutes, an archive a minute plus its data at the file system's throughput,
    /// an import 30 s plus 2 ms a blob) and multiplied by this: 1/60 makes a create take 15 s.
    #[arg(long, default_value = "1/500", value_parser = crate::emulator::timing::Timing::parse_scale)]
    pub time_scale: f64,
    /// Added to each HSM job before it starts copying, so a test can catch one running:
    /// `2s` for every job, or `KIND:2s` for one kind (import, archive, expansion, auto-export).
    #[arg(long, default_value = "0ms", value_parser = |s: &str| crate::emulator::timing::Hold::parse(s, parse_duration))]
    pub job_delay: crate::emulator::timing::Hold,
    /// Machines standing in for VM scale-set instances (comma-separated addresses of sshd
    /// nodes): a set of N instances gets the first N; asking for more fails like a quota.
    #[arg(long, value_delimiter = ',')]
    pub vmss_hosts: Vec<String>,
    /// Answer every Nth request with 429 Too Many Requests.
    #[arg(long)]
    pub throttle_every: Option<u64>,
    /// Answer every Nth request with 500 Internal Server Error.
    #[arg(long)]
    pub error_every: Option<u64>,
    /// Make every import job fail.
    #[arg(long)]
    pub fail_jobs: bool,
    /// Never finish creating a file system (a stuck long-running operation).
    #[arg(long)]
    pub stuck_create: bool,
    /// End every file system create in state Failed.
    #[arg(long)]
    pub fail_create: bool,
    /// Refuse to create role assignments (403), as for an identity that is not an Owner or
    /// User Access Administrator of the storage account; the bearer token `owner` still may.
    #[arg(long)]
    pub deny_role_assignments: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let ms = s
        .strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .map(Duration::from_millis);
    ms.or_else(|| crate::spec::decode::parse_duration(s))
        .ok_or_else(|| format!("`{s}` is not a duration like 500ms, 2s or 1m"))
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    if !a.listen.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "{}: the emulator serves on loopback addresses only",
            a.listen
        )));
    }
    if let Some(endpoint) = &a.blob_endpoint {
        // Its jobs reach blob with the credentials in its own environment; without them every
        // job would fail later with a message that seems to blame the pipeline's run.
        use crate::store::azure::{Location, credential};
        let probe = format!("{}/probe", endpoint.trim_end_matches('/'));
        let loc = Location::parse(&probe).map_err(|_| {
            CliError::Usage(format!(
                "--blob-endpoint {endpoint}: not a blob service endpoint (e.g. \
                 https://ACCOUNT.blob.core.windows.net, or Azurite's \
                 http://127.0.0.1:10000/devstoreaccount1)"
            ))
        })?;
        credential::from_env(&loc).map_err(|e| {
            CliError::Usage(format!(
                "--blob-endpoint {endpoint}: {e} in the emulator's own environment (for \
                 Azurite: AZURE_STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true)"
            ))
        })?;
    }
    let opts = Options {
        listen: a.listen,
        data_dir: a.data_dir,
        blob_endpoint: a.blob_endpoint,
        timing: crate::emulator::timing::Timing {
            scale: a.time_scale,
            hold: a.job_delay,
        },
        vmss_hosts: a.vmss_hosts,
        faults: Faults {
            throttle_every: a.throttle_every,
            error_every: a.error_every,
            fail_jobs: a.fail_jobs,
            stuck_create: a.stuck_create,
            fail_create: a.fail_create,
            deny_role_assignments: a.deny_role_assignments,
        },
    };
    // SIGTERM too, as a service manager stops it: either way the resources are saved last.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Usage(format!("cannot handle SIGTERM: {e}")))?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    // Said even with -q for `--listen 127.0.0.1:0`: the only way to learn the port chosen.
    let say = !ctx.quiet || opts.listen.port() == 0;
    let listening = move |addr| {
        if say {
            eprintln!("stage emulator: ARM endpoint http://{addr}");
        }
    };
    crate::emulator::serve(opts, shutdown, listening)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Exit::Success)
}
