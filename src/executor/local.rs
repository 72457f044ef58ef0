use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

use super::{ExecError, Executor, HostOutput, TaskCommand, TaskExit};

/// Runs tasks as child processes of stage, each in its own process group.
pub struct LocalExecutor {
    slots: usize,
}

impl LocalExecutor {
    pub fn new(slots: usize) -> Self {
        LocalExecutor { slots }
    }
}

/// Kills the task's process group unless the task has been reaped. Runs on drop, so a
/// cancelled or timed-out task never leaves grandchildren behind.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    fn signal(&self, sig: i32) {
        if self.pgid > 0 {
            // SAFETY: killpg takes plain integers.
            unsafe {
                libc::killpg(self.pgid, sig);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.signal(libc::SIGKILL);
        }
    }
}

/// Time a task gets between SIGTERM and SIGKILL on timeout.
const GRACE: Duration = Duration::from_secs(2);

#[async_trait]
impl Executor for LocalExecutor {
    fn slots(&self) -> Vec<String> {
        vec!["localhost".to_string(); self.slots]
    }

    async fn broadcast(&self, command: &str) -> Vec<HostOutput> {
        let out = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .await;
        vec![HostOutput::from_output("localhost".into(), out)]
    }

    async fn run(&self, _slot: usize, cmd: &TaskCommand) -> Result<TaskExit, ExecError> {
        let out = File::create(&cmd.stdout).map_err(|e| ExecError::Log(cmd.stdout.clone(), e))?;
        let err = File::create(&cmd.stderr).map_err(|e| ExecError::Log(cmd.stderr.clone(), e))?;
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd.command)
            .current_dir(&cmd.cwd)
            .envs(&cmd.env)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(ExecError::Spawn)?;
        let mut guard = GroupGuard {
            pgid: child.id().map(|p| p as i32).unwrap_or(0),
            armed: true,
        };
        let status = match cmd.timeout {
            None => child.wait().await.map_err(ExecError::Spawn)?,
            Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
                Ok(s) => s.map_err(ExecError::Spawn)?,
                Err(_) => {
                    guard.signal(libc::SIGTERM);
                    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                        guard.signal(libc::SIGKILL);
                        let _ = child.wait().await;
                    }
                    // Reap stragglers in the group too.
                    guard.signal(libc::SIGKILL);
                    guard.armed = false;
                    return Ok(TaskExit {
                        code: None,
                        signal: None,
                        timed_out: true,
                    });
                }
            },
        };
        // The shell is gone; anything it left running in the background dies with it.
        guard.signal(libc::SIGKILL);
        guard.armed = false;
        Ok(TaskExit {
            code: status.code(),
            signal: status.signal(),
            timed_out: false,
        })
    }
}
