use std::io::Write;

use crate::engine::events::{Event, Reporter};

/// One JSON object per line on stdout, for machines (`--output json`).
#[derive(Default)]
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn event(&self, event: &Event) {
        // The stdout lock keeps each line whole when tasks finish concurrently.
        let mut out = std::io::stdout().lock();
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(out, "{line}");
        }
    }
}
