//! Fan-out of a process step: one shared queue, a task per free slot, journaled with group
//! commit.
//!
//! Durability rule: a task's intent (`dispatched`) is flushed before it starts, so after a
//! crash every task that may have run is known. Intents are flushed in batches ahead of the
//! slots, and completions are flushed every [`FLUSH_EVERY`] tasks or [`FLUSH_INTERVAL`], so the
//! journal costs a few fsyncs a second, not one per task. A completion lost in a crash only
//! means that task runs again, which the at-least-once contract allows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use super::slots::Slots;
use super::tasks::{self, Current, Task};
use super::{Engine, EngineError, StepResult};
use crate::engine::events::Event;
use crate::executor::{ExecError, TaskCommand, TaskExit};
use crate::journal::{DoneRecord, RunRecord, TaskRecord, TaskState, now_ms};
use crate::spec::{ProcessStep, Step};

/// Intents recorded per flush: two per slot so a wide pool does not flush for every few
/// dispatches, within bounds: a batch is one journal record, and at 120,000 slots two per
/// slot would be a 6 MB value written while every slot waits.
const INTENT_BATCH: std::ops::RangeInclusive<usize> = 256..=8192;
const FLUSH_EVERY: usize = 4096;
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// A task waiting for a slot. Kept to a few words: a million of them wait at once, and
/// their key is the expansion's.
struct Pending {
    index: usize,
    attempts: u32,
    intent: bool,
    /// Set at the first dispatch and kept for the retries.
    started: Option<Box<Started>>,
}

/// What a task carries once it has been dispatched.
struct Started {
    task: Task,
    /// Input stamps taken just before the first attempt starts.
    current: Current,
    /// The host of the last failed attempt: a retry goes elsewhere if it can.
    avoid: Option<String>,
    /// Not before this (retry backoff).
    ready_at: Option<Instant>,
}

impl Pending {
    fn avoid(&self) -> Option<&str> {
        self.started.as_ref().and_then(|s| s.avoid.as_deref())
    }
    fn ready_at(&self) -> Option<Instant> {
        self.started.as_ref().and_then(|s| s.ready_at)
    }
}

/// The task in a busy slot, for the record written when its attempt ends or is interrupted.
#[derive(Clone, Copy)]
struct Busy {
    index: usize,
    attempts: u32,
    started_ms: u64,
}

/// The pending task to give a slot on `host`: the first that did not just fail there.
fn pick(pending: &VecDeque<Pending>, host: &str) -> usize {
    pending
        .iter()
        .take(64)
        .position(|t| t.avoid() != Some(host))
        .unwrap_or(0)
}

/// Delay before attempt `attempt + 1`: `base` doubled per failed attempt, at most 10 minutes.
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(Duration::from_secs(600))
}

