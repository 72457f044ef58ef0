use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{ExecError, Executor, HostOutput, TaskCommand, TaskExit};

/// Runs tasks as child processes of stage, each in its own process group.
///
/// Each running task's group is written to `state/local-tasks/slot-N.pgid` (as the SSH
/// worker writes its own on the node), so that when stage is killed, `kill -9` included, the
/// next run kills what it left running before it starts those tasks again: a task must never
/// run beside itself (two copies appending to one `.part` file make a corrupt result that
/// looks finished).
pub struct LocalExecutor {
    slots: usize,
    groups: PathBuf,
}

impl LocalExecutor {
    pub fn new(slots: usize, state_dir: &Path) -> Self {
        LocalExecutor {
            slots,
            groups: state_dir.join("local-tasks"),
        }
    }

    fn group_file(&self, slot: usize) -> PathBuf {
        self.groups.join(format!("slot-{slot}.pgid"))
    }

    /// Records the task's group with what tells it from a later process given the same id.
    fn record(&self, slot: usize, pgid: i32) -> std::io::Result<()> {
        let start = start_time(pgid).unwrap_or(0);
        std::fs::create_dir_all(&self.groups)?;
        std::fs::write(
            self.group_file(slot),
            format!("{pgid} {start} {}\n", boot_id()),
        )
    }
}

/// Kernel clock ticks since boot at which `pid` started (`/proc/PID/stat`, field 22).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The group still has a process in it.
fn group_alive(pgid: i32) -> bool {
    // SAFETY: killpg with signal 0 only checks.
    unsafe { libc::killpg(pgid, 0) == 0 }
}

/// How long a dead run's tasks get to die after SIGKILL before the run says so and goes on.
const LEFTOVER_WAIT: Duration = Duration::from_secs(10);

/// Kills the groups a dead run recorded, and waits for them to be gone. A group is ours when
/// its leader is the process recorded (same start time, same boot) or, the leader having
/// exited, when members remain (Linux does not hand out an id in use as a group's).
async fn kill_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let boot = boot_id();
    let mut killed = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut f = text.split_whitespace();
        let (Some(pgid), Some(start), Some(b)) = (
            f.next().and_then(|p| p.parse::<i32>().ok()),
            f.next().and_then(|s| s.parse::<u64>().ok()),
            f.next(),
        ) else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let ours = pgid > 1
            && b == boot
            && match start_time(pgid) {
                Some(t) => t == start,
                None => group_alive(pgid),
            };
        if ours {
            tracing::info!(pgid, "killing a task a dead run left running");
            // SAFETY: killpg takes plain integers.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
            killed.push(pgid);
        }
        let _ = std::fs::remove_file(&path);
    }
    let deadline = Instant::now() + LEFTOVER_WAIT;
    while killed.iter().any(|g| group_alive(*g)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Kills the task's process group unless the task has been reaped. Runs on drop, so a
/// cancelled or timed-out task never leaves grandchildren behind.
struct GroupGuard {
    pgid: i32,
    armed: bool,
    /// The group's record for a successor, removed once the group is dead.
    record: Option<PathBuf>,
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
        if let Some(record) = &self.record {
            let _ = std::fs::remove_file(record);
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

    async fn prepare(&self) -> Result<Vec<(String, String)>, ExecError> {
        kill_leftovers(&self.groups).await;
        Ok(Vec::new())
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

    async fn run(&self, slot: usize, cmd: &TaskCommand) -> Result<TaskExit, ExecError> {
        let out = File::create(&cmd.stdout).map_err(|e| ExecError::Log(cmd.stdout.clone(), e))?;
        let err = File::create(&cmd.stderr).map_err(|e| ExecError::Log(cmd.stderr.clone(), e))?;
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd.command)
            .current_dir(&cmd.cwd)
            .envs(cmd.env.iter())
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
            record: None,
        };
        // Before anything is waited for: from here on a dead stage's successor can find it.
        if let Err(e) = self.record(slot, guard.pgid) {
            return Err(ExecError::Log(self.group_file(slot), e));
        }
        guard.record = Some(self.group_file(slot));
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
