//! Command line: one file per subcommand; errors are typed here and rendered once in main.

mod completions;
mod emulator;
mod exec;
mod explain;
mod fs;
mod logs;
mod plan;
mod report;
mod run;
mod schema;
mod slurm;
mod status;
mod transfer;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::engine::EngineError;
use crate::exit::Exit;
use crate::journal::{Journal, JournalError};
use crate::report::OutputFormat;
use crate::spec::{LoadError, Pipeline, SpecError};
use crate::target::TargetError;

const AFTER_HELP: &str = "\
Exit codes:
  0    success, or nothing to do
  1    a step or task failed (run again to resume)
  2    invalid pipeline file or arguments
  3    another stage process holds the state directory
  4    the journal could not be read or written
  5    internal error
  130  interrupted (run again to resume)

Examples:
  stage validate pipelines/genomics.yaml
  stage plan pipelines/genomics.yaml
  stage run pipelines/genomics.yaml
  stage status pipelines/genomics.yaml
  stage explain pipelines/genomics.yaml qc";

/// Stage data into Azure Managed Lustre, process it across a pool, export the results.
///
/// One pipeline file describes the lifecycle: ensure the file system, import from blob,
/// fan tasks out, export back to blob, tear down. Progress is journaled under the state
/// directory, so an interrupted run resumes where it stopped and a finished one does nothing.
#[derive(Debug, Parser)]
#[command(name = "stage", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Directory holding the journal, task logs and the local target's file systems.
    #[arg(long, global = true, env = "STAGE_STATE_DIR", default_value = "state")]
    pub state_dir: PathBuf,

    /// How to report progress.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Auto)]
    pub output: OutputFormat,

    /// Silent on success, one error line on failure (for cron).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Also print every task as it starts and ends (and, for `import --dry-run`, every file).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline, resuming its latest unfinished run.
    Run(run::Args),
    /// Show what `run` would do, without doing any of it.
    Plan(plan::Args),
    /// Check pipeline files and report every problem with its line and column.
    Validate(validate::Args),
    /// Show runs, steps, task counts and failures.
    Status(status::Args),
    /// Print a task's output.
    Logs(logs::Args),
    /// Write a run's HTML report: step timeline, tasks per host, slowest tasks, failures.
    Report(report::Args),
    /// Say why each task will or will not run.
    Explain(explain::Args),
    /// Run a command once on every host of a pipeline's pool (like pdsh).
    Exec(exec::Args),
    /// Copy a blob container (or prefix) into a directory, with AMLFS conflict handling.
    Import(transfer::ImportArgs),
    /// Copy a directory's new and changed files into a blob container, verified.
    Export(transfer::ExportArgs),
    /// File-system commands: `stage fs show FILE`.
    Fs(fs::Args),
    /// Slurm Prolog/Epilog hooks: `stage slurm prolog`, `stage slurm epilog`.
    Slurm(slurm::Args),
    /// Serve the ARM/AMLFS emulator, to run azure-target pipelines offline.
    Emulator(emulator::Args),
    /// Print the JSON Schema of pipeline files (for editors).
    Schema,
    /// Print shell completions.
    Completions(completions::Args),
}

impl Command {
    /// Commands that only read and print. `stage status | head` closes the pipe early: these
    /// then end quietly, as any Unix tool does, instead of panicking on the failed write.
    /// Commands with side effects are not killed by a closed pipe mid-step; their writes to
    /// it fail and are ignored.
    pub fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::Plan(_)
                | Command::Validate(_)
                | Command::Status(_)
                | Command::Logs(_)
                | Command::Explain(_)
                | Command::Report(_)
                | Command::Fs(fs::Args {
                    command: fs::FsCommand::Show { .. }
                })
                | Command::Schema
                | Command::Completions(_)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Read(String, #[source] std::io::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Transfer {
        what: String,
        #[source]
        source: crate::mover::MoverError,
    },
}

impl From<LoadError> for CliError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Invalid(s) => CliError::Spec(s),
            LoadError::Read { path, source } => CliError::Read(
                format!("cannot read pipeline file {}", path.display()),
                source,
            ),
        }
    }
}

impl CliError {
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Target(crate::target::TargetError::State(_)) => Exit::State,
            CliError::Spec(_) | CliError::Read(..) | CliError::Target(_) | CliError::Usage(_) => {
                Exit::Invalid
            }
            CliError::Journal(JournalError::Locked(_))
            | CliError::Engine(EngineError::Journal(JournalError::Locked(_))) => Exit::Locked,
            CliError::Journal(_) | CliError::Engine(EngineError::Journal(_)) => Exit::State,
            CliError::Engine(EngineError::Interrupted) => Exit::Interrupted,
            CliError::Engine(_) => Exit::Failed,
            CliError::Transfer {
                source: crate::mover::MoverError::Journal(_),
                ..
            } => Exit::State,
            CliError::Transfer { .. } => Exit::Failed,
        }
    }
}

pub struct Ctx {
    pub state_dir: PathBuf,
    pub output: OutputFormat,
    pub quiet: bool,
    pub verbose: bool,
}

impl Ctx {
    pub fn open_journal(&self, wait: bool) -> Result<Arc<Journal>, CliError> {
        Ok(Arc::new(Journal::open(&self.state_dir, wait)?))
    }
}

pub fn load(path: &Path) -> Result<Pipeline, CliError> {
    Ok(crate::spec::load(path)?)
}

/// Runs a parsed command line; the caller renders errors and exits.
pub async fn main(cli: Cli) -> Result<Exit, CliError> {
    let ctx = Ctx {
        state_dir: cli.state_dir,
        output: cli.output,
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    match cli.command {
        Command::Run(a) => run::run(&ctx, a).await,
        Command::Plan(a) => plan::run(&ctx, a).await,
        Command::Validate(a) => validate::run(&ctx, a),
        Command::Status(a) => status::run(&ctx, a).await,
        Command::Logs(a) => logs::run(&ctx, a),
        Command::Report(a) => report::run(&ctx, a),
        Command::Explain(a) => explain::run(&ctx, a).await,
        Command::Exec(a) => exec::run(&ctx, a).await,
        Command::Import(a) => transfer::import(&ctx, a).await,
        Command::Export(a) => transfer::export(&ctx, a).await,
        Command::Emulator(a) => emulator::run(&ctx, a).await,
        Command::Fs(a) => fs::run(&ctx, a).await,
        Command::Slurm(a) => slurm::run(&ctx, a).await,
        Command::Schema => {
            schema::run();
            Ok(Exit::Success)
        }
        Command::Completions(a) => {
            completions::run(a);
            Ok(Exit::Success)
        }
    }
}

/// Prints every problem of a pipeline file with its snippet, then a one-line total.
pub fn render_spec_error(e: &SpecError) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let handler = miette::GraphicalReportHandler::new_themed(if tty {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    });
    for (report, p) in e.reports().iter().zip(&e.problems) {
        // The location first, in the form editors and CI annotate: file:line:col.
        eprintln!(
            "{}:{}:{}: error: {}",
            e.path.display(),
            p.line,
            p.column,
            p.message
        );
        let mut out = String::new();
        if handler.render_report(&mut out, report.as_ref()).is_ok() {
            eprint!("{out}");
        }
    }
    eprintln!("error: {e}");
}