impl Engine {
    pub(super) async fn process(
        &self,
        run: &RunRecord,
        index: usize,
        step: &Step,
        p: &ProcessStep,
    ) -> Result<StepResult, EngineError> {
        let root = self.backends.fs.root();
        let failed = |message: String| EngineError::StepFailed {
            step: step.name.clone(),
            message,
        };
        if !root.is_dir() {
            return Err(failed(format!(
                "the file system {} does not exist; add `- ensure: {{}}` before this step",
                self.backends.fs.describe()
            )));
        }
        let all = tasks::expand(&step.name, p, &root, &self.pipeline.vars)
            .map_err(|e| failed(e.to_string()))?;
        let total = all.len();
        let (to_run, fresh) =
            tasks::triage(&self.journal, &self.pipeline.name, &step.name, &root, &all).map_err(
                |e| match e {
                    tasks::TriageError::Journal(j) => EngineError::Journal(j),
                    tasks::TriageError::Expand(x) => failed(x.to_string()),
                },
            )?;

        self.emit(Event::TasksPlanned {
            step: step.name.clone(),
            total,
            up_to_date: fresh,
            to_run: to_run.len(),
        });
        if to_run.is_empty() {
            return Ok(StepResult {
                summary: format!(
                    "{total} task{} up to date",
                    if total == 1 { "" } else { "s" }
                ),
                did_work: false,
                detail: serde_json::json!({ "total": total, "ran": 0, "up_to_date": fresh }),
            });
        }
        let log_dir = tasks::log_dir(&self.state_dir, &self.pipeline.name, run.id, &step.name);
        std::fs::create_dir_all(&log_dir).map_err(|e| {
            failed(format!(
                "cannot create log directory {}: {e}",
                log_dir.display()
            ))
        })?;

        let mut pending: VecDeque<Pending> = to_run
            .into_iter()
            .map(|(index, _)| Pending {
                index,
                attempts: 0,
                intent: false,
                started: None,
            })
            .collect();
        let executor = self.backends.executor.clone();
        let unreachable = executor
            .prepare()
            .await
            .map_err(|e| failed(e.to_string()))?;
        for (host, why) in &unreachable {
            self.emit(Event::Warning {
                message: format!("{host} is unreachable and gets no tasks: {why}"),
            });
        }
        let unreachable: Vec<String> = unreachable.into_iter().map(|(h, _)| h).collect();
        let mut slots = Slots::new(executor.slots(), &unreachable);
        let intent_batch = (2 * slots.len()).clamp(*INTENT_BATCH.start(), *INTENT_BATCH.end());
        let mut running = FuturesUnordered::new();
        let mut busy: Vec<Option<Busy>> = vec![None; slots.len()];
        // Failed tasks waiting out their retry delay.
        let mut delayed: Vec<Pending> = Vec::new();
        let mut unflushed = 0usize;
        let mut last_flush = Instant::now();
        let mut ran = 0usize;
        let mut failures: Vec<String> = Vec::new();
        // One copy for every task: a thousand-host pool has 120,000 commands in flight.
        let env = std::sync::Arc::new(p.env.clone());
        let record = |b: Busy, host: &str, state: TaskState| TaskRecord {
            key: all.key(b.index).to_string(),
            state,
            attempts: b.attempts,
            host: Some(host.to_string()),
            exit_code: None,
            signal: None,
            started_ms: Some(b.started_ms),
            finished_ms: Some(now_ms()),
            error: None,
        };

        loop {
            while !self.cancel.is_set() && slots.has_free() && !pending.is_empty() {
                let Some(slot) = slots.take() else { break };
                let host = slots.host(slot);
                let at = pick(&pending, host);
                if !pending.get(at).is_some_and(|t| t.intent) {
                    self.record_intents(run.id, index, &all, &mut pending, intent_batch)?;
                }
                let Some(mut item) = pending.remove(at) else {
                    break;
                };
                item.attempts += 1;
                if item.started.is_none() {
                    let task = all.task_at(item.index).map_err(|e| failed(e.to_string()))?;
                    let current = tasks::current(&root, &task);
                    item.started = Some(Box::new(Started {
                        task,
                        current,
                        avoid: None,
                        ready_at: None,
                    }));
                }
                let Some(started) = item.started.as_ref() else {
                    break;
                };
                let key = all.key(item.index);
                let (out, err) = tasks::log_files(&log_dir, key, item.attempts);
                let cmd = TaskCommand {
                    name: format!("{}/{}/{}", run.id, step.name, key),
                    command: started.task.command.clone(),
                    cwd: root.clone(),
                    env: env.clone(),
                    timeout: p.timeout,
                    stdout: out,
                    stderr: err,
                };
                // Not written now: the durable intent is `dispatched`; the record is written once,
                // when the attempt ends (the state lock keeps anyone from reading it meanwhile).
                busy[slot] = Some(Busy {
                    index: item.index,
                    attempts: item.attempts,
                    started_ms: now_ms(),
                });
                self.emit(Event::TaskStarted {
                    step: step.name.clone(),
                    task: key.to_string(),
                    host: host.to_string(),
                    attempt: item.attempts,
                });
                let executor = executor.clone();
                running.push(async move {
                    let started = Instant::now();
                    let result = executor.run(slot, &cmd).await;
                    (item, slot, cmd, result, started.elapsed())
                });
            }
            // Retries whose delay is over rejoin the queue; the rest set the next wake-up.
            let now = Instant::now();
            let (ready, still): (Vec<Pending>, Vec<Pending>) = delayed
                .drain(..)
                .partition(|t| t.ready_at().is_none_or(|r| r <= now));
            delayed = still;
            let rejoined = !ready.is_empty();
            pending.extend(ready);
            if rejoined && slots.has_free() {
                continue;
            }
            let waiting = delayed.iter().filter_map(Pending::ready_at).min();
            if running.is_empty() && waiting.is_none_or(|w| w <= Instant::now()) {
                if !pending.is_empty() && !self.cancel.is_set() {
                    executor.shutdown().await;
                    self.journal.flush()?;
                    return Err(failed(format!(
                        "no host left to run {} remaining task(s): every host is quarantined",
                        pending.len()
                    )));
                }
                break;
            }
            let next = tokio::select! {
                next = running.next(), if !running.is_empty() => next.map(Some),
                _ = tokio::time::sleep_until(waiting.unwrap_or_else(Instant::now).into()), if waiting.is_some() => Some(None),
                _ = self.cancel.wait() => None,
            };
            // Cancelled, or out of a local resource: dropping the futures kills every task's
            // process group, and what ran is recorded as interrupted, to run again.
            let next = match next {
                None => Err(EngineError::Interrupted),
                Some(Some((_, _, _, Err(ExecError::Local(message)), _))) => Err(failed(message)),
                Some(next) => Ok(next),
            };
            let next = match next {
                Ok(next) => next,
                Err(why) => {
                    drop(running);
                    executor.shutdown().await;
                    for (slot, b) in busy.iter().enumerate() {
                        if let Some(b) = b {
                            let rec = record(*b, slots.host(slot), TaskState::Interrupted);
                            self.journal.put_task(run.id, index, &rec)?;
                        }
                    }
                    self.journal.flush()?;
                    return Err(why);
                }
            };
            // A retry's delay is over: go back and hand it a slot.
            let Some((mut item, slot, cmd, result, elapsed)) = next else {
                continue;
            };
            let was = busy[slot].take();
            let host = slots.host(slot).to_string();
            if let Err(ExecError::Connection { host, message }) = &result {
                // Not the task's fault: run it elsewhere without spending an attempt.
                if slots.lost(slot) {
                    self.emit(Event::Warning {
                        message: format!(
                            "{host} quarantined after losing its connection ({message}); its tasks move to other hosts"
                        ),
                    });
                }
                item.attempts -= 1;
                if let Some(s) = item.started.as_mut() {
                    s.avoid = Some(host.clone());
                }
                pending.push_front(item);
                continue;
            }
            if let Err(ExecError::Dropped { host, message }) = &result {
                self.emit(Event::Warning {
                    message: format!(
                        "{host}: connection dropped ({message}); reconnected, the task runs again"
                    ),
                });
                slots.give_back(slot);
                item.attempts -= 1;
                pending.push_front(item);
                continue;
            }
            slots.give_back(slot);
            crate::failpoint::hit("task.after-exit");
            let key = all.key(item.index);
            let outputs: &[String] = item
                .started
                .as_ref()
                .map_or(&[], |s| s.task.outputs.as_slice());
            let outcome = match result {
                Ok(exit) if exit.success() => {
                    match outputs.iter().find(|o| !root.join(o).is_file()) {
                        Some(missing) => Err((
                            Some(exit),
                            format!("exited 0 but did not write its output {missing}"),
                        )),
                        None => Ok(exit),
                    }
                }
                Ok(exit) => Err((Some(exit), exit.describe())),
                Err(e) => Err((None, e.to_string())),
            };
            let mut rec = match was {
                Some(b) => record(b, &host, TaskState::Running),
                None => blank(key),
            };
            rec.attempts = item.attempts;
            match outcome {
                Ok(exit) => {
                    slots.succeeded(slot);
                    rec.state = TaskState::Succeeded;
                    rec.exit_code = exit.code;
                    // One record for a success: the done record is also this run's task record.
                    let outputs = outputs
                        .iter()
                        .filter_map(|o| tasks::stamp(&root, o))
                        .collect();
                    let inputs = item
                        .started
                        .take()
                        .map(|s| s.current.inputs)
                        .unwrap_or_default();
                    self.journal.put_done(
                        &self.pipeline.name,
                        &step.name,
                        key,
                        &DoneRecord {
                            command: cmd.command,
                            inputs,
                            outputs,
                            run: run.id,
                            finished_ms: now_ms(),
                            task: Some(rec),
                        },
                    )?;
                    ran += 1;
                    self.emit(Event::TaskFinished {
                        step: step.name.clone(),
                        task: key.to_string(),
                        host,
                        attempt: item.attempts,
                        duration_ms: elapsed.as_millis() as u64,
                    });
                }
                Err((exit, reason)) => {
                    let exit = exit.unwrap_or(TaskExit {
                        code: None,
                        signal: None,
                        timed_out: false,
                    });
                    let will_retry = item.attempts <= p.retries;
                    rec.state = if will_retry {
                        TaskState::Dispatched
                    } else {
                        TaskState::Failed
                    };
                    rec.exit_code = exit.code;
                    rec.signal = exit.signal;
                    rec.error = Some(reason.clone());
                    self.journal.put_task(run.id, index, &rec)?;
                    self.emit(Event::TaskFailed {
                        step: step.name.clone(),
                        task: key.to_string(),
                        host: host.clone(),
                        attempt: item.attempts,
                        exit_code: exit.code,
                        signal: exit.signal,
                        will_retry,
                        reason: reason.clone(),
                        stderr_tail: tasks::log_tail(&cmd.stderr, 5),
                        log: cmd.stderr.display().to_string(),
                    });
                    if let Some(q) = slots.failed(slot) {
                        self.emit(Event::Warning {
                            message: format!(
                                "{q} quarantined after {} failed tasks in a row",
                                super::slots::QUARANTINE_AFTER
                            ),
                        });
                    }
                    if will_retry {
                        let delay = p.retry_delay.map(|d| backoff(d, item.attempts));
                        if let Some(s) = item.started.as_mut() {
                            s.avoid = Some(host);
                            s.ready_at = delay.map(|d| Instant::now() + d);
                        }
                        match delay {
                            Some(_) => delayed.push(item),
                            None => pending.push_back(item),
                        }
                    } else {
                        failures.push(key.to_string());
                    }
                }
            }
            unflushed += 1;
            if unflushed >= FLUSH_EVERY || last_flush.elapsed() >= FLUSH_INTERVAL {
                self.journal.flush()?;
                unflushed = 0;
                last_flush = Instant::now();
            }
        }
        executor.shutdown().await;
        self.journal.flush()?;
        if self.cancel.is_set() {
            return Err(EngineError::Interrupted);
        }
        if !failures.is_empty() {
            let shown: Vec<&str> = failures.iter().take(5).map(String::as_str).collect();
            return Err(failed(format!(
                "{} of {total} tasks failed: {}{}",
                failures.len(),
                shown.join(", "),
                if failures.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            )));
        }
        Ok(StepResult {
            summary: format!("{ran} ran, {fresh} up to date"),
            did_work: true,
            detail: serde_json::json!({ "total": total, "ran": ran, "up_to_date": fresh }),
        })
    }

    /// Records `dispatched` for the next tasks without an intent, with one flush.
    fn record_intents(
        &self,
        run: u64,
        index: usize,
        all: &tasks::Expansion,
        pending: &mut VecDeque<Pending>,
        size: usize,
    ) -> Result<(), EngineError> {
        let mut batch = Vec::with_capacity(size);
        for item in pending.iter_mut().filter(|t| !t.intent).take(size) {
            batch.push((all.key(item.index).to_string(), item.attempts));
            item.intent = true;
        }
        self.journal.put_intents(run, index, &batch)?;
        self.journal.flush()?;
        crate::failpoint::hit("process.after-intent");
        Ok(())
    }
}

fn blank(key: &str) -> TaskRecord {
    TaskRecord::dispatched(key.to_string(), 0)
}
