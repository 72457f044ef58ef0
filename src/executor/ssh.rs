//! Tasks on remote nodes through the system OpenSSH client.
//!
//! The system client, not a Rust SSH library, so users' `~/.ssh/config`, agents, ProxyJump,
//! certificates and known_hosts work unchanged. Costs are paid once, not per task:
//! - one ControlMaster connection per host per [`SESSIONS_PER_MASTER`] slots (sshd's
//!   `MaxSessions` defaults to 10), opened before the fan-out so no two clients race to create
//!   the same socket;
//! - one long-lived worker per slot (`worker.sh`, plain POSIX sh) reading tasks from its
//!   session's stdin, so a task costs one remote `sh`, not an SSH session and a login shell.
//!
//! Each task runs in its own session (`setsid`) under `timeout` on the node, so a timeout or a
//! cancel kills its whole process tree there; the worker records the group id in a file under
//! a directory private to this state, so a later run can kill what a crashed one left behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use super::{ExecError, Executor, HostOutput, TaskCommand, TaskExit};
use crate::pool::hostlist::Host;
use crate::spec::template::shell_quote;

const WORKER: &str = include_str!("worker.sh");
/// Sessions one master carries; below sshd's default `MaxSessions 10`.
pub const SESSIONS_PER_MASTER: usize = 8;
/// Attempts to (re)connect a worker before its host counts as lost.
const CONNECT_ATTEMPTS: u32 = 3;

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
    /// Short directory for control sockets (socket paths are limited to ~100 bytes).
    pub socket_dir: PathBuf,
    /// Identifies this state directory on the nodes (for cleaning up after a crash).
    pub token: String,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

struct Slot {
    host: usize,
    master: usize,
    index: usize,
    worker: Mutex<Option<Worker>>,
}

pub struct SshExecutor {
    hosts: Vec<Host>,
    opts: SshOptions,
    slots: Vec<Slot>,
    masters: Mutex<Vec<Child>>,
    next_id: AtomicU64,
    /// Remote process groups of cancelled tasks, killed by `shutdown`.
    to_kill: std::sync::Mutex<Vec<(usize, u32)>>,
}

fn conn_err(host: &Host, message: impl Into<String>) -> ExecError {
    ExecError::Connection {
        host: host.to_string(),
        message: message.into(),
    }
}

