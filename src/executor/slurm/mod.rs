//! Tasks as Slurm job arrays.
//!
//! The engine hands tasks over one at a time, as for any pool; a driver task gathers those that
//! arrive together into one `sbatch --array` (up to [`ARRAY_WIDTH`] tasks, grouped by what the
//! job itself carries: working directory, environment, time limit), watches them, and answers
//! each task's future when its wrapper records an exit code. Slurm therefore sees a few large
//! arrays, not thousands of jobs, and slurmctld is asked about them at a bounded rate.
//!
//! `slots` is how many tasks run at once over all live arrays: each array's `%` throttle is its
//! share, given when it is submitted and raised (`scontrol update ArrayTaskThrottle`) as older
//! arrays drain, so the total never exceeds it and no share sits idle.
//!
//! Crash safety: each array is recorded on disk before it is submitted ([`array`]). A process
//! that was killed leaves its jobs running; the next one finds them and attaches to a task's job
//! instead of submitting it again. Ctrl-C (a dropped task future) cancels with `scancel`.
//!
//! The wrapper scripts, exit-code files and logs live under the state directory, so on a real
//! cluster it must be on a file system the nodes share (the Lustre mount is).

mod array;
mod queue;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::spec::SlurmPool;

/// Tasks per array at most: Slurm's default `MaxArraySize` is 1001.
const ARRAY_WIDTH: usize = 1000;
/// Tasks that arrive within this of each other go into one array.
const GATHER: Duration = Duration::from_millis(20);
/// Exit-code files are read this often while tasks finish, backing off to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(1);
/// slurmctld is asked (`squeue`) at most this often: it is shared by the whole cluster.
const QUEUE_EVERY: Duration = Duration::from_secs(5);
/// A task neither queued, nor ended in slurmctld's records, nor with an exit code, this many
/// queue checks in a row is lost.
const LOST_AFTER: u32 = 2;
/// sbatch is tried this many times (a busy or restarting slurmctld) before the tasks fail.
const SUBMIT_ATTEMPTS: u32 = 5;

type Reply = oneshot::Sender<Result<TaskExit, ExecError>>;

struct Config {
    throttle: usize,
    pool: SlurmPool,
    token: String,
    root: PathBuf,
}

enum Msg {
    Run { cmd: TaskCommand, reply: Reply },
    Shutdown(oneshot::Sender<()>),
}

pub struct SlurmExecutor {
    config: Arc<Config>,
    /// The running driver; started by the first task of a step, stopped by `shutdown`.
    driver: Mutex<Option<mpsc::UnboundedSender<Msg>>>,
}

impl SlurmExecutor {
    pub fn new(slots: usize, pool: SlurmPool, token: String, state_dir: &Path) -> Self {
        SlurmExecutor {
            config: Arc::new(Config {
                throttle: slots.max(1),
                pool,
                token,
                root: array::root(state_dir),
            }),
            driver: Mutex::new(None),
        }
    }

    fn driver(&self) -> mpsc::UnboundedSender<Msg> {
        let mut guard = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(Driver::new(self.config.clone()).run(rx));
                tx
            })
            .clone()
    }
}

#[async_trait]
impl Executor for SlurmExecutor {
    /// Enough slots to fill an array; how many run at once is the throttle's business.
    fn slots(&self) -> Vec<String> {
        vec!["slurm".to_string(); ARRAY_WIDTH.max(self.config.throttle)]
    }

    async fn run(&self, _slot: usize, cmd: &TaskCommand) -> Result<TaskExit, ExecError> {
        let (reply, answer) = oneshot::channel();
        let gone = || ExecError::Connection {
            host: "slurm".into(),
            message: "the Slurm driver stopped".into(),
        };
        self.driver()
            .send(Msg::Run {
                cmd: cmd.clone(),
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn shutdown(&self) {
        let tx = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let (done, finished) = oneshot::channel();
            if tx.send(Msg::Shutdown(done)).is_ok() {
                let _ = finished.await;
            }
        }
    }

    async fn broadcast(&self, _command: &str) -> Vec<HostOutput> {
        vec![HostOutput {
            host: "slurm".into(),
            exit: Err("`stage exec` runs over SSH; for a Slurm pool use `srun -N N CMD`".into()),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }]
    }
}

/// A task waiting to be submitted.
struct Queued {
    cmd: TaskCommand,
    reply: Reply,
}

/// One task of a submitted array.
struct Slot {
    name: String,
    live: bool,
    /// None for a task a previous process submitted that this one has not asked for (yet).
    reply: Option<Reply>,
    /// Queue checks in a row that could not find it.
    missing: u32,
}

struct Array {
    seq: u64,
    dir: PathBuf,
    name: String,
    job: Option<String>,
    throttle: usize,
    slots: Vec<Slot>,
}

impl Array {
    fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.live).count()
    }
    /// Tasks of this array that may run at once from now on.
    fn share(&self) -> usize {
        self.throttle.min(self.live())
    }
    fn end(&mut self, index: usize, result: Result<TaskExit, ExecError>) {
        let slot = &mut self.slots[index];
        slot.live = false;
        if let Some(reply) = slot.reply.take() {
            let _ = reply.send(result);
        }
    }
}

