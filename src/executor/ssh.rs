//! Tasks on remote nodes through the system OpenSSH client.
//!
//! The system client, not a Rust SSH library, so users' `~/.ssh/config`, agents, ProxyJump,
//! certificates and known_hosts work unchanged. A host costs what it costs pdsh, whatever its
//! slots: one connection, one local `ssh` process and one remote worker (`worker.sh`, plain
//! POSIX sh) that runs all of the host's tasks at once and multiplexes their output and exit
//! over its session (`channel`). A task costs one remote `sh`, not a session or a login.
//! Connections open a few dozen at a time, well inside sshd's stock `MaxStartups 10:30:100`.
//!
//! Each task runs in its own session (`setsid`) under `timeout` on the node, so a timeout or a
//! cancel kills its whole process tree there; the worker records the group (with its leader's
//! start time and the boot) in a directory per host under one private to this state, so a
//! later run can kill what a crashed one left behind, even where hosts share that directory,
//! and never a group whose id has since been reused.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;
use tokio::sync::{Mutex, Semaphore};

use super::channel::Channel;
use super::{ExecError, Executor, HostOutput, TaskCommand, TaskExit};
use crate::pool::hostlist::Host;
use crate::spec::template::shell_quote;

/// Attempts to (re)connect to a host before it counts as lost.
const CONNECT_ATTEMPTS: u32 = 3;
/// Connections being set up at once: handshakes cost CPU here, and sshd refuses beyond its
/// `MaxStartups` unauthenticated connections per daemon.
const CONNECTING: usize = 32;

/// How strictly to check host keys (OpenSSH's `StrictHostKeyChecking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyChecking {
    /// Learn unknown hosts' keys, refuse changed ones (the default).
    AcceptNew,
    /// Only hosts already in known_hosts.
    Yes,
    /// Accept anything: only when the pipeline asks for it.
    No,
}

#[derive(Debug, Clone)]
pub struct SshOptions {
    pub config: Option<PathBuf>,
    pub host_keys: HostKeyChecking,
    /// Where stage keeps its own known_hosts (learned keys), under the state directory.
    pub known_hosts: PathBuf,
    /// Identifies this state directory on the nodes (for cleaning up after a crash).
    pub token: String,
}

/// A host's connection, made on first use and again after it dropped; `lost` once it could
/// not be made at all, so the host's other tasks fail at once instead of each retrying.
#[derive(Default)]
struct HostLink {
    channel: Option<Arc<Channel>>,
    lost: Option<String>,
}

pub struct SshExecutor {
    hosts: Vec<Host>,
    opts: SshOptions,
    /// The host of each slot.
    slot_host: Vec<usize>,
    links: Vec<Mutex<HostLink>>,
    connecting: Semaphore,
    next_id: AtomicU64,
    /// Cancelled tasks (host, task id), killed by `shutdown`.
    to_kill: std::sync::Mutex<Vec<(usize, u64)>>,
}

fn conn_err(host: &Host, message: impl Into<String>) -> ExecError {
    ExecError::Connection {
        host: host.to_string(),
        message: message.into(),
    }
}

