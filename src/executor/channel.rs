//! One host's connection: a single `ssh` process running the remote worker (`worker.sh`),
//! which carries every task of the host's slots at once. Requests go down its stdin; one
//! reader demultiplexes the replies by task id, streaming each task's output straight to
//! its log file, so memory stays bounded whatever the tasks print and one chatty task
//! delays no other (its output waits on the node until it ends).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

use super::TaskExit;

pub const WORKER: &str = include_str!("worker.sh");

/// A task sent and not yet finished. Its logs are opened only while a frame of output is
/// written, so open files grow with hosts, not with running tasks (120 slots on each of a
/// thousand hosts would need 240,000 otherwise).
struct Pending {
    out: std::path::PathBuf,
    err: std::path::PathBuf,
    /// Whether the task had a timeout: `timeout`'s 124/137 then mean it fired.
    limited: bool,
    done: oneshot::Sender<std::io::Result<TaskExit>>,
}

type PendingMap = Arc<std::sync::Mutex<HashMap<u64, Pending>>>;

/// A task's exit, once the worker reports it.
pub type Exit = oneshot::Receiver<std::io::Result<TaskExit>>;

pub struct Channel {
    child: std::sync::Mutex<Option<Child>>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: PendingMap,
    closed: Arc<AtomicBool>,
}

