use std::io::Write;
use std::path::PathBuf;

use super::{CliError, Ctx, load};
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub file: PathBuf,
    /// STEP/TASK, e.g. `qc/samples/S1.fastq.gz` (the task key as `stage status --tasks` shows it).
    pub task: String,
    /// Print standard error instead of standard output.
    #[arg(long)]
    pub stderr: bool,
    /// Which attempt (default: the last).
    #[arg(long)]
    pub attempt: Option<u32>,
}

/// The task key the user means: exact, else the one task whose key ends with `/TEXT` or whose
/// file name starts with TEXT (`qc/S1` for `qc/samples/S1.fastq.gz`).
fn resolve_key(
    journal: &crate::journal::Journal,
    pipeline: &str,
    step: &str,
    index: usize,
    run: u64,
    text: &str,
) -> Result<String, CliError> {
    let mut keys: Vec<String> = journal
        .done_scan(pipeline, step)
        .filter_map(|d| d.ok().map(|(k, _)| k))
        .collect();
    keys.extend(
        journal
            .tasks(run, index, pipeline, step)?
            .into_iter()
            .map(|t| t.key),
    );
    keys.sort();
    keys.dedup();
    if keys.iter().any(|k| k == text) {
        return Ok(text.to_string());
    }
    let name = |k: &str| k.rsplit('/').next().unwrap_or(k).to_string();
    let hits: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with(&format!("/{text}")) || name(k).starts_with(text))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Ok(text.to_string()),
        many => Err(CliError::Usage(format!(
            "`{text}` matches {} tasks of step `{step}`: {}{}",
            many.len(),
            many.iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if many.len() > 5 { ", …" } else { "" }
        ))),
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    let pipeline = load(&a.file)?;
    let (step, key) = a
        .task
        .split_once('/')
        .ok_or_else(|| CliError::Usage(format!("`{}` is not STEP/TASK", a.task)))?;
    let Some(index) = pipeline.steps.iter().position(|s| s.name == step) else {
        return Err(CliError::Usage(format!(
            "pipeline {} has no step `{step}`",
            pipeline.name
        )));
    };
    let journal = ctx.open_journal(false)?;
    let Some(run) = journal.latest_run(&pipeline.name)? else {
        return Err(CliError::Usage(format!(
            "pipeline {} has no runs yet",
            pipeline.name
        )));
    };
    let key = resolve_key(&journal, &pipeline.name, step, index, run.id, key)?;
    let key = key.as_str();
    // The latest attempt: a failure recorded in a run after the last success, or that success.
    let done = journal.done(&pipeline.name, step, key)?;
    let done_run = done.as_ref().map_or(0, |d| d.run);
    let mut found = None;
    for id in (done_run + 1..=run.id).rev() {
        if let Some(t) = journal.task(id, index, key)? {
            found = Some((id, t));
            break;
        }
    }
    if found.is_none()
        && let Some(d) = done
        && let Some(t) = d.task
    {
        found = Some((d.run, t));
    }
    let Some((run_id, task)) = found else {
        return Err(CliError::Usage(format!(
            "no task `{key}` has run in step `{step}` (see `stage status {} --tasks`)",
            a.file.display()
        )));
    };
    let attempt = a.attempt.unwrap_or(task.attempts.max(1));
    let dir = crate::engine::tasks::log_dir(
        &std::path::absolute(&ctx.state_dir).unwrap_or_else(|_| ctx.state_dir.clone()),
        &pipeline.name,
        run_id,
        step,
    );
    let (out, err) = crate::engine::tasks::log_files(&dir, key, attempt);
    let path: PathBuf = if a.stderr { err } else { out };
    let bytes = std::fs::read(&path)
        .map_err(|e| CliError::Read(format!("cannot read log {}", path.display()), e))?;
    let _ = std::io::stdout().write_all(&bytes);
    Ok(Exit::Success)
}
