//! Real OpenSSH daemons on loopback addresses, one per simulated compute node.

// Shared by several test binaries; each uses part of it.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const PORT: u16 = 22022;

pub struct Nodes {
    pub dir: tempfile::TempDir,
    /// 127.A.B.(2+i) for node i: a /24 of its own per test, so tests run in parallel.
    pub prefix: String,
    pub daemons: Vec<Option<Child>>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)")
        .success();
    assert!(ok);
}

impl Nodes {
    /// Starts `n` sshd daemons. `fast` applies the test-bed tuning (no login-shell rc work, no
    /// post-quantum key exchange, high MaxSessions and MaxStartups); stock leaves sshd's
    /// defaults (`MaxSessions 10`, `MaxStartups 10:30:100`), as real nodes have them.
    pub fn start(n: usize, fast: bool) -> Nodes {
        Self::start_with(n, fast, |_| String::new())
    }

    /// The same, with more sshd configuration: `extra(dir)` gets the nodes' directory. Its
    /// SetEnv, if any, is the one sshd uses (it keeps the first): keep `SHLVL=1` in it.
    pub fn start_with(n: usize, fast: bool, extra: impl Fn(&Path) -> String) -> Nodes {
        let dir = tempfile::tempdir().unwrap();
        let k = NEXT.fetch_add(1, Ordering::SeqCst) + std::process::id() % 200 * 50;
        let prefix = format!("127.{}.{}", 10 + (k / 250) % 240, k % 250);
        keygen(&dir.path().join("client"));
        std::fs::create_dir_all("/run/sshd").ok();
        let mut daemons = Vec::new();
        for i in 0..n {
            let key = dir.path().join(format!("host{i}"));
            keygen(&key);
            let cfg = dir.path().join(format!("sshd{i}.conf"));
            let mut text = format!(
                "ListenAddress {prefix}.{}:{PORT}\nHostKey {}\nPidFile {}/sshd{i}.pid\nAuthorizedKeysFile {}/client.pub\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\nAcceptEnv LANG LC_*\n",
                2 + i,
                key.display(),
                dir.path().display(),
                dir.path().display()
            );
            // Before the tuning: sshd keeps the first SetEnv it reads.
            text.push_str(&extra(dir.path()));
            if fast {
                text.push_str("SetEnv SHLVL=1\nKexAlgorithms -sntrup761x25519-sha512@openssh.com,sntrup761x25519-sha512\nMaxSessions 200\nMaxStartups 200:30:400\n");
            }
            std::fs::write(&cfg, text).unwrap();
            let child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(&cfg)
                .spawn()
                .expect("sshd (apt-get install openssh-server)");
            daemons.push(Some(child));
        }
        let nodes = Nodes {
            dir,
            prefix,
            daemons,
        };
        for i in 0..n {
            nodes.wait_listening(i);
        }
        std::fs::write(
            nodes.ssh_config(),
            format!(
                "Host 127.*\n  User root\n  Port {PORT}\n  IdentityFile {}/client\n  IdentitiesOnly yes\n",
                nodes.dir.path().display()
            ),
        )
        .unwrap();
        nodes
    }

    fn wait_listening(&self, i: usize) {
        let addr = format!("{}:{PORT}", self.addr(i));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "sshd on {addr} never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 2 + i)
    }

    /// The nodes in Slurm host-list syntax.
    pub fn hostlist(&self) -> String {
        format!("{}.[2-{}]", self.prefix, 1 + self.daemons.len())
    }

    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// Kills node i's sshd and every session it serves, as a crashed node would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.daemons[i].take() {
            // The listener, its per-connection daemons, their sessions and tasks: all of it.
            let tree = descendants(c.id());
            let _ = c.kill();
            for p in tree {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.daemons.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.dir.path().display().to_string()])
            .status();
    }
}

/// Every descendant of `pid` (from /proc), deepest last.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Fields after the command name, which may itself hold spaces and parentheses.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let ppid: u32 = rest
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            parent_of.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}
