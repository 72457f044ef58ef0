//! `stage slurm prolog` and `stage slurm epilog`: stage a job's data in before it starts and
//! out after it ends, from the `#STAGE` lines of its batch script.
//!
//! Exit codes follow what Slurm does with them: a failing node Prolog drains the node and
//! requeues the job (held), so the prolog fails only when the job's inputs cannot be staged;
//! the epilog never fails for a transfer error (that would drain a healthy node): it logs the
//! error and records it in the state directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{CliError, Ctx};
use crate::azure::arm::Arm;
use crate::azure::models::AmlFilesystem;
use crate::azure::resources::FsRef;
use crate::exit::Exit;
use crate::mover::{
    BlobMover, ExportRequest, HsmMover, ImportRequest, JobStatus, Mover, MoverError,
};
use crate::slurm::directives::{self, Directives};
use crate::slurm::job_user::JobUser;
use crate::slurm::restore;
use crate::slurm::route::{self, Route};
use crate::store::azure::Location;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
slurm.conf (node side; runs as root with SLURM_JOB_ID set):
  Prolog=/etc/slurm/stage-prolog.sh
  Epilog=/etc/slurm/stage-epilog.sh
where stage-prolog.sh is, for example:
  #!/bin/sh
  set -a; . /etc/stage/env; set +a     # credentials, readable by root only
  exec stage --state-dir /var/lib/stage slurm prolog

Job scripts declare what they need:
  #STAGE in  https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX  /lustre/job/in
  #STAGE out /lustre/job/out  https://ACCOUNT.blob.core.windows.net/CONTAINER/results
  #STAGE restore /lustre/reference        (data of files already there, back from blob)
  #STAGE conflict overwrite-if-dirty      (default fail)
  #STAGE max_errors 0
or, without a script of their own, in their comment:
  sbatch --comment \"stage: in URL DIR; out DIR URL\" ...

On an AMLFS node, set STAGE_AMLFS=<file system ARM id> (and STAGE_AMLFS_MOUNT if not
/mnt/lustre) in /etc/stage/env: `in`/`out` lines naming its HSM container at the path AMLFS
maps the prefix to become AMLFS import jobs / archives; others are copied by stage itself.

Exit codes: prolog 0 staged (or nothing to stage), 1 inputs could not be staged (Slurm drains
the node and requeues the job held), 2 bad #STAGE lines; epilog always 0 unless its own
arguments are wrong — transfer errors are logged and recorded under STATE_DIR/slurm/.")]
pub struct Args {
    #[command(subcommand)]
    pub hook: Hook,
}

#[derive(Debug, clap::Subcommand)]
pub enum Hook {
    /// Stage a job's `#STAGE in` data into place and restore its `#STAGE restore` paths;
    /// blocks until done.
    Prolog(HookArgs),
    /// Export a job's `#STAGE out` directories; never fails the node for a transfer error.
    Epilog(HookArgs),
}

#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// Read directives from this file instead of the job's batch script (`scontrol write
    /// batch_script $SLURM_JOB_ID -`).
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Give up after this long (so a stuck transfer cannot hold the node forever).
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The AMLFS file system mounted on this node (its ARM id). `#STAGE in`/`out` lines that
    /// name its HSM container and the directory AMLFS maps the prefix to go through AMLFS's
    /// HSM (an import job in, an archive out; server-side, one HSM job at a time); the rest
    /// are copied directly.
    #[arg(long, env = "STAGE_AMLFS", value_name = "ARM_ID")]
    pub amlfs: Option<String>,
    /// Where that file system is mounted.
    #[arg(long, env = "STAGE_AMLFS_MOUNT", default_value = "/mnt/lustre")]
    pub mount: PathBuf,
}

/// Files read at once by `#STAGE restore`: each read waits on a restore from blob, so many
/// in flight keep the HSM copytools busy.
const RESTORE_READERS: usize = 32;

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::spec::decode::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration like 90s, 30m or 2h"))
}

/// An error with its causes, on one line: a hook's log is the only place the cause shows.
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !s.contains(&c) {
            s += &format!(": {c}");
        }
        next = cause.source();
    }
    s
}

fn job_id() -> String {
    std::env::var("SLURM_JOB_ID").unwrap_or_else(|_| "-".into())
}

/// Past this the log moves to `hooks.log.1` (replacing the one before): it is for reading
/// recent jobs, and a busy node runs hooks for years.
const LOG_LIMIT: u64 = 8 << 20;

