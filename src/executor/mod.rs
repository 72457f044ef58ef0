//! Running one task's command somewhere: this machine, over SSH, or as Slurm jobs.

mod channel;
mod local;
mod scale_set;
mod slurm;
pub mod ssh;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use local::LocalExecutor;
pub use scale_set::ScaleSetExecutor;
pub use slurm::SlurmExecutor;
pub use ssh::SshExecutor;

#[derive(Clone)]
pub struct TaskCommand {
    /// Names the task across restarts of its run (`RUN/STEP/KEY`): an executor whose jobs
    /// outlive the process (Slurm) finds the job it started for it.
    pub name: String,
    /// Shell text for `sh -c`; every substituted value is already quoted.
    pub command: String,
    pub cwd: PathBuf,
    /// Shared: every task of a step has the same environment.
    pub env: Arc<BTreeMap<String, String>>,
    pub timeout: Option<Duration>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
}

impl TaskExit {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
    pub fn describe(&self) -> String {
        if self.timed_out {
            "timed out".to_string()
        } else if let Some(s) = self.signal {
            format!("killed by signal {s}")
        } else {
            format!("exit code {}", self.code.unwrap_or(-1))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start the task: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot open the task's log {}: {}", .0.display(), .1)]
    Log(PathBuf, #[source] std::io::Error),
    /// The host could not be reached (after retries): its tasks go elsewhere.
    #[error("lost connection to {host}: {message}")]
    Connection { host: String, message: String },
    /// The pool itself could not be made ready (a scale set that cannot be created).
    #[error("{0}")]
    Pool(String),
    /// The connection dropped mid-task but the host came back: run the task again.
    #[error("connection to {host} dropped: {message}")]
    Dropped { host: String, message: String },
    /// Something ran out here, not on a host (processes, open files): no host is to blame.
    #[error("{0}")]
    Local(String),
}

#[async_trait]
pub trait Executor: Send + Sync {
    /// One entry per slot, naming the host the slot runs on.
    fn slots(&self) -> Vec<String>;
    /// Makes the pool ready and connects before the fan-out; returns the hosts that cannot
    /// be reached.
    async fn prepare(&self) -> Result<Vec<(String, String)>, ExecError> {
        Ok(Vec::new())
    }
    /// Runs the command in `slot` and waits for it. Dropping the future kills the task's
    /// whole process tree: that is how cancellation reaches it.
    async fn run(&self, slot: usize, cmd: &TaskCommand) -> Result<TaskExit, ExecError>;
    /// Closes connections once the step is over.
    async fn shutdown(&self) {}
    /// Gives back what the pool costs once the whole run has succeeded.
    async fn release(&self) -> Result<(), ExecError> {
        Ok(())
    }
    /// Runs one command once on every host, at once (what pdsh does), capturing output.
    async fn broadcast(&self, command: &str) -> Vec<HostOutput>;
}

/// One host's answer to a broadcast.
pub struct HostOutput {
    pub host: String,
    /// The exit, or why the host could not run the command.
    pub exit: Result<TaskExit, String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl HostOutput {
    fn from_output(host: String, out: std::io::Result<std::process::Output>) -> HostOutput {
        use std::os::unix::process::ExitStatusExt;
        match out {
            Ok(o) => HostOutput {
                host,
                exit: Ok(TaskExit {
                    code: o.status.code(),
                    signal: o.status.signal(),
                    timed_out: false,
                }),
                stdout: o.stdout,
                stderr: o.stderr,
            },
            Err(e) => HostOutput {
                host,
                exit: Err(e.to_string()),
                stdout: Vec::new(),
                stderr: Vec::new(),
            },
        }
    }
}