impl SshExecutor {
    pub fn new(hosts: Vec<Host>, slots_per_host: usize, opts: SshOptions) -> Self {
        let mut slots = Vec::new();
        // Interleave hosts so the first free slots spread work across the pool.
        for s in 0..slots_per_host {
            for h in 0..hosts.len() {
                slots.push(Slot {
                    host: h,
                    master: s / SESSIONS_PER_MASTER,
                    index: s,
                    worker: Mutex::new(None),
                });
            }
        }
        SshExecutor {
            hosts,
            opts,
            slots,
            masters: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            to_kill: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn socket(&self, host: usize, master: usize) -> PathBuf {
        self.opts.socket_dir.join(format!("h{host}-m{master}"))
    }

    /// The ssh command line for a host, up to (not including) the remote command.
    fn ssh(&self, host: usize, master: usize) -> Command {
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
            .arg("-o")
            .arg(format!("StrictHostKeyChecking={checking}"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={} {}",
                self.opts.known_hosts.display(),
                user_known.display()
            ))
            .arg("-o")
            .arg(format!(
                "ControlPath={}",
                self.socket(host, master).display()
            ));
        if let Some(p) = h.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &h.user {
            c.arg("-l").arg(u);
        }
        c.arg(&h.name);
        c.stdin(Stdio::null()).kill_on_drop(true);
        // The client dies with us even on SIGKILL, so its session's stdin closes and the
        // worker exits instead of waiting forever.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        c
    }

    async fn start_master(&self, host: usize, master: usize) -> Result<Child, ExecError> {
        let h = &self.hosts[host];
        tracing::debug!(%h, master, "opening ssh master");
        let sock = self.socket(host, master);
        let _ = std::fs::remove_file(&sock);
        let mut c = self.ssh(host, master);
        c.args(["-M", "-N", "-o", "ControlPersist=no"])
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| conn_err(h, format!("cannot run ssh: {e}")))?;
        // Ready when the socket answers `-O check`, or failed when the master exits.
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err).await;
                }
                return Err(conn_err(
                    h,
                    format!("ssh exited ({status}): {}", err.trim()),
                ));
            }
            if sock.exists() {
                let mut check = self.ssh(host, master);
                check
                    .args(["-O", "check"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if check.status().await.is_ok_and(|s| s.success()) {
                    return Ok(child);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(conn_err(h, "timed out waiting for the connection"))
    }

    async fn start_worker(&self, slot: &Slot) -> Result<Worker, ExecError> {
        let h = &self.hosts[slot.host];
        tracing::debug!(%h, slot = slot.index, "starting remote worker");
        let base = format!("${{TMPDIR:-/tmp}}/stage-{}", self.opts.token);
        let remote = format!(
            "exec sh -c {} stage-worker \"{base}\" {}",
            shell_quote(WORKER),
            slot.index
        );
        let mut c = self.ssh(slot.host, slot.master);
        c.arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c
            .spawn()
            .map_err(|e| conn_err(h, format!("cannot run ssh: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(conn_err(h, "ssh has no pipes"));
        };
        let mut stdout = BufReader::new(stdout);
        let mut ready = String::new();
        match tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut ready)).await {
            Ok(Ok(n)) if n > 0 && ready.trim() == "READY" => Ok(Worker {
                child,
                stdin,
                stdout,
            }),
            _ => Err(conn_err(h, "the remote worker did not start")),
        }
    }

    /// A worker for the slot, reconnecting (and restarting the master) with backoff.
    async fn worker(&self, slot: &Slot) -> Result<Worker, ExecError> {
        let mut last = None;
        for attempt in 0..CONNECT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300 << attempt)).await;
                // The master may be what died: replace it.
                if let Ok(child) = self.start_master(slot.host, slot.master).await {
                    self.masters.lock().await.push(child);
                }
            }
            match self.start_worker(slot).await {
                Ok(w) => return Ok(w),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| conn_err(&self.hosts[slot.host], "cannot connect")))
    }

    /// Kills a task's process group on its node (best effort, over the master): TERM, then
    /// KILL a second later for whatever ignored it.
    async fn kill_remote(&self, slot: &Slot, pgid: u32) {
        let mut c = self.ssh(slot.host, slot.master);
        c.arg(format!(
            "kill -TERM -- -{pgid} 2>/dev/null && sleep 1; kill -KILL -- -{pgid} 2>/dev/null; true"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let _ = tokio::time::timeout(Duration::from_secs(10), c.status()).await;
    }
}

/// Sends one task and reads its replies; `pgid` learns the remote group as soon as it starts.
async fn exchange(
    w: &mut Worker,
    id: u64,
    cmd: &TaskCommand,
    script: &str,
    pgid: &std::sync::Mutex<Option<u32>>,
) -> std::io::Result<TaskExit> {
    let end = format!("__STAGE_END_{id}_{:x}__", crate::digest::nonce());
    let limit = cmd.timeout.map(|t| t.as_secs().max(1)).unwrap_or(0);
    let mut req = format!("T {id} {limit} {end}\n{script}\n{end}\n");
    if script.lines().any(|l| l == end) {
        req = format!("T {id} {limit} {end}\nexit 125\n{end}\n");
    }
    w.stdin.write_all(req.as_bytes()).await?;
    w.stdin.flush().await?;
    let mut out = tokio::fs::File::create(&cmd.stdout).await?;
    let mut err = tokio::fs::File::create(&cmd.stderr).await?;
    let id_text = id.to_string();
    let mut line = String::new();
    loop {
        line.clear();
        if w.stdout.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "worker closed",
            ));
        }
        let mut parts = line.split_whitespace();
        let (kind, rid, value) = (parts.next(), parts.next(), parts.next());
        if rid != Some(id_text.as_str()) {
            continue;
        }
        let n: u64 = value.and_then(|v| v.parse().ok()).unwrap_or(0);
        match kind {
            Some("S") => {
                if let Ok(mut p) = pgid.lock() {
                    *p = Some(n as u32);
                }
            }
            Some("O") => {
                tokio::io::copy(&mut (&mut w.stdout).take(n), &mut out).await?;
            }
            Some("E") => {
                tokio::io::copy(&mut (&mut w.stdout).take(n), &mut err).await?;
            }
            Some("X") => {
                let rc = value.and_then(|v| v.parse::<i32>().ok()).unwrap_or(-1);
                let timed_out = limit > 0 && (rc == 124 || rc == 137);
                let (code, signal) = if rc > 128 && rc < 160 && !timed_out {
                    (None, Some(rc - 128))
                } else {
                    (Some(rc), None)
                };
                return Ok(TaskExit {
                    code,
                    signal,
                    timed_out,
                });
            }
            _ => {}
        }
    }
}

/// The script a worker runs: working directory and environment first, all quoted.
fn script(cmd: &TaskCommand) -> String {
    let mut s = format!(
        "cd {} || exit 125\n",
        shell_quote(&cmd.cwd.display().to_string())
    );
    for (k, v) in &cmd.env {
        s.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    s.push_str(&cmd.command);
    s
}

/// Marks the remote task for killing if the future running it is dropped (a cancel):
/// [`SshExecutor::shutdown`] then kills it before closing the connections.
struct RemoteGuard<'a> {
    exec: &'a SshExecutor,
    slot: usize,
    pgid: Arc<std::sync::Mutex<Option<u32>>>,
    armed: bool,
}

impl Drop for RemoteGuard<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Ok(p) = self.pgid.lock()
            && let Some(pgid) = *p
            && let Ok(mut k) = self.exec.to_kill.lock()
        {
            k.push((self.slot, pgid));
        }
    }
}

