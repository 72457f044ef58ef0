//! Fan-out of a process step: one shared queue, a task per free slot, journaled with group
//! commit.
//!
//! Durability rule: a task's intent (`dispatched`) is flushed before it starts, so after a
//! crash every task that may have run is known. Intents are flushed in batches ahead of the
//! slots, and completions are flushed every [`FLUSH_EVERY`] tasks or [`FLUSH_INTERVAL`], so the
//! journal costs a few fsyncs a second, not one per task. A completion lost in a crash only
//! means that task runs again, which the at-least-once contract allows.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use super::slots::Slots;
use super::tasks::{self, Current, Task};
use super::{Engine, EngineError, StepResult};
use crate::engine::events::Event;
use crate::executor::{ExecError, TaskCommand, TaskExit};
use crate::journal::{DoneRecord, RunRecord, TaskRecord, TaskState, now_ms};
use crate::spec::{ProcessStep, Step};

/// Intents recorded per flush: at least this many, and two per slot so a wide pool does not
/// flush for every few dispatches.
const INTENT_BATCH: usize = 256;
const FLUSH_EVERY: usize = 4096;
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

struct Pending {
    index: usize,
    key: String,
    /// Rendered when the task is first dispatched.
    task: Option<Task>,
    /// Input stamps taken just before the first attempt starts.
    current: Option<Current>,
    attempts: u32,
    intent: bool,
    /// The host of the last failed attempt: a retry goes elsewhere if it can.
    avoid: Option<String>,
    /// Not before this (retry backoff).
    ready_at: Option<Instant>,
}

