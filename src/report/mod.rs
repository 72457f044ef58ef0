//! Reporters render engine events: log lines, progress bars, or JSON; `html` renders a
//! recorded run from the journal.

pub mod html;
mod json;
mod lines;
mod progress;
mod snapshot;
pub mod transfer;

use std::io::IsTerminal;
use std::sync::Arc;

pub use json::JsonReporter;
pub use lines::LineReporter;
pub use progress::ProgressReporter;
pub use snapshot::{Progress, SnapshotReporter};

use crate::engine::events::Reporter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Progress bars on a terminal, log lines otherwise.
    Auto,
    /// Log lines, even on a terminal.
    Lines,
    /// One JSON event per line on stdout.
    Json,
}

/// Picks the reporter: bars only when stderr is a terminal, so cron mail and CI logs stay clean.
pub fn choose(format: OutputFormat, quiet: bool, verbose: bool) -> Arc<dyn Reporter> {
    match format {
        OutputFormat::Json => Arc::new(JsonReporter),
        OutputFormat::Auto if !quiet && std::io::stderr().is_terminal() => {
            Arc::new(ProgressReporter::new(verbose))
        }
        _ => Arc::new(LineReporter::new(quiet, verbose)),
    }
}

/// Sends every event to several reporters.
pub struct Tee(pub Vec<Arc<dyn Reporter>>);

impl Reporter for Tee {
    fn event(&self, event: &crate::engine::events::Event) {
        for r in &self.0 {
            r.event(event);
        }
    }
    fn finish(&self) {
        for r in &self.0 {
            r.finish();
        }
    }
}

pub(crate) fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}