#[async_trait]
impl Executor for SshExecutor {
    fn slots(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| self.hosts[s.host].to_string())
            .collect()
    }

    async fn prepare(&self) -> Result<Vec<(String, String)>, ExecError> {
        let _ = std::fs::create_dir_all(&self.opts.socket_dir);
        let masters_per_host = self.slots.iter().map(|s| s.master + 1).max().unwrap_or(0);
        let starts = (0..self.hosts.len()).flat_map(|h| (0..masters_per_host).map(move |m| (h, m)));
        let results = futures::future::join_all(
            starts.map(|(h, m)| async move { (h, self.start_master(h, m).await) }),
        )
        .await;
        let mut failed: BTreeMap<usize, String> = BTreeMap::new();
        let mut masters = self.masters.lock().await;
        for (h, r) in results {
            match r {
                Ok(child) => masters.push(child),
                Err(e) => {
                    failed.entry(h).or_insert_with(|| e.to_string());
                }
            }
        }
        drop(masters);
        // Kill tasks that a crashed earlier run of this state left running.
        let cleanup = format!(
            "for f in \"${{TMPDIR:-/tmp}}/stage-{}\"/slot-*.pgid; do [ -f \"$f\" ] && kill -KILL -- -\"$(cat \"$f\")\" 2>/dev/null; rm -f \"$f\"; done; true",
            self.opts.token
        );
        futures::future::join_all(
            (0..self.hosts.len())
                .filter(|h| !failed.contains_key(h))
                .map(|h| {
                    let mut c = self.ssh(h, 0);
                    c.arg(&cleanup).stdout(Stdio::null()).stderr(Stdio::null());
                    async move { c.status().await }
                }),
        )
        .await;
        Ok(failed
            .into_iter()
            .map(|(h, e)| (self.hosts[h].to_string(), e))
            .collect())
    }

    async fn run(&self, slot: usize, cmd: &TaskCommand) -> Result<TaskExit, ExecError> {
        let Some(s) = self.slots.get(slot) else {
            return Err(ExecError::Spawn(std::io::Error::other("no such slot")));
        };
        let mut guard_worker = s.worker.lock().await;
        let mut w = match guard_worker.take() {
            Some(w) => w,
            None => self.worker(s).await?,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pgid = Arc::new(std::sync::Mutex::new(None));
        let mut guard = RemoteGuard {
            exec: self,
            slot,
            pgid: pgid.clone(),
            armed: true,
        };
        let script = script(cmd);
        // A backstop in case the node's `timeout` cannot act (the node is wedged).
        let backstop = cmd.timeout.map(|t| t + Duration::from_secs(15));
        let result = match backstop {
            Some(limit) => tokio::time::timeout(limit, exchange(&mut w, id, cmd, &script, &pgid))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the node stopped answering"))),
            None => exchange(&mut w, id, cmd, &script, &pgid).await,
        };
        match result {
            Ok(exit) => {
                guard.armed = false;
                *guard_worker = Some(w);
                Ok(exit)
            }
            Err(e) => {
                // The session is unusable. If the task started, kill it; then reconnect (with
                // backoff) to tell a dropped connection from a lost host.
                let _ = w.child.start_kill();
                guard.armed = false;
                let started = pgid.lock().ok().and_then(|p| *p);
                match self.worker(s).await {
                    Ok(fresh) => {
                        if let Some(g) = started {
                            self.kill_remote(s, g).await;
                        }
                        *guard_worker = Some(fresh);
                        Err(ExecError::Dropped {
                            host: self.hosts[s.host].to_string(),
                            message: e.to_string(),
                        })
                    }
                    Err(lost) => Err(lost),
                }
            }
        }
    }

    /// One plain session per host, all at once: no master and no worker, since each host
    /// runs a single command (the shape of pdsh and clush).
    async fn broadcast(&self, command: &str) -> Vec<HostOutput> {
        futures::future::join_all((0..self.hosts.len()).map(|h| {
            let mut c = self.ssh(h, 0);
            c.args(["-o", "ControlPath=none"])
                .arg(format!("exec sh -c {}", shell_quote(command)))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let host = self.hosts[h].to_string();
            async move { HostOutput::from_output(host, c.output().await) }
        }))
        .await
    }

    async fn shutdown(&self) {
        tracing::debug!("closing ssh workers and masters");
        // Tasks abandoned by a cancel: kill their process groups while the masters are up.
        let kills: Vec<(usize, u32)> = self
            .to_kill
            .lock()
            .map(|mut k| k.drain(..).collect())
            .unwrap_or_default();
        futures::future::join_all(
            kills
                .into_iter()
                .map(|(slot, pgid)| self.kill_remote(&self.slots[slot], pgid)),
        )
        .await;
        // Closing a worker's stdin ends its loop, its session and its ssh client.
        let mut workers = Vec::new();
        for s in &self.slots {
            if let Some(w) = s.worker.lock().await.take() {
                let Worker {
                    mut child, stdin, ..
                } = w;
                drop(stdin);
                workers.push(async move {
                    if tokio::time::timeout(Duration::from_secs(2), child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.start_kill();
                    }
                });
            }
        }
        futures::future::join_all(workers).await;
        for mut m in self.masters.lock().await.drain(..) {
            let _ = m.start_kill();
            let _ = m.wait().await;
        }
    }
}
