use std::path::PathBuf;

use super::{CliError, Ctx, load};
use crate::exit::Exit;
use crate::report::html::{RunView, StepView, render};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub file: PathBuf,
    /// Report this run instead of the latest.
    #[arg(long)]
    pub run: Option<u64>,
    /// Where to write the page (`-` for standard output).
    /// [default: STATE_DIR/reports/PIPELINE-run-N.html]
    #[arg(short = 'o', long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// Lines of a failed task's stderr shown in the report.
const TAIL_LINES: usize = 20;

/// Writes one run's HTML report and prints where it went.
pub fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    let pipeline = load(&a.file)?;
    let journal = ctx.open_journal(false)?;
    let run = match a.run {
        Some(id) => journal.run(id)?.filter(|r| r.pipeline == pipeline.name),
        None => journal.latest_run(&pipeline.name)?,
    };
    let Some(run) = run else {
        return Err(CliError::Usage(match a.run {
            Some(id) => format!("pipeline {} has no run {id}", pipeline.name),
            None => format!("pipeline {} has no runs yet", pipeline.name),
        }));
    };
    let state = std::path::absolute(&ctx.state_dir).unwrap_or_else(|_| ctx.state_dir.clone());
    let mut steps = Vec::new();
    for (index, step) in journal.steps(run.id)? {
        let tasks = journal.tasks(run.id, index, &pipeline.name, &step.name)?;
        let logs = crate::engine::tasks::log_dir(&state, &pipeline.name, run.id, &step.name);
        let stderr_tails = tasks
            .iter()
            .filter(|t| t.state == crate::journal::TaskState::Failed)
            .map(|t| {
                let (_, err) = crate::engine::tasks::log_files(&logs, &t.key, t.attempts.max(1));
                let tail = crate::engine::tasks::log_tail(&err, TAIL_LINES);
                (t.key.clone(), tail.join("\n"))
            })
            .filter(|(_, tail)| !tail.is_empty())
            .collect();
        steps.push(StepView {
            step,
            tasks,
            stderr_tails,
        });
    }
    let view = RunView {
        file: a.file.display().to_string(),
        now_ms: crate::journal::now_ms(),
        run,
        steps,
    };
    let page = render(&view);
    let out = a.out.unwrap_or_else(|| {
        crate::report::html::default_path(&ctx.state_dir, &pipeline.name, view.run.id)
    });
    if out.as_os_str() == "-" {
        use std::io::Write;
        let _ = std::io::stdout().write_all(page.as_bytes());
        return Ok(Exit::Success);
    }
    // Never half a page for a browser or web server reading it meanwhile.
    out.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| crate::durable::write(&out, page.as_bytes()))
        .map_err(|e| CliError::Read(format!("cannot write report {}", out.display()), e))?;
    if !ctx.quiet {
        println!("{}", out.display());
    }
    Ok(Exit::Success)
}