struct Driver {
    config: Arc<Config>,
    next_seq: u64,
    batch: Vec<Queued>,
    last_queued: Instant,
    /// Submission failures in a row, and when to try again.
    submit_failures: u32,
    submit_after: Instant,
    arrays: BTreeMap<u64, Array>,
    /// Tasks a previous process submitted: name → (array, index).
    inherited: HashMap<String, (u64, usize)>,
    cancels: Vec<String>,
    last_queue_check: Option<Instant>,
    poll: Duration,
}

impl Driver {
    fn new(config: Arc<Config>) -> Driver {
        let mut arrays = BTreeMap::new();
        let mut inherited = HashMap::new();
        for found in array::load(&config.root) {
            for (index, name) in found.tasks.iter().enumerate() {
                inherited.insert(name.clone(), (found.seq, index));
            }
            let slots = found
                .tasks
                .into_iter()
                .enumerate()
                .map(|(index, name)| Slot {
                    live: array::exit_code(&found.dir, index).is_none(),
                    name,
                    reply: None,
                    missing: 0,
                })
                .collect();
            arrays.insert(
                found.seq,
                Array {
                    seq: found.seq,
                    name: array::job_name(&config.token, found.seq),
                    dir: found.dir,
                    job: found.job,
                    throttle: config.throttle,
                    slots,
                },
            );
        }
        if !inherited.is_empty() {
            tracing::info!(
                tasks = inherited.len(),
                arrays = arrays.len(),
                "found Slurm arrays of an earlier process"
            );
        }
        Driver {
            next_seq: array::next_seq(&config.root),
            config,
            batch: Vec::new(),
            last_queued: Instant::now(),
            submit_failures: 0,
            submit_after: Instant::now(),
            arrays,
            inherited,
            cancels: Vec::new(),
            // Inherited arrays are checked against the queue at once.
            last_queue_check: None,
            poll: POLL_MIN,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        loop {
            let wait = if self.batch.is_empty() {
                self.poll
            } else {
                GATHER
            };
            let first = tokio::select! {
                m = rx.recv() => Some(m),
                _ = tokio::time::sleep(wait) => None,
            };
            let mut messages: Vec<Msg> = Vec::new();
            match first {
                Some(Some(m)) => messages.push(m),
                // Every sender dropped without a shutdown: stop quietly, jobs keep running.
                Some(None) => return,
                None => {}
            }
            while let Ok(m) = rx.try_recv() {
                messages.push(m);
            }
            let mut stop = None;
            for m in messages {
                match m {
                    Msg::Run { cmd, reply } => self.take(cmd, reply),
                    Msg::Shutdown(done) => stop = Some(done),
                }
            }
            self.step().await;
            if let Some(done) = stop {
                self.finish().await;
                let _ = done.send(());
                return;
            }
        }
    }

    /// A task to run: attach to an earlier process's job for it, or queue it for submission.
    fn take(&mut self, cmd: TaskCommand, reply: Reply) {
        if let Some((seq, index)) = self.inherited.remove(&cmd.name)
            && let Some(array) = self.arrays.get_mut(&seq)
            && array.slots[index].reply.is_none()
        {
            let slot = &mut array.slots[index];
            if slot.live || array::exit_code(&array.dir, index).is_some() {
                tracing::info!(task = %cmd.name, job = ?array.job, "reattached to its Slurm job");
                slot.reply = Some(reply);
                if !slot.live {
                    // Ended while no one watched: its exit code is on disk.
                    slot.live = true;
                }
                return;
            }
        }
        self.batch.push(Queued { cmd, reply });
        self.last_queued = Instant::now();
    }

    async fn step(&mut self) {
        self.reap_dropped();
        let ended = self.collect_exit_codes();
        self.poll = if ended > 0 {
            POLL_MIN
        } else {
            (self.poll * 3 / 2).min(POLL_MAX)
        };
        if self
            .last_queue_check
            .is_none_or(|t| t.elapsed() >= QUEUE_EVERY)
            && self.arrays.values().any(|a| a.live() > 0)
        {
            self.check_queue().await;
        }
        self.submit().await;
        self.rebalance().await;
        self.flush_cancels().await;
        self.forget_finished(false);
    }

    /// Tasks whose future was dropped (Ctrl-C, the engine giving up) are cancelled.
    fn reap_dropped(&mut self) {
        self.batch.retain(|q| !q.reply.is_closed());
        for a in self.arrays.values_mut() {
            for (index, slot) in a.slots.iter_mut().enumerate() {
                if slot.live && slot.reply.as_ref().is_some_and(|r| r.is_closed()) {
                    slot.live = false;
                    slot.reply = None;
                    if let Some(job) = &a.job {
                        self.cancels.push(format!("{job}_{index}"));
                    }
                }
            }
        }
    }

    /// Answers every watched task whose wrapper has recorded its exit code.
    fn collect_exit_codes(&mut self) -> usize {
        let mut ended = 0;
        for a in self.arrays.values_mut() {
            for index in 0..a.slots.len() {
                if !a.slots[index].live {
                    continue;
                }
                if let Some(code) = array::exit_code(&a.dir, index) {
                    ended += 1;
                    a.end(index, Ok(exit_of_status(code)));
                }
            }
        }
        ended
    }

    /// Finds tasks that ended without an exit code (cancelled, timed out, node failure) or
    /// vanished. A failed query is no news: nothing is decided on it.
    async fn check_queue(&mut self) {
        self.last_queue_check = Some(Instant::now());
        let names: Vec<String> = self
            .arrays
            .values()
            .filter(|a| a.live() > 0)
            .map(|a| a.name.clone())
            .collect();
        let Some(out) = slurm_output(
            Command::new("squeue")
                .args(["-h", "-r", "-o", queue::SQUEUE_FORMAT])
                .arg(format!("--name={}", names.join(","))),
        )
        .await
        else {
            return;
        };
        let queued = queue::parse_squeue(&out);
        // Exit codes written while squeue ran.
        self.collect_exit_codes();
        for a in self.arrays.values_mut() {
            if a.live() == 0 {
                continue;
            }
            let entry = queued.get(&a.name);
            if a.job.is_none()
                && let Some(q) = entry
            {
                // Submitted by a process that died before recording the id.
                let _ = array::record_job(&a.dir, &q.job);
                a.job = Some(q.job.clone());
            }
            let missing: Vec<usize> = (0..a.slots.len())
                .filter(|i| a.slots[*i].live && !entry.is_some_and(|q| q.live.contains(i)))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let ended = match &a.job {
                Some(job) => {
                    slurm_output(Command::new("scontrol").args(["show", "job", "-o", job]))
                        .await
                        .map(|o| queue::parse_ended(&o))
                }
                // Never submitted: the process died between recording and sbatch.
                None => Some(HashMap::new()),
            };
            let Some(ended) = ended else { continue };
            for index in missing {
                if let Some(exit) = ended.get(&index) {
                    tracing::warn!(
                        task = %a.slots[index].name,
                        "Slurm job ended without an exit code: {}; {}",
                        exit.describe(),
                        array::slurm_output(&a.dir, index)
                    );
                    a.end(index, Ok(*exit));
                    continue;
                }
                let slot = &mut a.slots[index];
                slot.missing += 1;
                if a.job.is_none() || slot.missing >= LOST_AFTER {
                    tracing::warn!(task = %slot.name, "Slurm has no record of the task's job");
                    if slot.reply.is_none() {
                        // An earlier process's task: if it is asked for, it is submitted anew.
                        slot.live = false;
                    } else {
                        a.end(
                            index,
                            Ok(TaskExit {
                                code: None,
                                signal: None,
                                timed_out: false,
                            }),
                        );
                    }
                }
            }
        }
    }

    /// Tasks that may start from now on over every live array.
    fn in_use(&self) -> usize {
        self.arrays.values().map(Array::share).sum()
    }

    /// Submits the gathered tasks as one array once no more are arriving and some of the
    /// throttle is free.
    async fn submit(&mut self) {
        let full = self.batch.len() >= ARRAY_WIDTH;
        if self.batch.is_empty()
            || (!full && self.last_queued.elapsed() < GATHER)
            || Instant::now() < self.submit_after
        {
            return;
        }
        let free = self.config.throttle.saturating_sub(self.in_use());
        if free == 0 {
            return;
        }
        // The first task's kind, and every queued task of the same kind, up to a full array.
        let kind = |q: &Queued| (q.cmd.cwd.clone(), q.cmd.env.clone(), q.cmd.timeout);
        let first = kind(&self.batch[0]);
        let mut group = Vec::new();
        let mut rest = Vec::new();
        for q in self.batch.drain(..) {
            if group.len() < ARRAY_WIDTH && kind(&q) == first {
                group.push(q);
            } else {
                rest.push(q);
            }
        }
        self.batch = rest;
        let seq = self.next_seq;
        self.next_seq += 1;
        let dir = self.config.root.join(seq.to_string());
        let name = array::job_name(&self.config.token, seq);
        let listed: Vec<(&str, &TaskCommand)> = group
            .iter()
            .map(|q| (q.cmd.name.as_str(), &q.cmd))
            .collect();
        let submitted = match array::write(&dir, &listed) {
            Ok(()) => {
                self.sbatch(&dir, &name, &group[0].cmd, group.len(), free)
                    .await
            }
            Err(e) => Err(format!(
                "cannot write the job array under {}: {e}",
                dir.display()
            )),
        };
        match submitted {
            Ok(job) => {
                crate::failpoint::hit("slurm.after-submit");
                if let Err(e) = array::record_job(&dir, &job) {
                    tracing::warn!("cannot record job {job}: {e}; found again by its name");
                }
                self.submit_failures = 0;
                let slots = group
                    .into_iter()
                    .map(|q| Slot {
                        name: q.cmd.name,
                        live: true,
                        reply: Some(q.reply),
                        missing: 0,
                    })
                    .collect();
                self.arrays.insert(
                    seq,
                    Array {
                        seq,
                        dir,
                        name,
                        job: Some(job),
                        throttle: free,
                        slots,
                    },
                );
            }
            Err(message) => {
                let _ = std::fs::remove_dir_all(&dir);
                self.submit_failures += 1;
                if self.submit_failures >= SUBMIT_ATTEMPTS {
                    self.submit_failures = 0;
                    for q in group {
                        let _ = q.reply.send(Err(ExecError::Spawn(std::io::Error::other(
                            message.clone(),
                        ))));
                    }
                } else {
                    tracing::warn!("{message}; trying again");
                    self.submit_after =
                        Instant::now() + Duration::from_secs(1 << self.submit_failures);
                    group.extend(std::mem::take(&mut self.batch));
                    self.batch = group;
                }
            }
        }
    }

    async fn sbatch(
        &self,
        dir: &Path,
        name: &str,
        cmd: &TaskCommand,
        tasks: usize,
        throttle: usize,
    ) -> Result<String, String> {
        let mut sbatch = Command::new("sbatch");
        sbatch
            .arg("--parsable")
            .arg(format!("--job-name={name}"))
            .arg(format!("--array=0-{}%{throttle}", tasks - 1))
            .arg(format!("--output={}/slurm-%a.out", dir.display()))
            .arg(format!("--chdir={}", cmd.cwd.display()))
            .arg("--export=ALL")
            .env_clear()
            .envs(job_environment())
            .envs(cmd.env.iter())
            .stdin(Stdio::null());
        if let Some(p) = &self.config.pool.partition {
            sbatch.arg(format!("--partition={p}"));
        }
        if let Some(a) = &self.config.pool.account {
            sbatch.arg(format!("--account={a}"));
        }
        if let Some(t) = cmd.timeout {
            sbatch.arg(format!("--time={}", t.as_secs().div_ceil(60).max(1)));
        }
        sbatch.arg(dir.join("batch.sh"));
        let out = sbatch
            .output()
            .await
            .map_err(|e| format!("cannot run sbatch: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "sbatch: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let job = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        if job.is_empty() {
            return Err("sbatch printed no job id".into());
        }
        Ok(job)
    }

    /// Gives throttle that drained arrays no longer use to arrays with tasks still waiting,
    /// oldest first.
    async fn rebalance(&mut self) {
        let mut free = self.config.throttle.saturating_sub(self.in_use());
        for a in self.arrays.values_mut() {
            if free == 0 {
                break;
            }
            let live = a.live();
            let Some(job) = &a.job else { continue };
            if live <= a.throttle {
                continue;
            }
            let raised = a.throttle + free.min(live - a.throttle);
            let ok = slurm_output(Command::new("scontrol").args([
                "update".to_string(),
                format!("JobId={job}"),
                format!("ArrayTaskThrottle={raised}"),
            ]))
            .await
            .is_some();
            if ok {
                free -= raised - a.throttle;
                a.throttle = raised;
            }
        }
    }

    async fn flush_cancels(&mut self) {
        if self.cancels.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.cancels);
        for chunk in ids.chunks(256) {
            let _ = Command::new("scancel")
                .args(chunk)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }

    /// Forgets arrays with nothing left to watch, and their directories. At shutdown the
    /// tasks of an earlier process that no one asked for are cancelled first.
    fn forget_finished(&mut self, all: bool) {
        let done: Vec<u64> =
            self.arrays
                .values()
                .filter(|a| {
                    all || a.slots.iter().all(|s| {
                        !s.live && s.reply.is_none() && !self.inherited.contains_key(&s.name)
                    })
                })
                .map(|a| a.seq)
                .collect();
        for seq in done {
            if let Some(a) = self.arrays.remove(&seq) {
                let _ = std::fs::remove_dir_all(&a.dir);
            }
        }
    }

    async fn finish(&mut self) {
        self.reap_dropped();
        for a in self.arrays.values_mut() {
            for (index, slot) in a.slots.iter_mut().enumerate() {
                if slot.live && slot.reply.is_none() {
                    slot.live = false;
                    if let Some(job) = &a.job {
                        self.cancels.push(format!("{job}_{index}"));
                    }
                }
            }
        }
        self.flush_cancels().await;
        for q in self.batch.drain(..) {
            let _ = q.reply.send(Err(ExecError::Connection {
                host: "slurm".into(),
                message: "the step ended before the task was submitted".into(),
            }));
        }
        self.inherited.clear();
        self.forget_finished(true);
    }
}

/// A shell exit status as the wrapper recorded it: above 128 the command was killed by signal
/// status - 128 (as shells report it; `scancel` ends a task this way when the wrapper outlives
/// its command).
fn exit_of_status(status: i32) -> TaskExit {
    match status {
        129..=192 => TaskExit {
            code: None,
            signal: Some(status - 128),
            timed_out: false,
        },
        code => TaskExit {
            code: Some(code),
            signal: None,
            timed_out: false,
        },
    }
}

/// Runs a Slurm command and returns its output, or None when it failed (logged).
async fn slurm_output(cmd: &mut Command) -> Option<String> {
    match cmd.stdin(Stdio::null()).output().await {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => {
            tracing::debug!(
                "{:?}: {}",
                cmd.as_std().get_program(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            tracing::debug!("{:?}: {e}", cmd.as_std().get_program());
            None
        }
    }
}

/// This process's environment minus credentials: sbatch copies its environment into the job,
/// and slurmctld stores a job's environment on disk.
fn job_environment() -> impl Iterator<Item = (String, String)> {
    std::env::vars().filter(|(k, _)| !is_secret_name(k))
}

fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "KEY",
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "CONNECTION_STRING",
        "SAS",
    ]
    .iter()
    .any(|s| upper.contains(s))
        && !upper.starts_with("SLURM_")
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses_above_128_are_signals() {
        assert_eq!(super::exit_of_status(143).signal, Some(15));
        assert_eq!(super::exit_of_status(3).code, Some(3));
        assert!(super::exit_of_status(0).success());
    }

    #[test]
    fn credentials_stay_out_of_the_job_environment() {
        for secret in [
            "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "AZURE_STORAGE_CONNECTION_STRING",
            "AZURE_CLIENT_SECRET",
            "GITHUB_TOKEN",
        ] {
            assert!(super::is_secret_name(secret), "{secret}");
        }
        for plain in ["PATH", "HOME", "LANG", "SLURM_CONF", "OMP_NUM_THREADS"] {
            assert!(!super::is_secret_name(plain), "{plain}");
        }
    }
}