/// One line to stderr (syslog-friendly: no colour, one event per line) and to the log file.
fn log(ctx: &Ctx, hook: &str, msg: &str) {
    let line = format!("stage {hook} job {}: {msg}", job_id());
    eprintln!("{line}");
    let dir = ctx.state_dir.join("slurm");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("hooks.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_LIMIT) {
        let _ = std::fs::rename(&path, dir.join("hooks.log.1"));
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(
            f,
            "{} {line}",
            crate::clock::iso8601(crate::clock::now_secs())
        );
    }
}

/// The batch script: from `--script`, else from slurmctld. None for jobs without one (srun).
fn script(a: &HookArgs) -> Result<Option<String>, CliError> {
    if let Some(p) = &a.script {
        return std::fs::read_to_string(p)
            .map(Some)
            .map_err(|e| CliError::Read(format!("cannot read {}", p.display()), e));
    }
    let Ok(id) = std::env::var("SLURM_JOB_ID") else {
        return Err(CliError::Usage(
            "SLURM_JOB_ID is not set: run from Slurm, or pass --script FILE".into(),
        ));
    };
    let out = std::process::Command::new("scontrol")
        .args(["write", "batch_script", &id, "-"])
        .output()
        .map_err(|e| CliError::Read("cannot run scontrol".into(), e))?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The job's directives: its script's `#STAGE` lines, then its comment's (`SLURM_JOB_COMMENT`,
/// which Slurm gives the node hooks).
fn directives(a: &HookArgs) -> Result<Directives, CliError> {
    let text = script(a)?.unwrap_or_default();
    let mut d = directives::parse(&text).map_err(|e| CliError::Usage(e.to_string()))?;
    if let Ok(comment) = std::env::var("SLURM_JOB_COMMENT") {
        directives::parse_comment(&comment, &mut d).map_err(|e| CliError::Usage(e.to_string()))?;
    }
    Ok(d)
}

/// The node's AMLFS file system, as ARM describes it now.
struct Amlfs {
    arm: Arc<Arm>,
    fs: FsRef,
    /// ARM id of its HSM container.
    container: String,
    mount: PathBuf,
}

fn hsm_error(what: String, e: impl std::fmt::Display) -> CliError {
    CliError::Transfer {
        what,
        source: MoverError::Hsm(e.to_string()),
    }
}

impl Amlfs {
    async fn open(id: &str, mount: &Path) -> Result<Amlfs, CliError> {
        let endpoint = crate::target::env_arm_endpoint()
            .unwrap_or_else(|| crate::target::DEFAULT_ARM_ENDPOINT.into());
        let arm = Arc::new(crate::target::arm_client_at(&endpoint)?);
        let found: Option<AmlFilesystem> = arm
            .get(id)
            .await
            .map_err(|e| hsm_error(format!("file system {id}"), e))?;
        let fs = found.ok_or_else(|| hsm_error(format!("file system {id}"), "not found"))?;
        let location = fs.location.clone().unwrap_or_default();
        let fs_ref = FsRef::from_id(id, &location).ok_or_else(|| {
            CliError::Usage(format!(
                "--amlfs `{id}` is not an AMLFS id (/subscriptions/S/resourceGroups/G/providers/Microsoft.StorageCache/amlFilesystems/NAME)"
            ))
        })?;
        let container = fs
            .properties
            .hsm_settings()
            .map(|s| s.container.clone())
            .ok_or_else(|| hsm_error(format!("file system {id}"), "has no HSM container"))?;
        Ok(Amlfs {
            arm,
            fs: fs_ref,
            container,
            mount: mount.to_path_buf(),
        })
    }

    fn route(&self, url: &str, dir: &Path) -> Result<Route, CliError> {
        let loc = Location::parse(url).map_err(|e| CliError::Usage(format!("{url}: {e}")))?;
        Ok(route::route(&loc, dir, &self.container, &self.mount))
    }

    /// A mover over the whole HSM container: AMLFS paths are blob names from its root.
    fn mover(&self, ctx: &Ctx, url: &str) -> Result<HsmMover, CliError> {
        let root = Location::parse(url)
            .map_err(|e| CliError::Usage(format!("{url}: {e}")))?
            .container_url();
        let store =
            crate::store::open(&root).map_err(|e| CliError::Usage(format!("{url}: {e}")))?;
        Ok(HsmMover::new(
            self.arm.clone(),
            self.fs.clone(),
            ctx.open_journal(true)?,
            store,
            self.mount.clone(),
        ))
    }
}

/// The file system and blob prefix when a directive goes through AMLFS's HSM; `None` (with
/// the reason logged when there is a file system) when it is copied directly.
fn via_hsm<'a>(
    ctx: &Ctx,
    hook: &str,
    amlfs: Option<&'a Amlfs>,
    url: &str,
    dir: &Path,
) -> Result<Option<(&'a Amlfs, String)>, CliError> {
    let Some(fs) = amlfs else {
        return Ok(None);
    };
    match fs.route(url, dir)? {
        Route::Hsm { prefix } => Ok(Some((fs, prefix))),
        Route::Direct { why } => {
            log(ctx, hook, &format!("{url}: copying directly: {why}"));
            Ok(None)
        }
    }
}

