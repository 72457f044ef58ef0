//! A real single-node Slurm (Debian's slurmctld + slurmd, munge) per test, on free loopback
//! ports, with the test's Prolog/Epilog; killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub struct Slurm {
    pub dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// munged serves every Slurm on the machine; start it once if it is not running.
///
/// Liveness is asked of the daemon (`munge -n`), not read from the socket file: machine images
/// ship a stale `/run/munge/munge.socket.2` with no daemon behind it.
fn munge() {
    static START: Once = Once::new();
    START.call_once(|| {
        let alive = || {
            Command::new("munge")
                .arg("-n")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if alive() {
            return;
        }
        std::fs::create_dir_all("/run/munge").unwrap();
        let _ = Command::new("chown")
            .args(["munge:munge", "/run/munge"])
            .status();
        if !Path::new("/etc/munge/munge.key").exists() {
            let _ = Command::new("runuser")
                .args(["-u", "munge", "--", "mungekey", "-c"])
                .status();
        }
        // --force: take over the stale socket and lock a dead daemon left behind.
        let ok = Command::new("runuser")
            .args(["-u", "munge", "--", "/usr/sbin/munged", "--force"])
            .status()
            .expect("munged (apt-get install munge; scripts/test installs it)")
            .success();
        assert!(ok && alive(), "munged did not start");
    });
}

/// The first node keeps the name the hook tests know.
fn node_name(i: usize) -> String {
    if i == 0 {
        "stagenode".into()
    } else {
        format!("stagenode{i}")
    }
}

impl Slurm {
    /// Starts Slurm with one node and these Prolog and Epilog script bodies.
    pub fn start(prolog: &str, epilog: &str) -> Slurm {
        Slurm::with_nodes(1, prolog, epilog)
    }

    /// Starts Slurm with `nodes` slurmd daemons of 2 CPUs each (all on this machine, each on
    /// its own port), so arrays run wider than one node lets them.
    pub fn with_nodes(nodes: usize, prolog: &str, epilog: &str) -> Slurm {
        munge();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["state", "spool"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for (name, body) in [("prolog.sh", prolog), ("epilog.sh", epilog)] {
            let p = d.join(name);
            std::fs::write(&p, body).unwrap();
            std::os::unix::fs::PermissionsExt::set_mode(
                &mut std::fs::metadata(&p).unwrap().permissions(),
                0o755,
            );
            let _ = Command::new("chmod").arg("755").arg(&p).status();
        }
        let mut slurm = Slurm {
            dir,
            daemons: Vec::new(),
        };
        // Slurm's daemons cannot bind port 0 and say what they got: ports are picked free,
        // and should a parallel test take one before the daemon binds it, the daemon exits
        // and this tries again with new ones.
        for attempt in 1..=3 {
            match slurm.try_start(nodes) {
                Ok(()) => return slurm,
                Err(why) if attempt < 3 => {
                    eprintln!("slurm attempt {attempt}: {why}; again on other ports");
                    slurm.stop();
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(&mut self, nodes: usize) -> Result<(), String> {
        let d = self.dir.path().to_path_buf();
        let ctld_port = free_port();
        let conf = format!(
            "ClusterName=stagetest\nSlurmctldHost=localhost(127.0.0.1)\nSlurmUser=root\nSlurmctldPort={}\nSlurmdPort={}\nAuthType=auth/munge\n\
StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool/%n\nSlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd-%n.pid\n\
SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd-%n.log\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
SelectType=select/cons_tres\nAccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none\n\
MailProg=/bin/true\nReturnToService=2\nSchedulerParameters=bf_interval=1,reduce_completing_frag,sched_min_interval=0,batch_sched_delay=0\n\
KillWait=0\nCompleteWait=0\nSlurmdParameters=config_overrides\nProlog={d}/prolog.sh\nEpilog={d}/epilog.sh\n\
{nodes}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            ctld_port,
            free_port(),
            d = d.display(),
            nodes = (0..nodes)
                .map(|i| format!(
                    "NodeName={} NodeHostname=localhost NodeAddr=127.0.0.1 Port={} CPUs=2 State=UNKNOWN\n",
                    node_name(i),
                    free_port()
                ))
                .collect::<String>(),
        );
        std::fs::write(d.join("slurm.conf"), conf).unwrap();
        let ctld = self.spawn("slurmctld", &["-D", "-i"]);
        self.daemons.push(ctld);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", ctld_port)).is_err() {
            self.check_alive()?;
            if Instant::now() >= deadline {
                return Err("slurmctld never listened".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in 0..nodes {
            let name = node_name(i);
            // Each slurmd its own spool, pid and log (`%n` in slurm.conf): they share a host.
            std::fs::create_dir_all(d.join("spool").join(&name)).unwrap();
            let slurmd = self.spawn("slurmd", &["-D", "-N", &name]);
            self.daemons.push(slurmd);
        }
        loop {
            let state = self.output("sinfo", &["-h", "-N", "-o", "%T"]);
            if state.lines().count() == nodes && state.lines().all(|l| l.trim() == "idle") {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                let log = |name: &str| {
                    let text = std::fs::read_to_string(d.join(name)).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(20)..].join("\n")
                };
                return Err(format!(
                    "slurm did not come up: {state:?}\n--- slurmctld.log\n{}\n--- slurmd-stagenode.log\n{}",
                    log("slurmctld.log"),
                    log("slurmd-stagenode.log")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A daemon that exited while starting (a port taken from under it).
    fn check_alive(&mut self) -> Result<(), String> {
        for d in &mut self.daemons {
            if let Ok(Some(status)) = d.try_wait() {
                return Err(format!("a Slurm daemon exited while starting ({status})"));
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        self.daemons.clear();
        let _ = std::fs::remove_dir_all(self.dir.path().join("state"));
        let _ = std::fs::create_dir_all(self.dir.path().join("state"));
    }

    fn spawn(&self, prog: &str, args: &[&str]) -> Child {
        Command::new(prog)
            .args(args)
            .env("SLURM_CONF", self.conf())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{prog}: {e} (apt-get install slurm-wlm)"))
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    pub fn output(&self, prog: &str, args: &[&str]) -> String {
        // From the test's own directory: a job without `-o` writes slurm-N.out where it was
        // submitted, which must not be the source tree.
        let o = Command::new(prog)
            .args(args)
            .current_dir(self.dir.path())
            .env("SLURM_CONF", self.conf())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Submits a batch script; returns the job id.
    pub fn sbatch(&self, script: &Path) -> String {
        let out = self.output("sbatch", &["--parsable", script.to_str().unwrap()]);
        let id = out.trim().to_string();
        assert!(!id.is_empty(), "sbatch failed for {}", script.display());
        id
    }

    /// A job's `scontrol show job` fields, e.g. `JobState`.
    pub fn job(&self, id: &str) -> String {
        self.output("scontrol", &["show", "job", id])
    }

    /// Waits until `pred` holds for the job's record.
    pub fn wait_job(&self, id: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rec = self.job(id);
            if pred(&rec) {
                return rec;
            }
            assert!(Instant::now() < deadline, "job {id} never {what}:\n{rec}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        self.stop();
    }
}