impl Channel {
    /// Starts the worker through `ssh` (the command line up to the remote command) and waits
    /// for it to say it is ready.
    pub async fn open(mut ssh: Command, base: &str, host_key: &str) -> Result<Channel, String> {
        ssh.arg(format!(
            "exec sh -c {} stage-worker \"{base}\" {}",
            crate::spec::template::shell_quote(WORKER),
            crate::spec::template::shell_quote(host_key)
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = ssh.spawn().map_err(|e| format!("cannot run ssh: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("ssh has no pipes".into());
        };
        let stderr = child.stderr.take();
        let mut stdout = BufReader::new(stdout);
        let mut ready = String::new();
        let said =
            tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut ready)).await;
        match said {
            Ok(Ok(n)) if n > 0 && ready.trim() == "READY" => {}
            Ok(Ok(n)) if n > 0 => {
                let _ = child.start_kill();
                return Err(format!("the remote worker did not start: {}", ready.trim()));
            }
            _ => {
                let _ = child.start_kill();
                let mut why = String::new();
                if let Some(mut e) = stderr {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut why))
                            .await;
                }
                let why = why.trim();
                return Err(if why.is_empty() {
                    "the remote worker did not start".into()
                } else {
                    why.lines().last().unwrap_or(why).to_string()
                });
            }
        }
        // What ssh says later (warnings) is not the tasks' output: drained, not kept.
        if let Some(mut e) = stderr {
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut e, &mut sink).await;
            });
        }
        let pending: PendingMap = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(read_replies(stdout, pending.clone(), closed.clone()));
        Ok(Channel {
            child: std::sync::Mutex::new(Some(child)),
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            closed,
        })
    }

    /// Whether the connection is gone (its replies ended).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Sends task `id`: `script` run under a `limit` in seconds (0 for none), its output
    /// appended to the files `out` and `err` (which exist).
    pub async fn start(
        &self,
        id: u64,
        limit: u64,
        script: &str,
        out: &std::path::Path,
        err: &std::path::Path,
    ) -> std::io::Result<Exit> {
        let end = format!("__STAGE_END_{id}_{:x}__", crate::digest::nonce());
        // A script holding the marker line cannot be framed: it fails as unrunnable.
        let body = if script.lines().any(|l| l == end) {
            "exit 125"
        } else {
            script
        };
        let req = format!("T {id} {limit} {end}\n{body}\n{end}\n");
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(
            id,
            Pending {
                out: out.to_path_buf(),
                err: err.to_path_buf(),
                limited: limit > 0,
                done: tx,
            },
        );
        if let Err(e) = self.send(req.as_bytes()).await {
            self.lock_pending().remove(&id);
            return Err(e);
        }
        Ok(rx)
    }

    /// Kills task `id`'s process group on the host (TERM, then KILL a second later).
    pub async fn kill(&self, id: u64) -> std::io::Result<()> {
        self.send(format!("K {id}\n").as_bytes()).await
    }

    /// Stops caring about a task (its future was dropped: a cancel).
    pub fn forget(&self, id: u64) {
        self.lock_pending().remove(&id);
    }

    /// Ends the connection at once (the host stopped answering).
    pub fn abort(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut c) = self.child.lock()
            && let Some(child) = c.as_mut()
        {
            let _ = child.start_kill();
        }
    }

    /// Closes the session: the worker kills whatever still runs and exits, then so does ssh.
    pub async fn close(&self) {
        drop(self.stdin.lock().await.take());
        let child = self.child.lock().ok().and_then(|mut c| c.take());
        if let Some(mut child) = child
            && tokio::time::timeout(Duration::from_secs(3), child.wait())
                .await
                .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().await;
        let Some(w) = stdin.as_mut() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the connection is closed",
            ));
        };
        w.write_all(bytes).await?;
        w.flush().await
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one reader of a channel's replies, until they end; then every task still pending
/// learns that the connection closed.
async fn read_replies(
    mut stdout: BufReader<ChildStdout>,
    pending: PendingMap,
    closed: Arc<AtomicBool>,
) {
    let lock = || pending.lock().unwrap_or_else(|e| e.into_inner());
    let mut line = String::new();
    let why = loop {
        line.clear();
        match stdout.read_line(&mut line).await {
            Ok(0) => break "the connection to the host closed".to_string(),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
        let mut parts = line.split_whitespace();
        let (kind, id, value) = (parts.next(), parts.next(), parts.next());
        let Some(id) = id.and_then(|i| i.parse::<u64>().ok()) else {
            continue;
        };
        let n: u64 = value.and_then(|v| v.parse().ok()).unwrap_or(0);
        match kind {
            Some(k @ ("O" | "E")) => {
                let path = lock().get(&id).map(|p| {
                    if k == "O" {
                        p.out.clone()
                    } else {
                        p.err.clone()
                    }
                });
                let mut frame = (&mut stdout).take(n);
                let copied = match path {
                    Some(path) => append(&path, &mut frame).await,
                    // A forgotten task's output is read and dropped, to stay in frame.
                    None => tokio::io::copy(&mut frame, &mut tokio::io::sink()).await,
                };
                if let Err(e) = copied {
                    break e.to_string();
                }
            }
            Some("X") => {
                let Some(p) = lock().remove(&id) else {
                    continue;
                };
                let rc = value.and_then(|v| v.parse::<i32>().ok()).unwrap_or(-1);
                let timed_out = p.limited && (rc == 124 || rc == 137);
                let (code, signal) = if rc > 128 && rc < 160 && !timed_out {
                    (None, Some(rc - 128))
                } else {
                    (Some(rc), None)
                };
                let _ = p.done.send(Ok(TaskExit {
                    code,
                    signal,
                    timed_out,
                }));
            }
            _ => {}
        }
    };
    closed.store(true, Ordering::SeqCst);
    for (_, p) in lock().drain() {
        let _ = p.done.send(Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            why.clone(),
        )));
    }
}

/// Appends one frame of a task's output to its log. A log that cannot be written loses the
/// frame (said in the log's place), never the channel: the other tasks go on.
async fn append(
    path: &std::path::Path,
    frame: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<u64> {
    let file = tokio::fs::OpenOptions::new().append(true).open(path).await;
    match file {
        Ok(mut f) => {
            let n = tokio::io::copy(frame, &mut f).await?;
            f.flush().await?;
            Ok(n)
        }
        Err(e) => {
            tracing::warn!("cannot write the task log {}: {e}", path.display());
            tokio::io::copy(frame, &mut tokio::io::sink()).await
        }
    }
}