fn mover(ctx: &Ctx, url: &str, dir: &std::path::Path) -> Result<BlobMover, CliError> {
    let store = crate::store::open(url).map_err(|e| CliError::Usage(format!("{url}: {e}")))?;
    // Prologs of jobs starting together on one node share the state: queue on its lock.
    let journal = ctx.open_journal(true)?;
    let transfers = store.default_transfers();
    Ok(BlobMover::new(
        super::transfer::namespace(dir),
        dir.to_path_buf(),
        Arc::clone(&store),
        journal,
        transfers,
    ))
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    match a.hook {
        Hook::Prolog(h) => prolog(ctx, h).await,
        Hook::Epilog(h) => epilog(ctx, h).await,
    }
}

async fn prolog(ctx: &Ctx, a: HookArgs) -> Result<Exit, CliError> {
    let d = directives(&a)?;
    if d.stage_in.is_empty() && d.restore.is_empty() {
        return Ok(Exit::Success);
    }
    let work = async {
        let amlfs = match &a.amlfs {
            Some(id) if !d.stage_in.is_empty() => Some(Amlfs::open(id, &a.mount).await?),
            _ => None,
        };
        for (i, (url, dir)) in d.stage_in.iter().enumerate() {
            let mut req = ImportRequest {
                job: format!("slurm-{}", job_id()),
                prefixes: vec![String::new()],
                conflict: d.conflict,
                max_errors: d.max_errors,
                dry_run: false,
                cancel: None,
                detach: false,
            };
            let import_job = via_hsm(ctx, "prolog", amlfs.as_ref(), url, dir)?;
            let mover: Box<dyn Mover> = match import_job {
                Some((fs, prefix)) => {
                    // One job per directive; the same names when Slurm reruns the prolog,
                    // so a rerun finds its jobs instead of starting them again.
                    req.job = format!("slurm-{}-{}", job_id(), i + 1);
                    req.prefixes = vec![prefix];
                    Box::new(fs.mover(ctx, url)?)
                }
                None => {
                    let cannot = |e| CliError::Read(format!("cannot create {}", dir.display()), e);
                    match JobUser::from_env() {
                        Some(user) => {
                            let pinned = user.make_dir(dir).map_err(cannot)?;
                            Box::new(mover(ctx, url, dir)?.for_job(user.uid, user.gid, pinned))
                        }
                        None => {
                            std::fs::create_dir_all(dir).map_err(cannot)?;
                            Box::new(mover(ctx, url, dir)?)
                        }
                    }
                }
            };
            let report = mover
                .import(req, Box::new(|_| {}))
                .await
                .map_err(|source| CliError::Transfer {
                    what: format!("stage in {url}"),
                    source,
                })?;
            let what = format!("{url} -> {}: {}", dir.display(), report.summary());
            if report.found_nothing() && !d.allow_empty {
                log(
                    ctx,
                    "prolog",
                    &format!(
                        "FAILED {url}: no blobs there (a mistyped prefix?), so the job would \
                         start without its inputs; add `#STAGE allow_empty` if it can"
                    ),
                );
                return Ok(Exit::Failed);
            }
            if report.status == JobStatus::Failed {
                log(
                    ctx,
                    "prolog",
                    &format!("FAILED {what}; {}", report.errors.join("; ")),
                );
                return Ok(Exit::Failed);
            }
            log(ctx, "prolog", &what);
        }
        for path in &d.restore {
            let p = path.clone();
            let restored =
                tokio::task::spawn_blocking(move || restore::restore(&p, RESTORE_READERS))
                    .await
                    .map_err(|e| hsm_error(format!("restore {}", path.display()), e))?;
            match restored {
                Ok(r) => log(
                    ctx,
                    "prolog",
                    &format!(
                        "restore {}: {} files ({}) on the file system",
                        path.display(),
                        r.files,
                        indicatif::HumanBytes(r.bytes)
                    ),
                ),
                Err(e) => {
                    log(ctx, "prolog", &format!("FAILED restore {e}"));
                    return Ok(Exit::Failed);
                }
            }
        }
        Ok(Exit::Success)
    };
    match tokio::time::timeout(a.timeout, work).await {
        Ok(Err(e)) => {
            log(ctx, "prolog", &format!("FAILED {}", causes(&e)));
            Err(e)
        }
        Ok(ok) => ok,
        Err(_) => {
            log(
                ctx,
                "prolog",
                &format!("FAILED: not done after {:?}", a.timeout),
            );
            Ok(Exit::Failed)
        }
    }
}

