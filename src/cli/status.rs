use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{CliError, Ctx, load};
use crate::exit::Exit;
use crate::journal::{RunRecord, TaskState};
use crate::report::OutputFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pipeline file: show its latest run in detail. Without it, list recent runs.
    pub file: Option<PathBuf>,
    /// List every task of the run, not just counts and failures.
    #[arg(long)]
    pub tasks: bool,
    /// Show this run instead of the latest.
    #[arg(long)]
    pub run: Option<u64>,
}

/// UTC timestamp, e.g. `2026-11-25 17:01:05Z`.
fn time(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    crate::clock::readable(ms / 1000)
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    let journal = match ctx.open_journal(false) {
        Ok(j) => j,
        Err(CliError::Journal(crate::journal::JournalError::Locked(lock))) => {
            // A run holds the journal: show what it says about itself instead. The snapshot
            // has no task list, so a request for one gets the documented "locked" exit (3)
            // rather than an answer of a different shape.
            let snapshot = if a.tasks || a.run.is_some() {
                None
            } else {
                crate::report::SnapshotReporter::read(&ctx.state_dir)
            };
            let Some(p) = snapshot else {
                return Err(CliError::Journal(crate::journal::JournalError::Locked(
                    lock,
                )));
            };
            if ctx.output == OutputFormat::Json {
                println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
            } else {
                println!(
                    "{} run {}: running (pid {}), {}; as of {}",
                    p.pipeline,
                    p.run,
                    p.pid,
                    p.step_line(),
                    time(Some(p.updated_ms))
                );
            }
            return Ok(Exit::Success);
        }
        Err(e) => return Err(e),
    };
    let json = ctx.output == OutputFormat::Json;
    if a.file.is_none() && !json {
        slurm_failures(ctx);
    }
    let Some(file) = a.file else {
        let runs = journal.runs()?;
        let recent: Vec<&RunRecord> = runs.iter().rev().take(20).collect();
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&recent).unwrap_or_default()
            );
        } else if recent.is_empty() {
            println!("no runs recorded in {}", ctx.state_dir.display());
        } else {
            println!("  RUN  PIPELINE             STATUS       FILE");
            for r in recent {
                println!(
                    "{:>5}  {:<20} {:<12} {}",
                    r.id,
                    r.pipeline,
                    format!("{:?}", r.status).to_lowercase(),
                    r.file
                );
            }
        }
        return Ok(Exit::Success);
    };
    let pipeline = load(&file)?;
    let run = match a.run {
        Some(id) => journal.run(id)?.filter(|r| r.pipeline == pipeline.name),
        None => journal.latest_run(&pipeline.name)?,
    };
    let Some(run) = run else {
        if json {
            println!("null");
        } else {
            println!("{}: no runs yet", pipeline.name);
        }
        return Ok(Exit::Success);
    };
    let steps = journal.steps(run.id)?;
    let mut step_json = Vec::new();
    let mut lines = Vec::new();
    for (index, step) in &steps {
        let tasks = journal.tasks(run.id, *index, &pipeline.name, &step.name)?;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for t in &tasks {
            *counts
                .entry(format!("{:?}", t.state).to_lowercase())
                .or_default() += 1;
        }
        let failed: Vec<_> = tasks
            .iter()
            .filter(|t| t.state == TaskState::Failed)
            .collect();
        lines.push(
            format!(
                "  {:<10} {:<8} {:<7} {:>7}  {}",
                step.name,
                step.kind,
                format!("{:?}", step.state).to_lowercase(),
                step.finished_ms
                    .map(|f| crate::report::human_ms(f.saturating_sub(step.started_ms)))
                    .unwrap_or_default(),
                if counts.is_empty() {
                    String::new()
                } else {
                    counts
                        .iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
            .trim_end()
            .to_string(),
        );
        for t in &failed {
            lines.push(format!(
                "      failed {} after {} attempt(s): {}  (stage logs {} {}/{})",
                t.key,
                t.attempts,
                t.error.clone().unwrap_or_default(),
                file.display(),
                step.name,
                t.key
            ));
        }
        if a.tasks {
            for t in &tasks {
                lines.push(format!(
                    "      {:<12} {} attempts={} exit={} host={}",
                    format!("{:?}", t.state).to_lowercase(),
                    t.key,
                    t.attempts,
                    t.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    t.host.clone().unwrap_or_else(|| "-".into())
                ));
            }
        }
        step_json.push(serde_json::json!({
            "index": index,
            "step": step,
            "task_counts": counts,
            "tasks": if a.tasks { serde_json::to_value(&tasks).unwrap_or_default() } else { serde_json::Value::Null },
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "run": run, "steps": step_json }))
                .unwrap_or_default()
        );
    } else {
        println!(
            "{} run {}: {}  (started {}, finished {})",
            run.pipeline,
            run.id,
            format!("{:?}", run.status).to_lowercase(),
            time(Some(run.started_ms)),
            time(run.finished_ms)
        );
        if let Some(e) = &run.error {
            println!("  error: {e}");
        }
        if steps.is_empty() && run.fingerprint.is_some() {
            println!("  {}", crate::engine::unchanged::STATUS);
        }
        for l in lines {
            println!("{l}");
        }
        if pipeline.target == crate::spec::Target::Azure {
            // What Azure says now, not what the journal last saw; bounded, since status is
            // what people run when something is wrong.
            let line = tokio::time::timeout(
                std::time::Duration::from_secs(15),
                super::fs::health(&pipeline),
            )
            .await
            .unwrap_or_else(|_| Err("Azure did not answer within 15 s".into()));
            match line {
                Ok(l) => println!("  file system: {l}"),
                Err(e) => println!("  file system: cannot read it: {e}"),
            }
        }
    }
    Ok(Exit::Success)
}

/// Exports a Slurm epilog could not finish (it exits 0 so the node stays up; this is where
/// they surface).
fn slurm_failures(ctx: &Ctx) {
    let Ok(dir) = std::fs::read_dir(ctx.state_dir.join("slurm")) else {
        return;
    };
    let mut lines: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("epilog-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .flat_map(|v| {
            let job = v["job"].as_str().unwrap_or("?").to_string();
            v["failures"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |f| format!("  job {job}: {}", f.as_str().unwrap_or_default()))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    lines.sort();
    println!("Slurm epilog exports that failed (rerun with `stage export DIR URL`):");
    for l in lines {
        println!("{l}");
    }
}
