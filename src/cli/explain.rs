use std::path::PathBuf;

use super::{CliError, Ctx, load};
use crate::engine::tasks;
use crate::exit::Exit;
use crate::report::OutputFormat;
use crate::spec::Action;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub file: PathBuf,
    /// Only this process step (default: all of them).
    pub step: Option<String>,
    /// Only tasks whose key contains this text.
    #[arg(long)]
    pub task: Option<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    let pipeline = load(&a.file)?;
    if let Some(s) = &a.step
        && !pipeline
            .steps
            .iter()
            .any(|x| &x.name == s && matches!(x.action, Action::Process(_)))
    {
        return Err(CliError::Usage(format!(
            "pipeline {} has no process step `{s}`",
            pipeline.name
        )));
    }
    let journal = ctx.open_journal(false)?;
    let root = crate::target::local_root(
        &pipeline,
        &std::path::absolute(&ctx.state_dir).unwrap_or_default(),
    );
    let mut out = Vec::new();
    for step in &pipeline.steps {
        let Action::Process(p) = &step.action else {
            continue;
        };
        if a.step.as_ref().is_some_and(|s| s != &step.name) {
            continue;
        }
        if !root.is_dir() {
            println!(
                "{}: the file system does not exist yet, so every task will run",
                step.name
            );
            continue;
        }
        let list = tasks::expand(&step.name, p, &root, &pipeline.vars)
            .map_err(|e| CliError::Usage(format!("step {}: {e}", step.name)))?;
        if list.is_empty() {
            println!("{}: no input matches {}", step.name, p.foreach.join(", "));
        }
        for task in list.tasks() {
            let task = task.map_err(|e| CliError::Usage(format!("step {}: {e}", step.name)))?;
            if a.task
                .as_ref()
                .is_some_and(|t| !task.key.contains(t.as_str()))
            {
                continue;
            }
            let now = tasks::current(&root, &task);
            let done = journal.done(&pipeline.name, &step.name, &task.key)?;
            let why = tasks::reasons(&root, &task, &now, done.as_ref());
            if ctx.output == OutputFormat::Json {
                out.push(serde_json::json!({
                    "step": step.name, "task": task.key, "will_run": !why.is_empty(),
                    "reasons": why, "last_run": done.as_ref().map(|d| d.run),
                }));
                continue;
            }
            if why.is_empty() {
                let last = done
                    .map(|d| format!(" (last ran in run {})", d.run))
                    .unwrap_or_default();
                println!(
                    "{}/{}: up to date{last}: command, inputs and outputs unchanged",
                    step.name, task.key
                );
            } else {
                println!("{}/{}: will run because", step.name, task.key);
                for w in why {
                    println!("    {w}");
                }
            }
        }
    }
    if ctx.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(Exit::Success)
}
