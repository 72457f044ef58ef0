use std::io::Write;
use std::path::PathBuf;

use super::{CliError, Ctx, load};
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file whose pool to use.
    pub file: PathBuf,
    /// The command, run by `sh -c` on every host (put it after `--`).
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

/// Runs a command once on every host of the pool and prints each line as `host: line`.
pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    let p = load(&a.file)?;
    let state = std::path::absolute(&ctx.state_dir).unwrap_or_else(|_| ctx.state_dir.clone());
    let executor = crate::target::executor(&p, &state)?;
    let results = executor.broadcast(&a.command.join(" ")).await;
    let mut failed = 0;
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for r in &results {
        for line in String::from_utf8_lossy(&r.stdout).lines() {
            let _ = writeln!(out, "{}: {line}", r.host);
        }
        for line in String::from_utf8_lossy(&r.stderr).lines() {
            let _ = writeln!(err, "{}: {line}", r.host);
        }
        match &r.exit {
            Ok(e) if e.success() => {}
            Ok(e) => {
                failed += 1;
                let _ = writeln!(err, "{}: {}", r.host, e.describe());
            }
            Err(why) => {
                failed += 1;
                let _ = writeln!(err, "{}: cannot run: {why}", r.host);
            }
        }
    }
    if failed > 0 {
        let _ = writeln!(err, "stage: failed on {failed} of {} hosts", results.len());
        return Ok(Exit::Failed);
    }
    Ok(Exit::Success)
}
