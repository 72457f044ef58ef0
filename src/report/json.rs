use std::io::Write;
use std::sync::Mutex;

use crate::engine::events::{Event, Reporter};

/// One JSON object per line on stdout, for machines (`--output json`).
#[derive(Default)]
pub struct JsonReporter {
    out: Mutex<()>,
}

impl Reporter for JsonReporter {
    fn event(&self, event: &Event) {
        let _guard = self.out.lock();
        let mut out = std::io::stdout().lock();
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(out, "{line}");
        }
    }
}
