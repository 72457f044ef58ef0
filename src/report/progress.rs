use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::lines::render;
use crate::engine::events::{Event, Reporter};

/// A live bar for the step in progress, with the same lines as [`super::LineReporter`] above it.
pub struct ProgressReporter {
    verbose: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl ProgressReporter {
    pub fn new(verbose: bool) -> Self {
        ProgressReporter {
            verbose,
            bar: Mutex::new(None),
        }
    }

    fn print(&self, bar: &Option<ProgressBar>, text: &str) {
        match bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Reporter for ProgressReporter {
    fn event(&self, event: &Event) {
        let Ok(mut bar) = self.bar.lock() else { return };
        match event {
            Event::StepStarted { step, .. } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                let b = super::transfer::spinner().with_message(step.clone());
                b.enable_steady_tick(Duration::from_millis(120));
                *bar = Some(b);
            }
            Event::TasksPlanned { step, to_run, .. } => {
                if let Some(b) = bar.as_ref() {
                    b.set_length(*to_run as u64);
                    b.set_position(0);
                    b.set_style(
                        ProgressStyle::with_template(
                            "{spinner} {msg} [{bar:30}] {pos}/{len} tasks  {per_sec}  eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_message(step.clone());
                }
            }
            Event::TaskFinished { .. } => {
                if let Some(b) = bar.as_ref() {
                    b.inc(1);
                }
            }
            Event::Transfer { step, tally } => {
                if let Some(b) = bar.as_ref() {
                    b.set_message(super::transfer::line(
                        &format!("{step}:"),
                        tally,
                        b.elapsed(),
                    ));
                }
            }
            Event::StepFinished { .. } | Event::StepFailed { .. } | Event::RunFinished { .. } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }
            _ => {}
        }
        if let Some(text) = render(event, self.verbose) {
            self.print(&bar, &text);
        }
    }

    fn finish(&self) {
        if let Ok(mut bar) = self.bar.lock()
            && let Some(b) = bar.take()
        {
            b.finish_and_clear();
        }
    }
}
