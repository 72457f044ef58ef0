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

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
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
    // Steps before the one asked about are followed too: what they will write decides it.
    let mut upstream = crate::engine::upstream::Upstream::default();
    // Opened only for an import to follow: explaining needs no credentials otherwise.
    let mut backends = None;
    for step in &pipeline.steps {
        if let Action::Import(i) = &step.action
            && root.is_dir()
            // An AMLFS job's dry run names no files: nothing to follow, so no listing.
            && !(pipeline.target == crate::spec::Target::Azure
                && i.mover == crate::spec::MoverKind::Hsm)
        {
            // What the import would bring: the same dry run `plan` does.
            if backends.is_none() {
                backends = Some(crate::target::backends(
                    &pipeline,
                    &ctx.state_dir,
                    journal.clone(),
                )?);
            }
            let Some(b) = &backends else { continue };
            let r = b.import_dry_run(i).await?;
            for path in &r.planned {
                upstream.will_write_path(&step.name, path);
            }
        }
        let Action::Process(p) = &step.action else {
            continue;
        };
        let shown = a.step.as_ref().is_none_or(|s| s == &step.name);
        if !root.is_dir() {
            if shown {
                println!(
                    "{}: the file system does not exist yet, so every task will run",
                    step.name
                );
            }
            continue;
        }
        let expand_err =
            |e: tasks::ExpandError| CliError::Usage(format!("step {}: {e}", step.name));
        let list = tasks::expand(&step.name, p, &root, &pipeline.vars).map_err(expand_err)?;
        let keys: std::collections::BTreeSet<&str> = (0..list.len()).map(|i| list.key(i)).collect();
        let born = upstream.new_tasks(p, &keys);
        if list.is_empty() && born.is_empty() && shown {
            println!("{}: no input matches {}", step.name, p.foreach.join(", "));
        }
        let mut will_write = Vec::new();
        for (key, by) in &born {
            let task = list.task_for(key).map_err(expand_err)?;
            let why = vec![tasks::Why::Upstream {
                path: key.clone(),
                by: by.clone(),
            }];
            will_write.push(task.clone());
            if !shown || a.task.as_ref().is_some_and(|t| !key.contains(t.as_str())) {
                continue;
            }
            if ctx.output == OutputFormat::Json {
                out.push(serde_json::json!({
                    "step": step.name, "task": key, "will_run": true, "reasons": why,
                    "last_run": null,
                }));
            } else {
                println!(
                    "{}/{key}: a new task: input {key} will be written by {by}",
                    step.name
                );
            }
        }
        for task in list.tasks() {
            let task = task.map_err(expand_err)?;
            let now = tasks::current(&root, &task);
            let done = journal.done(&pipeline.name, &step.name, &task.key)?;
            let mut why = tasks::reasons(&root, &task, &now, done.as_ref());
            if why.is_empty()
                && let Some(w) = upstream.touches(p, &task)
            {
                why.push(w);
            }
            if !why.is_empty() {
                will_write.push(task.clone());
            }
            if !shown
                || a.task
                    .as_ref()
                    .is_some_and(|t| !task.key.contains(t.as_str()))
            {
                continue;
            }
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
        for task in &will_write {
            upstream.will_write(&step.name, task);
        }
    }
    if ctx.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(Exit::Success)
}