/// The host's name as the worker keys its files by: plain characters only.
fn host_key(host: &Host) -> String {
    host.to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl SshExecutor {
    pub fn new(hosts: Vec<Host>, slots_per_host: usize, opts: SshOptions) -> Self {
        // Interleave hosts so the first free slots spread work across the pool.
        let slot_host = (0..slots_per_host).flat_map(|_| 0..hosts.len()).collect();
        SshExecutor {
            links: hosts.iter().map(|_| Mutex::default()).collect(),
            hosts,
            opts,
            slot_host,
            connecting: Semaphore::new(CONNECTING),
            next_id: AtomicU64::new(1),
            to_kill: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The ssh command line for a host, up to (not including) the remote command.
    fn ssh(&self, host: usize) -> Command {
        let h = &self.hosts[host];
        let mut c = Command::new("ssh");
        if let Some(cfg) = &self.opts.config {
            c.arg("-F").arg(cfg);
        }
        let checking = match self.opts.host_keys {
            HostKeyChecking::AcceptNew => "accept-new",
            HostKeyChecking::Yes => "yes",
            HostKeyChecking::No => "no",
        };
        let user_known = std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".ssh/known_hosts"))
            .unwrap_or_else(|| PathBuf::from("/dev/null"));
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
            // One connection of our own per host: never a user's ControlMaster, whose
            // sessions would count against the host's MaxSessions.
            .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
            .arg("-o")
            .arg(format!("StrictHostKeyChecking={checking}"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={} {}",
                self.opts.known_hosts.display(),
                user_known.display()
            ));
        if let Some(p) = h.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &h.user {
            c.arg("-l").arg(u);
        }
        // The host after `--`: a name can never be read as an option.
        c.arg("--").arg(&h.name);
        c.stdin(Stdio::null()).kill_on_drop(true);
        // The client dies with us even on SIGKILL, so its session's stdin closes and the
        // worker kills its tasks and exits instead of waiting forever.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        c
    }

    /// The host's live connection, made (with backoff) if there is none or it dropped.
    async fn channel(&self, host: usize) -> Result<Arc<Channel>, ExecError> {
        let h = &self.hosts[host];
        let mut link = self.links[host].lock().await;
        if let Some(why) = &link.lost {
            return Err(conn_err(h, why.clone()));
        }
        if let Some(c) = &link.channel
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        if let Some(old) = link.channel.take() {
            old.abort();
        }
        let base = format!("${{TMPDIR:-/tmp}}/stage-{}", self.opts.token);
        let mut last = String::new();
        for attempt in 0..CONNECT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300 << attempt)).await;
            }
            let _turn = self.connecting.acquire().await;
            tracing::debug!(%h, attempt, "connecting");
            match Channel::open(self.ssh(host), &base, &host_key(h)).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    link.channel = Some(c.clone());
                    return Ok(c);
                }
                // Out of processes or files here: no fault of the host's, and retrying
                // will not help.
                Err(e) if e.starts_with("cannot run ssh") => {
                    return Err(ExecError::Local(format!(
                        "{e} (raise `ulimit -n` / `ulimit -u`, or use fewer hosts or slots)"
                    )));
                }
                Err(e) => last = e,
            }
        }
        link.lost = Some(last.clone());
        Err(conn_err(h, last))
    }
}

/// The script a worker runs: working directory and environment first, all quoted.
fn script(cmd: &TaskCommand) -> String {
    let mut s = format!(
        "cd {} || exit 125\n",
        shell_quote(&cmd.cwd.display().to_string())
    );
    for (k, v) in cmd.env.iter() {
        s.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    s.push_str(&cmd.command);
    s
}

/// Marks the remote task for killing if the future running it is dropped (a cancel):
/// [`SshExecutor::shutdown`] then kills it before closing the connections.
struct RemoteGuard<'a> {
    exec: &'a SshExecutor,
    host: usize,
    id: u64,
    channel: Arc<Channel>,
    armed: bool,
}

impl Drop for RemoteGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.channel.forget(self.id);
        if let Ok(mut k) = self.exec.to_kill.lock() {
            k.push((self.host, self.id));
        }
    }
}

#[async_trait]
impl Executor for SshExecutor {
    fn slots(&self) -> Vec<String> {
        self.slot_host
            .iter()
            .map(|h| self.hosts[*h].to_string())
            .collect()
    }

    /// Connects to every host at once (a few dozen handshakes at a time); the worker on each
    /// kills what a crashed earlier run of this state left there.
    async fn prepare(&self) -> Result<Vec<(String, String)>, ExecError> {
        let results =
            futures::future::join_all((0..self.hosts.len()).map(|h| self.channel(h))).await;
        let mut failed = Vec::new();
        for (h, r) in results.into_iter().enumerate() {
            match r {
                Ok(_) => {}
                Err(ExecError::Local(e)) => return Err(ExecError::Local(e)),
                Err(e) => failed.push((self.hosts[h].to_string(), e.to_string())),
            }
        }
        Ok(failed)
    }

