//! Running one task's command somewhere: this machine now; SSH and Slurm later.

mod local;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

pub use local::LocalExecutor;

pub struct TaskCommand {
    /// Shell text for `sh -c`; every substituted value is already quoted.
    pub command: String,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
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
    #[error("cannot open the task's log {}", .0.display())]
    Log(PathBuf, #[source] std::io::Error),
}

#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs the command on `host` and waits for it. Dropping the future kills the task's
    /// whole process tree: that is how cancellation reaches it.
    async fn run(&self, host: &str, cmd: &TaskCommand) -> Result<TaskExit, ExecError>;
}
