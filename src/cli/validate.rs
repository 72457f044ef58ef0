use std::path::PathBuf;

use super::{CliError, Ctx};
use crate::exit::Exit;
use crate::report::OutputFormat;
use crate::spec::LoadError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Checks every file; reports all problems of all files, then fails if any had one.
pub fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    let mut first_err = None;
    let mut results = Vec::new();
    for f in &a.files {
        match crate::spec::load(f) {
            Ok(p) => {
                if ctx.output == OutputFormat::Json {
                    results.push(serde_json::json!({ "file": f, "valid": true, "problems": [] }));
                } else if !ctx.quiet {
                    eprintln!(
                        "{}: ok ({} step{}, target {:?})",
                        f.display(),
                        p.steps.len(),
                        if p.steps.len() == 1 { "" } else { "s" },
                        p.target
                    );
                }
            }
            Err(LoadError::Invalid(e)) if a.files.len() > 1 || ctx.output == OutputFormat::Json => {
                if ctx.output == OutputFormat::Json {
                    results.push(
                        serde_json::json!({ "file": f, "valid": false, "problems": e.problems }),
                    );
                } else {
                    crate::cli::render_spec_error(&e);
                }
                first_err.get_or_insert(CliError::Usage(format!("{} is invalid", f.display())));
            }
            Err(e) => {
                if a.files.len() == 1 {
                    return Err(e.into());
                }
                let e: CliError = e.into();
                eprintln!("error: {e}");
                first_err.get_or_insert(e);
            }
        }
    }
    if ctx.output == OutputFormat::Json {
        println!("{}", serde_json::Value::Array(results));
    }
    Ok(if first_err.is_some() {
        Exit::Invalid
    } else {
        Exit::Success
    })
}