async fn epilog(ctx: &Ctx, a: HookArgs) -> Result<Exit, CliError> {
    let d = directives(&a)?;
    if d.stage_out.is_empty() {
        return Ok(Exit::Success);
    }
    let work = async {
        let mut failures = Vec::new();
        // Without ARM the outputs still reach blob: copied directly.
        let amlfs = match &a.amlfs {
            Some(id) => match Amlfs::open(id, &a.mount).await {
                Ok(fs) => Some(fs),
                Err(e) => {
                    log(ctx, "epilog", &format!("{e}: copying directly"));
                    None
                }
            },
            None => None,
        };
        for (i, (dir, url)) in d.stage_out.iter().enumerate() {
            let mut req = ExportRequest {
                job: format!("slurm-{}", job_id()),
                paths: vec![String::new()],
                dry_run: false,
                auto: false,
                cancel: None,
                detach: false,
            };
            let archive = match via_hsm(ctx, "epilog", amlfs.as_ref(), url, dir) {
                Ok(archive) => archive,
                Err(e) => {
                    failures.push(format!("{} -> {url}: {e}", dir.display()));
                    continue;
                }
            };
            let mover: Result<Box<dyn Mover>, CliError> = match archive {
                Some((fs, prefix)) => {
                    req.job = format!("slurm-{}-out-{}", job_id(), i + 1);
                    req.paths = vec![prefix];
                    fs.mover(ctx, url).map(|m| Box::new(m) as Box<dyn Mover>)
                }
                None => match JobUser::from_env() {
                    Some(user) => user
                        .open_dir(dir)
                        .map_err(|e| CliError::Read(format!("cannot export {}", dir.display()), e))
                        .and_then(|pinned| {
                            let m = mover(ctx, url, dir)?.for_job(user.uid, user.gid, pinned);
                            Ok(Box::new(m) as Box<dyn Mover>)
                        }),
                    None => mover(ctx, url, dir).map(|m| Box::new(m) as Box<dyn Mover>),
                },
            };
            let result = match mover {
                Ok(m) => m
                    .export(req, Box::new(|_| {}))
                    .await
                    .map_err(|e| causes(&e)),
                Err(e) => Err(causes(&e)),
            };
            match result {
                Ok(r) if r.errors.is_empty() => log(
                    ctx,
                    "epilog",
                    &format!("{} -> {url}: {}", dir.display(), r.summary()),
                ),
                Ok(r) => failures.push(format!(
                    "{} -> {url}: {}",
                    dir.display(),
                    r.errors.join("; ")
                )),
                Err(e) => failures.push(format!("{} -> {url}: {e}", dir.display())),
            }
        }
        failures
    };
    let failures = match tokio::time::timeout(a.timeout, work).await {
        Ok(f) => f,
        Err(_) => d
            .stage_out
            .iter()
            .map(|(dir, url)| format!("{} -> {url}: not done after {:?}", dir.display(), a.timeout))
            .collect(),
    };
    if !failures.is_empty() {
        for f in &failures {
            log(ctx, "epilog", &format!("FAILED {f}"));
        }
        // Recorded for `stage status` and whoever reruns the export; the node stays up.
        let record = serde_json::json!({ "job": job_id(), "failures": failures });
        let _ = std::fs::write(
            ctx.state_dir
                .join("slurm")
                .join(format!("epilog-{}.json", job_id())),
            record.to_string(),
        );
    }
    Ok(Exit::Success)
}
