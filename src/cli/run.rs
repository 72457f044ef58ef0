use std::path::PathBuf;

use super::{CliError, Ctx, load};
use crate::engine::{Cancel, Engine, RunOptions};
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub file: PathBuf,
    /// Start a new run instead of resuming an unfinished one; with `teardown`, run even when
    /// the container and the pipeline are as the last run left them.
    #[arg(long)]
    pub new: bool,
    /// Wait for another stage process to release the state directory instead of exiting 3.
    #[arg(long)]
    pub wait: bool,
    /// Let teardown delete a file system that this state directory did not create.
    #[arg(long)]
    pub force: bool,
    /// On Ctrl-C, leave AMLFS import jobs running instead of cancelling them; the next run
    /// finds them by name.
    #[arg(long)]
    pub detach: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    let pipeline = load(&a.file)?;
    let journal = ctx.open_journal(a.wait)?;
    let backends = crate::target::backends(&pipeline, &ctx.state_dir, journal.clone())?;
    let cancel = Cancel::default();
    listen_for_signals(cancel.clone());
    let engine = Engine {
        pipeline,
        journal,
        state_dir: std::path::absolute(&ctx.state_dir).unwrap_or_else(|_| ctx.state_dir.clone()),
        reporter: std::sync::Arc::new(crate::report::Tee(vec![
            crate::report::choose(ctx.output, ctx.quiet, ctx.verbose),
            std::sync::Arc::new(crate::report::SnapshotReporter::new(&ctx.state_dir)),
        ])),
        backends,
        cancel,
    };
    engine
        .run(RunOptions {
            new: a.new,
            force: a.force,
            detach: a.detach,
        })
        .await?;
    Ok(Exit::Success)
}

/// SIGINT (Ctrl-C) and SIGTERM (cron, Slurm, systemd) stop the run cleanly: running tasks are
/// killed and recorded as interrupted, so the next `stage run` resumes.
fn listen_for_signals(cancel: Cancel) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term_recv = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term_recv => {}
        }
        cancel.trigger();
    });
}
