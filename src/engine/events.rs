//! What the engine tells the world. Reporters decide how (if at all) to show it.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run: u64,
        pipeline: String,
        resumed: bool,
    },
    StepStarted {
        index: usize,
        step: String,
        kind: &'static str,
    },
    /// The step finished in an earlier attempt of this run.
    StepAlreadyDone {
        step: String,
    },
    StepFinished {
        step: String,
        summary: String,
        did_work: bool,
    },
    StepFailed {
        step: String,
        error: String,
    },
    /// Progress of a transfer (import or export).
    Transfer {
        step: String,
        #[serde(flatten)]
        tally: crate::mover::Tally,
    },
    TasksPlanned {
        step: String,
        total: usize,
        up_to_date: usize,
        to_run: usize,
    },
    TaskStarted {
        step: String,
        task: String,
        host: String,
        attempt: u32,
    },
    TaskFinished {
        step: String,
        task: String,
        host: String,
        attempt: u32,
        duration_ms: u64,
    },
    TaskFailed {
        step: String,
        task: String,
        host: String,
        attempt: u32,
        exit_code: Option<i32>,
        signal: Option<i32>,
        will_retry: bool,
        reason: String,
        stderr_tail: Vec<String>,
        log: String,
    },
    /// The container and the pipeline are as run `since` left them, and that run tore its
    /// file system down: nothing is recreated.
    Unchanged {
        since: u64,
    },
    Warning {
        message: String,
    },
    RunFinished {
        run: u64,
        status: &'static str,
        did_work: bool,
        duration_ms: u64,
    },
}

/// Receives events; implementations must be cheap, as the engine calls them inline.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
    /// Called once at the end so progress bars can clear themselves.
    fn finish(&self) {}
}
