use std::io::Write;

use super::human_ms;
use crate::engine::events::{Event, Reporter};

/// Plain lines on stderr: for logs, cron mail and pipes. `quiet` prints nothing.
pub struct LineReporter {
    quiet: bool,
    verbose: bool,
}

impl LineReporter {
    pub fn new(quiet: bool, verbose: bool) -> Self {
        LineReporter { quiet, verbose }
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
    }
}
