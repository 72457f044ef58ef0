//! `stage import` and `stage export`: one-shot copies between a blob container and a
//! directory, shaped like `azcopy copy`, with the pipelines' AMLFS semantics and journal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CliError, Ctx};
use crate::exit::Exit;
use crate::mover::{BlobMover, ExportRequest, ImportRequest, JobStatus, Mover, Progress};
use crate::report::OutputFormat;
use crate::spec::ConflictMode;
use crate::store::{self, BlobStore};

const CREDENTIALS: &str = "\
Blob side: https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX], or an emulator's
http://127.0.0.1:10000/ACCOUNT/CONTAINER[/PREFIX]; a plain path is a directory that plays
a container. Blob names are taken relative to PREFIX.

Credentials, as the az CLI finds them (never on the command line):
  AZURE_STORAGE_CONNECTION_STRING      AccountName+AccountKey, or SharedAccessSignature
  AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_KEY
  AZURE_STORAGE_SAS_TOKEN
  otherwise Microsoft Entra ID: workload identity, AZURE_CLIENT_SECRET, managed identity
  (STAGE_AZURE_CREDENTIAL=managed-identity), or `az login`.";

#[derive(Debug, clap::Args)]
#[command(after_help = CREDENTIALS)]
pub struct ImportArgs {
    /// Container URL (with optional prefix) to copy from.
    pub source: String,
    /// Directory to copy into (created if missing).
    pub dest: PathBuf,
    /// What to do with a path that exists and is not a clean copy of its blob (AMLFS
    /// conflictResolutionMode).
    #[arg(long, value_enum, default_value_t = ConflictMode::Fail)]
    pub conflict: ConflictMode,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
#[command(after_help = CREDENTIALS)]
pub struct ExportArgs {
    /// Directory to copy from.
    pub source: PathBuf,
    /// Container URL (with optional prefix) to copy new and changed files into.
    pub dest: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// Errors (unusable names, failed files) tolerated before the job stops: 0 stops at the
    /// first, -1 never stops.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub max_errors: i64,
    /// Decide and count, copy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Files in flight at once [default: 8 per core, 16 to 64, for a container URL; one per
    /// core for a directory].
    #[arg(long)]
    pub transfers: Option<usize>,
}

fn open(container: &str) -> Result<Arc<dyn BlobStore>, CliError> {
    store::open(container).map_err(|e| CliError::Usage(format!("{container}: {e}")))
}

/// The journal namespace for a directory: its absolute path.
pub(super) fn namespace(dir: &std::path::Path) -> String {
    format!(
        "dir:{}",
        std::path::absolute(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
    )
}

fn mover(
    ctx: &Ctx,
    dir: &std::path::Path,
    store: Arc<dyn BlobStore>,
    c: &Common,
) -> Result<BlobMover, CliError> {
    let journal = ctx.open_journal(false)?;
    let transfers = c.transfers.unwrap_or_else(|| store.default_transfers());
    Ok(BlobMover::new(
        namespace(dir),
        dir.to_path_buf(),
        store,
        journal,
        transfers,
    ))
}

/// Files, bytes, rate and ETA on a terminal; nothing otherwise (the summary says it all).
fn progress(ctx: &Ctx, verb: &'static str) -> (Progress, Option<indicatif::ProgressBar>) {
    if ctx.quiet || ctx.output != OutputFormat::Auto || !std::io::stderr().is_terminal() {
        return (Box::new(|_| {}), None);
    }
    let bar = crate::report::transfer::spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    let b = bar.clone();
    let start = Instant::now();
    (
        Box::new(move |tally| {
            b.set_message(crate::report::transfer::line(verb, &tally, start.elapsed()));
        }),
        Some(bar),
    )
}

fn finish(
    ctx: &Ctx,
    json: serde_json::Value,
    summary: String,
    errors: &[String],
    ok: bool,
) -> Exit {
    if ctx.output == OutputFormat::Json {
        println!("{json}");
    } else if !ctx.quiet || !ok {
        for e in errors.iter().take(20) {
            eprintln!("  {e}");
        }
        if errors.len() > 20 {
            eprintln!("  … and {} more", errors.len() - 20);
        }
        eprintln!("{summary}");
    }
    if ok { Exit::Success } else { Exit::Failed }
}

/// `import done: 5 files imported …`, `import failed: …`, or for a dry run `import dry run,
/// nothing changed: 5 files to import …` (the summary given is the matching one).
fn outcome(
    verb: &str,
    ok: bool,
    dry_run: bool,
    summary: String,
    took: std::time::Duration,
) -> String {
    let head = match (dry_run, ok) {
        (true, _) => format!("{verb} dry run, nothing changed"),
        (false, true) => format!("{verb} done"),
        (false, false) => format!("{verb} failed"),
    };
    format!("{head}: {summary} in {:.1}s", took.as_secs_f64())
}

pub async fn import(ctx: &Ctx, a: ImportArgs) -> Result<Exit, CliError> {
    if !store::is_url(&a.source) && !std::path::Path::new(&a.source).is_dir() {
        return Err(CliError::Usage(format!(
            "{}: neither a container URL nor a directory",
            a.source
        )));
    }
    if store::is_url(&a.dest.to_string_lossy()) {
        return Err(CliError::Usage(format!(
            "{}: a URL where the directory belongs (import copies a container to a \
             directory: stage import URL DIR)",
            a.dest.display()
        )));
    }
    let store = open(&a.source)?;
    if !a.common.dry_run {
        std::fs::create_dir_all(&a.dest)
            .map_err(|e| CliError::Read(format!("cannot create {}", a.dest.display()), e))?;
    }
    let mover = mover(ctx, &a.dest, store.clone(), &a.common)?;
    let (cb, bar) = progress(ctx, "imported");
    let started = Instant::now();
    let report = mover
        .import(
            ImportRequest {
                job: "stage-import".into(),
                prefixes: vec![String::new()],
                conflict: a.conflict,
                max_errors: a.common.max_errors,
                dry_run: a.common.dry_run,
                cancel: None,
                detach: false,
            },
            cb,
        )
        .await
        .map_err(|source| CliError::Transfer {
            what: format!("import from {}", store.describe()),
            source,
        })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let ok = report.status != JobStatus::Failed;
    let mut summary = outcome(
        "import",
        ok,
        a.common.dry_run,
        if a.common.dry_run {
            report.planned_summary()
        } else {
            report.summary()
        },
        started.elapsed(),
    );
    if let Some(c) = &report.conflict {
        summary += &format!("; stopped at conflict {c} (see --conflict)");
    }
    if report.found_nothing() {
        summary += &format!("; no blobs under {}", store.describe());
    }
    if a.common.dry_run && ctx.verbose && ctx.output != OutputFormat::Json {
        // Like `rsync -nv`: the files the import would write, one per line on stdout.
        for name in &report.planned {
            println!("{name}");
        }
    }
    let json = serde_json::json!({ "command": "import", "ok": ok, "report": report });
    Ok(finish(ctx, json, summary, &report.errors, ok))
}

pub async fn export(ctx: &Ctx, a: ExportArgs) -> Result<Exit, CliError> {
    if !a.source.is_dir() {
        let hint = match store::is_url(&a.source.to_string_lossy()) {
            true => " (export copies a directory to a container: stage export DIR URL)",
            false => "",
        };
        return Err(CliError::Usage(format!(
            "{}: not a directory{hint}",
            a.source.display()
        )));
    }
    let store = open(&a.dest)?;
    let mover = mover(ctx, &a.source, store.clone(), &a.common)?;
    let (cb, bar) = progress(ctx, "exported");
    let started = Instant::now();
    let report = mover
        .export(
            ExportRequest {
                job: "stage-export".into(),
                paths: vec![String::new()],
                dry_run: a.common.dry_run,
                auto: false,
                cancel: None,
                detach: false,
            },
            cb,
        )
        .await
        .map_err(|source| CliError::Transfer {
            what: format!("export to {}", store.describe()),
            source,
        })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let ok = a.common.max_errors < 0 || report.errors.len() as i64 <= a.common.max_errors;
    let mut summary = outcome(
        "export",
        ok,
        a.common.dry_run,
        if a.common.dry_run {
            report.planned_summary()
        } else {
            report.summary()
        },
        started.elapsed(),
    );
    if report.exported + report.unchanged + report.errors.len() as u64 == 0 {
        summary += &format!("; no files in {}", a.source.display());
    }
    let json = serde_json::json!({ "command": "export", "ok": ok, "report": report });
    Ok(finish(ctx, json, summary, &report.errors, ok))
}
