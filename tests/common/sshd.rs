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
    /// Node i's own cgroup, where the machine has cgroup v2.
    groups: Vec<Option<Cgroup>>,
    /// Every node is in a cgroup of its own.
    contained: bool,
}

/// A cgroup (v2) holding one node's sshd and all it starts, tasks in their own sessions
/// included. Writing `cgroup.kill` kills all of it at once, as a crashed node loses it: no
/// process forks in between, and no id taken from a listing can have been reused by another
/// test's process by the time the signal is sent (at 2,000 forks a second, ids wrap in
/// seconds).
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Option<Cgroup> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        let root = mounts.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(at))
        })?;
        let dir = root.join(name);
        std::fs::create_dir(&dir).ok()?;
        let group = Cgroup(dir);
        group.0.join("cgroup.kill").exists().then_some(group)
    }

    fn adopt(&self, pid: u32) -> bool {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).is_ok()
    }

    /// Kills every process in the group and waits (at most 10 s) until it is empty.
    fn kill(&self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(self.0.join("cgroup.events"))
            .is_ok_and(|e| e.contains("populated 1"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir(&self.0);
    }
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
        let mut groups = Vec::new();
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
            // Before it accepts a connection, so that all it forks is in the group.
            let group = Cgroup::new(&format!("stage-test-{}-{prefix}.{i}", std::process::id()))
                .filter(|g| g.adopt(child.id()));
            groups.push(group);
            daemons.push(Some(child));
        }
        let nodes = Nodes {
            dir,
            prefix,
            daemons,
            contained: groups.iter().all(Option::is_some),
            groups,
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
        if let Some(group) = self.groups[i].take() {
            drop(group);
            if let Some(mut c) = self.daemons[i].take() {
                let _ = c.wait();
            }
        } else if let Some(mut c) = self.daemons[i].take() {
            // The listener, its per-connection daemons, their sessions and tasks: all of it.
            let tree = descendants(c.id());
            let _ = c.kill();
            // Some have exited by now: their "No such process" is expected.
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(tree.iter().map(|p| p.to_string()))
                .stderr(std::process::Stdio::null())
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let contained = self.contained;
        self.groups.clear();
        for c in self.daemons.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !contained {
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", &self.dir.path().display().to_string()])
                .status();
        }
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
