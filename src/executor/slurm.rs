//! Tasks as Slurm batch jobs: `sbatch` submits, `scontrol show job` says how it ended, and
//! dropping the task's future (Ctrl-C, timeout) runs `scancel`.
//!
//! The task's environment reaches the job through sbatch's own environment (`--export=ALL`),
//! never its command line. Logs are written by slurmd to the task's log paths, so on a real
//! cluster the state directory must be on a file system the nodes share.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use super::*;
use crate::spec::SlurmPool;
use crate::spec::template::shell_quote;

/// Terminal job states (`scontrol show job`).
const DONE: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
];

pub struct SlurmExecutor {
    slots: usize,
    pool: SlurmPool,
    /// Names the jobs, so `squeue --name` finds this state directory's jobs.
    token: String,
}

impl SlurmExecutor {
    pub fn new(slots: usize, pool: SlurmPool, token: String) -> Self {
        SlurmExecutor { slots, pool, token }
    }
}

/// Cancels the job if the task is dropped before it ended.
struct Scancel(Option<String>);

impl Drop for Scancel {
    fn drop(&mut self) {
        if let Some(id) = self.0.take() {
            let _ = std::process::Command::new("scancel")
                .arg(&id)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn field<'a>(record: &'a str, key: &str) -> Option<&'a str> {
    record
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[async_trait]
impl Executor for SlurmExecutor {
    fn slots(&self) -> Vec<String> {
        vec!["slurm".to_string(); self.slots]
    }

    async fn run(&self, slot: usize, cmd: &TaskCommand) -> Result<TaskExit, ExecError> {
        let mut sbatch = Command::new("sbatch");
        sbatch
            .arg("--parsable")
            .arg(format!("--job-name=stage-{}-{slot}", self.token))
            .arg(format!("--output={}", cmd.stdout.display()))
            .arg(format!("--error={}", cmd.stderr.display()))
            .arg(format!("--chdir={}", cmd.cwd.display()))
            .arg("--export=ALL")
            .envs(&cmd.env)
            .stdin(Stdio::null());
        if let Some(p) = &self.pool.partition {
            sbatch.arg(format!("--partition={p}"));
        }
        if let Some(a) = &self.pool.account {
            sbatch.arg(format!("--account={a}"));
        }
        if let Some(t) = cmd.timeout {
            sbatch.arg(format!("--time={}", t.as_secs().div_ceil(60).max(1)));
        }
        sbatch.arg(format!("--wrap=exec sh -c {}", shell_quote(&cmd.command)));
        let out = sbatch.output().await.map_err(ExecError::Spawn)?;
        if !out.status.success() {
            return Err(ExecError::Connection {
                host: "slurm".into(),
                message: format!("sbatch: {}", String::from_utf8_lossy(&out.stderr).trim()),
            });
        }
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut guard = Scancel(Some(id.clone()));
        let mut wait = Duration::from_millis(200);
        let mut unknown = 0;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 3 / 2).min(Duration::from_secs(5));
            let q = Command::new("scontrol")
                .args(["show", "job", "-o", &id])
                .stdin(Stdio::null())
                .output()
                .await;
            let record = match q {
                Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
                // A busy or restarting slurmctld: unknown is not failed; ask again.
                _ => {
                    unknown += 1;
                    if unknown > 60 {
                        return Err(ExecError::Connection {
                            host: "slurm".into(),
                            message: format!("cannot read the state of job {id}"),
                        });
                    }
                    continue;
                }
            };
            unknown = 0;
            let state = field(&record, "JobState").unwrap_or_default();
            if !DONE.contains(&state) {
                continue;
            }
            guard.0 = None;
            // ExitCode=code:signal
            let (code, signal) = field(&record, "ExitCode")
                .and_then(|e| e.split_once(':'))
                .map(|(c, s)| (c.parse().ok(), s.parse().ok().filter(|s: &i32| *s != 0)))
                .unwrap_or((None, None));
            // Only COMPLETED is success: a cancelled or failed job may report exit code 0.
            let code = if state == "COMPLETED" {
                Some(0)
            } else {
                code.filter(|c| *c != 0)
            };
            return Ok(TaskExit {
                code,
                signal,
                timed_out: state == "TIMEOUT",
            });
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

#[cfg(test)]
mod tests {
    #[test]
    fn fields_of_a_one_line_job_record() {
        let r = "JobId=7 JobName=x JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 RunTime=00:00:01";
        assert_eq!(super::field(r, "JobState"), Some("FAILED"));
        assert_eq!(super::field(r, "ExitCode"), Some("3:0"));
        assert_eq!(super::field(r, "Missing"), None);
    }
}