    async fn run(&self, slot: usize, cmd: &TaskCommand) -> Result<TaskExit, ExecError> {
        let Some(&host) = self.slot_host.get(slot) else {
            return Err(ExecError::Spawn(std::io::Error::other("no such slot")));
        };
        let channel = self.channel(host).await?;
        // Made empty and closed again on the blocking thread: a thousand tasks starting at
        // once must not hold two open files each until they are polled.
        let logs = [cmd.stdout.clone(), cmd.stderr.clone()];
        tokio::task::spawn_blocking(move || {
            for log in &logs {
                std::fs::File::create(log).map_err(|e| ExecError::Log(log.clone(), e))?;
            }
            Ok::<(), ExecError>(())
        })
        .await
        .map_err(|e| ExecError::Spawn(std::io::Error::other(e)))??;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let limit = cmd.timeout.map(|t| t.as_secs().max(1)).unwrap_or(0);
        let started = channel
            .start(id, limit, &script(cmd), &cmd.stdout, &cmd.stderr)
            .await;
        let exit = match started {
            Ok(exit) => exit,
            Err(e) => return self.after_drop(host, e.to_string()).await,
        };
        let mut guard = RemoteGuard {
            exec: self,
            host,
            id,
            channel: channel.clone(),
            armed: true,
        };
        // A backstop in case the node's `timeout` cannot act (the node is wedged).
        let backstop = cmd.timeout.map(|t| t + Duration::from_secs(15));
        let result = match backstop {
            Some(limit) => match tokio::time::timeout(limit, exit).await {
                Ok(r) => r,
                Err(_) => {
                    channel.abort();
                    Ok(Err(std::io::Error::other("the node stopped answering")))
                }
            },
            None => exit.await,
        };
        guard.armed = false;
        match result {
            Ok(Ok(exit)) => Ok(exit),
            Ok(Err(e)) => self.after_drop(host, e.to_string()).await,
            Err(_) => self.after_drop(host, "the connection closed".into()).await,
        }
    }

    /// One plain session per host, all at once: each host runs a single command (the shape
    /// of pdsh and clush).
    async fn broadcast(&self, command: &str) -> Vec<HostOutput> {
        futures::future::join_all((0..self.hosts.len()).map(|h| {
            let mut c = self.ssh(h);
            c.arg(format!("exec sh -c {}", shell_quote(command)))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let host = self.hosts[h].to_string();
            async move {
                let _turn = self.connecting.acquire().await;
                HostOutput::from_output(host, c.output().await)
            }
        }))
        .await
    }

    async fn shutdown(&self) {
        tracing::debug!("closing ssh connections");
        // Tasks abandoned by a cancel: their groups killed while the connections are up.
        let kills: Vec<(usize, u64)> = self
            .to_kill
            .lock()
            .map(|mut k| k.drain(..).collect())
            .unwrap_or_default();
        for (host, id) in kills {
            let link = self.links[host].lock().await;
            if let Some(c) = &link.channel {
                let _ = c.kill(id).await;
            }
        }
        // Closing a worker's input ends it (killing what still runs), its session and ssh.
        let mut open = Vec::new();
        for l in &self.links {
            if let Some(c) = l.lock().await.channel.take() {
                open.push(c);
            }
        }
        futures::future::join_all(open.iter().map(|c| c.close())).await;
    }
}

impl SshExecutor {
    /// A task's connection failed. Reconnecting tells a dropped connection (the task runs
    /// again) from a lost host. What it left running dies with its session (the old worker
    /// kills its tasks at end of input), or by the new worker's sweep of this host's
    /// process-group files as it starts.
    async fn after_drop(&self, host: usize, message: String) -> Result<TaskExit, ExecError> {
        self.channel(host).await?;
        Err(ExecError::Dropped {
            host: self.hosts[host].to_string(),
            message,
        })
    }
}
