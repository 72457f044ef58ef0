use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Progress;
use super::human_ms;
use crate::engine::events::{Event, Reporter};

/// Plain lines on stderr: for logs, cron mail and pipes. `quiet` prints nothing.
pub struct LineReporter {
    quiet: bool,
    verbose: bool,
    beat: Mutex<Heartbeat>,
}

/// How often a long step says how far it has got, in a log nobody is watching live.
const EVERY: Duration = Duration::from_secs(60);

impl LineReporter {
    pub fn new(quiet: bool, verbose: bool) -> Self {
        LineReporter {
            quiet,
            verbose,
            beat: Mutex::new(Heartbeat::new(EVERY)),
        }
    }
}

/// A progress line for a step that has run for a while: a log of a multi-hour import or a
/// 10,000-task step otherwise says nothing between the step's start and its end. A step
/// shorter than the interval prints nothing extra.
struct Heartbeat {
    every: Duration,
    progress: Progress,
    /// When the current step started or last printed its progress.
    last: Option<Instant>,
}

impl Heartbeat {
    fn new(every: Duration) -> Self {
        Heartbeat {
            every,
            progress: Progress::default(),
            last: None,
        }
    }

    fn on(&mut self, event: &Event, now: Instant) -> Option<String> {
        self.progress.apply(event);
        match event {
            Event::StepStarted { .. } => self.last = Some(now),
            Event::StepFinished { .. } | Event::StepFailed { .. } | Event::RunFinished { .. } => {
                self.last = None
            }
            Event::TaskFinished { .. } | Event::TaskFailed { .. } | Event::Transfer { .. } => {
                let last = self.last?;
                if now.duration_since(last) >= self.every {
                    self.last = Some(now);
                    return Some(format!("{:>9} {}", "progress", self.progress.step_line()));
                }
            }
            _ => {}
        }
        None
    }
}

/// The text of an event as one or more lines, or nothing. Shared with the progress reporter.
pub(crate) fn render(event: &Event, verbose: bool) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            run,
            pipeline,
            resumed,
        } => {
            if *resumed {
                format!("stage: resuming run {run} of {pipeline}")
            } else {
                format!("stage: run {run} of {pipeline}")
            }
        }
        Event::StepStarted { step, kind, .. } => format!("{kind:>9} {step}"),
        Event::StepAlreadyDone { step } => {
            format!("{:>9} {step}: finished earlier in this run", "skip")
        }
        Event::StepFinished { step, summary, .. } => format!("{:>9} {step}: {summary}", "done"),
        Event::StepFailed { step, error } => format!("{:>9} {step}: {error}", "FAILED"),
        Event::TasksPlanned {
            step,
            total,
            up_to_date,
            to_run,
        } => format!(
            "{:>9} {step}: {total} task{}, {up_to_date} up to date, {to_run} to run",
            "plan",
            if *total == 1 { "" } else { "s" }
        ),
        Event::TaskStarted {
            step,
            task,
            host,
            attempt,
        } if verbose => format!("{:>9} {step}/{task} on {host} (attempt {attempt})", "start"),
        Event::TaskFinished {
            step,
            task,
            duration_ms,
            ..
        } if verbose => format!("{:>9} {step}/{task} in {}", "ok", human_ms(*duration_ms)),
        Event::TaskFailed {
            step,
            task,
            host,
            attempt,
            will_retry,
            reason,
            stderr_tail,
            log,
            ..
        } => {
            let mut s = format!(
                "{:>9} {step}/{task} on {host}, attempt {attempt}: {reason}{}",
                if *will_retry { "retry" } else { "FAILED" },
                if *will_retry { " (will retry)" } else { "" }
            );
            for l in stderr_tail {
                s.push_str(&format!("\n          | {l}"));
            }
            s.push_str(&format!("\n          log: {log}"));
            s
        }
        Event::Warning { message } => format!("{:>9} {message}", "warning"),
        Event::Unchanged { since } => format!(
            "{:>9} the container and the pipeline are as run {since} left them; its file system \
             was torn down and is not recreated (`stage run --new` runs anyway)",
            "unchanged"
        ),
        Event::RunFinished {
            run,
            status,
            did_work,
            duration_ms,
        } => {
            if !did_work && *status == "succeeded" {
                format!("stage: nothing to do, everything is up to date (run {run})")
            } else {
                format!("stage: run {run} {status} in {}", human_ms(*duration_ms))
            }
        }
        _ => return None,
    })
}

impl Reporter for LineReporter {
    fn event(&self, event: &Event) {
        // Quiet (cron): nothing here; a failed run ends with one error line from `main`, and
        // `stage status` has the details.
        if self.quiet {
            return;
        }
        if let Some(text) = render(event, self.verbose) {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
        let beat = self
            .beat
            .lock()
            .ok()
            .and_then(|mut b| b.on(event, Instant::now()));
        if let Some(text) = beat {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(task: &str) -> Event {
        Event::TaskFinished {
            step: "qc".into(),
            task: task.into(),
            host: "n1".into(),
            attempt: 1,
            duration_ms: 5,
        }
    }

    #[test]
    fn a_long_step_reports_progress_once_per_interval_and_a_short_one_never() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut beat = Heartbeat::new(Duration::from_secs(60));
        let start = Event::StepStarted {
            index: 2,
            step: "qc".into(),
            kind: "process",
        };
        assert_eq!(beat.on(&start, at(0)), None);
        let planned = Event::TasksPlanned {
            step: "qc".into(),
            total: 12,
            up_to_date: 2,
            to_run: 10,
        };
        assert_eq!(beat.on(&planned, at(0)), None);
        assert_eq!(beat.on(&finished("a"), at(30)), None);
        let line = beat
            .on(&finished("b"), at(61))
            .expect("a line after a minute");
        assert!(
            line.starts_with(" progress step qc: 2 of 10 tasks done, 0 failed, eta"),
            "{line}"
        );
        assert_eq!(beat.on(&finished("c"), at(90)), None);
        assert!(beat.on(&finished("d"), at(122)).is_some());
        let done = Event::StepFinished {
            step: "qc".into(),
            summary: String::new(),
            did_work: true,
        };
        assert_eq!(beat.on(&done, at(123)), None);
        // A later, short step: nothing extra, though a minute has passed since the last line.
        assert_eq!(beat.on(&start, at(200)), None);
        assert_eq!(beat.on(&finished("e"), at(230)), None);
    }

    #[test]
    fn a_transfer_reports_its_progress_line() {
        let t0 = Instant::now();
        let mut beat = Heartbeat::new(Duration::from_secs(60));
        let start = Event::StepStarted {
            index: 1,
            step: "import".into(),
            kind: "import",
        };
        beat.on(&start, t0);
        let moved = Event::Transfer {
            step: "import".into(),
            tally: crate::mover::Tally {
                files: 10,
                bytes: 1 << 20,
                found_files: 40,
                found_bytes: 4 << 20,
                listed: true,
            },
        };
        let line = beat
            .on(&moved, t0 + Duration::from_secs(60))
            .expect("a line after a minute");
        assert!(
            line.starts_with(" progress step import: 10/40 files, 1.00 MiB/4.00 MiB"),
            "{line}"
        );
    }
}