/// The pending task to give a slot on `host`: the first that did not just fail there.
fn pick(pending: &VecDeque<Pending>, host: &str) -> usize {
    pending
        .iter()
        .take(64)
        .position(|t| t.avoid.as_deref() != Some(host))
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
                key: all.key(index).to_string(),
                task: None,
                current: None,
                attempts: 0,
                intent: false,
                avoid: None,
                ready_at: None,
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
        let intent_batch = INTENT_BATCH.max(2 * slots.len());
        let mut running = FuturesUnordered::new();
        let mut in_flight: HashMap<usize, TaskRecord> = HashMap::new();
        // Failed tasks waiting out their retry delay.
        let mut delayed: Vec<Pending> = Vec::new();
        let mut unflushed = 0usize;
        let mut last_flush = Instant::now();
        let mut ran = 0usize;
        let mut failures: Vec<String> = Vec::new();
        let env = p.env.clone();

        loop {
            while !self.cancel.is_set() && slots.has_free() && !pending.is_empty() {
                let Some(slot) = slots.take() else { break };
                let host = slots.host(slot).to_string();
                let at = pick(&pending, &host);
                if !pending.get(at).is_some_and(|t| t.intent) {
                    self.record_intents(run.id, index, &mut pending, intent_batch)?;
                }
                let Some(mut item) = pending.remove(at) else {
                    break;
                };
                item.attempts += 1;
                if item.task.is_none() {
                    item.task = Some(all.task_at(item.index).map_err(|e| failed(e.to_string()))?);
                }
                let Some(task) = item.task.as_ref() else {
                    break;
                };
                if item.current.is_none() {
                    item.current = Some(tasks::current(&root, task));
                }
                let (out, err) = tasks::log_files(&log_dir, &item.key, item.attempts);
                let cmd = TaskCommand {
                    name: format!("{}/{}/{}", run.id, step.name, item.key),
                    command: task.command.clone(),
                    cwd: root.clone(),
                    env: env.clone(),
                    timeout: p.timeout,
                    stdout: out.clone(),
                    stderr: err.clone(),
                };
                // Not written now: the durable intent is `dispatched`; the record is written once,
                // when the attempt ends (the state lock keeps anyone from reading it meanwhile).
                let record = TaskRecord {
                    key: item.key.clone(),
                    state: TaskState::Running,
                    attempts: item.attempts,
                    host: Some(host.clone()),
                    exit_code: None,
                    signal: None,
                    started_ms: Some(now_ms()),
                    finished_ms: None,

                    error: None,
                };
                self.emit(Event::TaskStarted {
                    step: step.name.clone(),
                    task: item.key.clone(),
                    host: host.clone(),
                    attempt: item.attempts,
                });
                in_flight.insert(slot, record);
                let executor = executor.clone();
                running.push(async move {
                    let started = Instant::now();
                    let result = executor.run(slot, &cmd).await;
                    (item, slot, host, cmd, result, started.elapsed())
                });
            }
            // Retries whose delay is over rejoin the queue; the rest set the next wake-up.
            let now = Instant::now();
            let (ready, still): (Vec<Pending>, Vec<Pending>) = delayed
                .drain(..)
                .partition(|t| t.ready_at.is_none_or(|r| r <= now));
            delayed = still;
            let rejoined = !ready.is_empty();
            pending.extend(ready);
            if rejoined && slots.has_free() {
                continue;
            }
            let waiting = delayed.iter().filter_map(|t| t.ready_at).min();
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
                Some(Some((_, _, _, _, Err(ExecError::Local(message)), _))) => Err(failed(message)),
                Some(next) => Ok(next),
            };
            let next = match next {
                Ok(next) => next,
                Err(why) => {
                    drop(running);
                    executor.shutdown().await;
                    for (_, mut rec) in in_flight.drain() {
                        rec.state = TaskState::Interrupted;
                        rec.finished_ms = Some(now_ms());
                        self.journal.put_task(run.id, index, &rec)?;
                    }
                    self.journal.flush()?;
                    return Err(why);
                }
            };
            // A retry's delay is over: go back and hand it a slot.
            let Some((item, slot, host, cmd, result, elapsed)) = next else {
                continue;
            };
            let record = in_flight.remove(&slot);
            if let Err(ExecError::Connection { host, message }) = &result {
                // Not the task's fault: run it elsewhere without spending an attempt.
                if slots.lost(slot) {
                    self.emit(Event::Warning {
                        message: format!(
                            "{host} quarantined after losing its connection ({message}); its tasks move to other hosts"
                        ),
                    });
                }
                let mut item = item;
                item.attempts -= 1;
                item.avoid = Some(host.clone());
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
                let mut item = item;
                item.attempts -= 1;
                pending.push_front(item);
                continue;
            }
            slots.give_back(slot);
            crate::failpoint::hit("task.after-exit");
            let outputs: &[String] = item.task.as_ref().map_or(&[], |t| t.outputs.as_slice());
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
            let mut rec = record.unwrap_or_else(|| blank(&item.key));
            rec.attempts = item.attempts;
            rec.finished_ms = Some(now_ms());
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
                    self.journal.put_done(
                        &self.pipeline.name,
                        &step.name,
                        &item.key,
                        &DoneRecord {
                            command: cmd.command.clone(),
                            inputs: item
                                .current
                                .as_ref()
                                .map(|c| c.inputs.clone())
                                .unwrap_or_default(),
                            outputs,
                            run: run.id,
                            finished_ms: now_ms(),
                            task: Some(rec),
                        },
                    )?;
                    ran += 1;
                    self.emit(Event::TaskFinished {
                        step: step.name.clone(),
                        task: item.key.clone(),
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
                        task: item.key.clone(),
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
                        let mut item = item;
                        item.avoid = Some(host.clone());
                        match p.retry_delay {
                            Some(d) => {
                                item.ready_at = Some(Instant::now() + backoff(d, item.attempts));
                                delayed.push(item);
                            }
                            None => pending.push_back(item),
                        }
                    } else {
                        failures.push(item.key.clone());
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
        pending: &mut VecDeque<Pending>,
        size: usize,
    ) -> Result<(), EngineError> {
        let mut batch = Vec::with_capacity(size);
        for item in pending.iter_mut().filter(|t| !t.intent).take(size) {
            batch.push((item.key.clone(), item.attempts));
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
