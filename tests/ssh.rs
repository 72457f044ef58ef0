//! Fan-out over real sshd nodes on loopback addresses.

mod common;
#[path = "common/sshd.rs"]
mod sshd;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use sshd::Nodes;

fn fan_pipeline(
    ws: &Workspace,
    nodes: &Nodes,
    hosts: &str,
    inputs: usize,
    extra: &str,
    timeout: &str,
) -> std::path::PathBuf {
    for i in 0..inputs {
        ws.write(&format!("blob/in/f{i:03}.txt"), format!("input {i}\n"));
    }
    ws.write(
        "fan.yaml",
        format!(
            "name: fan\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: {{ container: blob }}\npool:\n  hosts: \"{hosts}\"\n  slots: 3\n  ssh_config: {}\nsteps:\n  - import: {{}}\n  - process:\n      name: work\n      foreach: in/*.txt\n      outputs: [\"out/{{{{name}}}}\"]\n{timeout}      command: mkdir -p out nodes && echo $SSH_CONNECTION | cut -d' ' -f3 > nodes/{{{{name}}}} && echo {{{{rel}}}} >> counter && {extra} tr a-z A-Z < {{{{input}}}} > {{{{output}}}}\n",
            nodes.ssh_config().display()
        ),
    )
}

fn nodes_used(ws: &Workspace) -> BTreeSet<String> {
    ws.tree("lustre/nodes")
        .values()
        .map(|v| text(v).trim().to_string())
        .collect()
}

fn check_outputs(ws: &Workspace, n: usize) {
    let out = ws.tree("lustre/out");
    assert_eq!(out.len(), n, "outputs: {:?}", out.keys());
    for (name, body) in out {
        let i: usize = name[1..name.len() - 4].parse().unwrap();
        assert_eq!(text(&body), format!("INPUT {i}\n"));
    }
}

#[test]
fn tasks_fan_out_over_four_nodes() {
    let nodes = Nodes::start(4, true);
    let ws = Workspace::new();
    let p = fan_pipeline(&ws, &nodes, &nodes.hostlist(), 40, "", "");
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    check_outputs(&ws, 40);
    let used = nodes_used(&ws);
    let expected: BTreeSet<String> = (0..4).map(|i| nodes.addr(i)).collect();
    assert_eq!(used, expected, "every node takes work");
    // Host keys were learned into the state directory, not the user's known_hosts.
    let kh = std::fs::read_to_string(ws.state().join("known_hosts")).unwrap();
    assert_eq!(kh.lines().count(), 4, "{kh}");
    // Journal names the host of every task.
    let o = ws.stage(&["status", "--tasks", p.to_str().unwrap()]);
    assert!(
        text(&o.stdout).contains(&format!("host={}", nodes.addr(2))),
        "{}",
        text(&o.stdout)
    );
    // And a rerun has nothing to do, without touching the nodes.
    let again = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&again, 0);
    assert!(text(&again.stderr).contains("nothing to do"));
}

#[test]
fn a_node_lost_mid_run_is_quarantined_and_its_tasks_finish_elsewhere() {
    let mut nodes = Nodes::start(4, true);
    let ws = Workspace::new();
    let p = fan_pipeline(&ws, &nodes, &nodes.hostlist(), 48, "sleep 0.2 &&", "");
    let child = ws
        .cmd(&["run", p.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let counter = ws.path().join("lustre/counter");
    wait_for_lines(&counter, 12);
    nodes.kill(1);
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 0);
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{} quarantined", nodes.addr(1))),
        "{err}"
    );
    check_outputs(&ws, 48);
}

#[test]
fn an_unreachable_host_gets_no_tasks() {
    let nodes = Nodes::start(2, true);
    let ws = Workspace::new();
    // Node 2 of the list (index 2) has no daemon.
    let hosts = format!("{}.[2-4]", nodes.prefix);
    let p = fan_pipeline(&ws, &nodes, &hosts, 12, "", "");
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, &format!("{}.4 is unreachable", nodes.prefix));
    check_outputs(&ws, 12);
}

#[test]
fn a_hung_task_is_killed_on_its_node_by_the_timeout() {
    let nodes = Nodes::start(2, true);
    let ws = Workspace::new();
    let p = fan_pipeline(
        &ws,
        &nodes,
        &nodes.hostlist(),
        2,
        "sleep 61.7 &&",
        "      timeout: 1s\n",
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "timed out");
    assert_no_process(ws.path(), "sleep 61.7");
}

#[test]
fn ctrl_c_kills_remote_tasks() {
    let nodes = Nodes::start(2, true);
    let ws = Workspace::new();
    let p = fan_pipeline(&ws, &nodes, &nodes.hostlist(), 6, "sleep 62.3 &&", "");
    let child = ws.cmd(&["run", "-q", p.to_str().unwrap()]).spawn().unwrap();
    let counter = ws.path().join("lustre/counter");
    wait_for_lines(&counter, 1);
    std::thread::sleep(Duration::from_millis(300));
    ctrl_c_leaves_nothing(child, &ws, "sleep 62.3");
}

/// Sends the run SIGINT: it stops with 130 and nothing matching `pattern` is left running.
fn ctrl_c_leaves_nothing(child: std::process::Child, ws: &Workspace, pattern: &str) {
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    assert_no_process(ws.path(), pattern);
}

#[test]
fn sigkill_mid_run_then_resume_completes_every_task_once_or_twice() {
    let nodes = Nodes::start(3, true);
    let ws = Workspace::new();
    let p = fan_pipeline(&ws, &nodes, &nodes.hostlist(), 30, "sleep 0.1 &&", "");
    let mut child = ws.cmd(&["run", "-q", p.to_str().unwrap()]).spawn().unwrap();
    let counter = ws.path().join("lustre/counter");
    wait_for_lines(&counter, 10);
    child.kill().unwrap();
    child.wait().unwrap();
    let running: BTreeSet<String> = task_states(&ws, &p)
        .into_iter()
        .filter(|(_, s)| s == "dispatched" || s == "running")
        .map(|(k, _)| k.trim_start_matches("work/").to_string())
        .collect();
    let o = ws.stage(&["run", "--wait", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    check_outputs(&ws, 30);
    let counts = std::fs::read_to_string(&counter).unwrap();
    for i in 0..30 {
        let key = format!("in/f{i:03}.txt");
        let n = counts.lines().filter(|l| *l == key).count();
        assert!(n >= 1, "{key} never ran");
        assert!(
            n == 1 || running.contains(&key),
            "{key} ran {n} times but was not running at the kill"
        );
    }
}

/// A worker killed without killing its tasks (the OOM killer, an admin's `kill -9`) leaves
/// them running on the node, with stage dead beside it. The next run's workers kill them
/// before those tasks start again: a task never runs beside itself. Both nodes share one
/// `/tmp`, as hosts sharing an NFS `$TMPDIR` do.
#[test]
fn tasks_a_dead_worker_left_running_are_killed_before_they_run_again() {
    let nodes = Nodes::start(2, true);
    let ws = Workspace::new();
    let p = fan_pipeline(&ws, &nodes, &nodes.hostlist(), 6, "sleep 63.1 &&", "");
    let mut child = ws.cmd(&["run", "-q", p.to_str().unwrap()]).spawn().unwrap();
    wait_for_lines(&ws.path().join("lustre/counter"), 6);
    // The workers (and their subshells) on the nodes, not the local ssh clients running them:
    // a client's death would end the workers' input, and they would kill their tasks.
    let host = format!("{}.", nodes.prefix);
    let workers: Vec<u32> = processes()
        .into_iter()
        .filter(|(p, cmd)| {
            cmd.contains("stage-worker")
                && cmd.contains(&host)
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() != "ssh")
        })
        .map(|(p, _)| p)
        .collect();
    assert!(workers.len() >= 2, "workers: {workers:?}");
    std::process::Command::new("kill")
        .arg("-KILL")
        .args(workers.iter().map(|p| p.to_string()))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(processes_under(ws.path(), "sleep 63.1").len(), 6);
    let yaml = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, yaml.replace("sleep 63.1 &&", "")).unwrap();
    let o = ws.stage(&["run", "--wait", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_no_process(ws.path(), "sleep 63.1");
    check_outputs(&ws, 6);
}

/// The record of a group whose id now belongs to another process (the leader's start time
/// differs) is dropped, not killed: ids are reused, and the worker may run as root.
#[test]
fn a_recorded_group_whose_id_was_reused_is_left_alone() {
    let nodes = Nodes::start(1, true);
    let ws = Workspace::new();
    let p = fan_pipeline(&ws, &nodes, &nodes.hostlist(), 1, "", "");
    assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 0);
    let host = nodes.addr(0);
    let records: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.path().join(&host))
        .filter(|d| d.is_dir())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let mut bystander = std::process::Command::new("setsid")
        .args(["sleep", "64.2"])
        .current_dir(ws.path())
        .spawn()
        .unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let record = records[0].join("7.pgid");
    std::fs::write(&record, format!("{} 1 {}", bystander.id(), boot.trim())).unwrap();
    let yaml = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, yaml.replace("tr a-z A-Z", "tr a-z A-Z ")).unwrap();
    assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 0);
    assert!(!record.exists(), "the record was not read");
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a bystander was killed"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn hostile_names_are_safe_over_ssh() {
    let nodes = Nodes::start(2, true);
    let ws = Workspace::new();
    let names = [
        "sp ace.txt",
        "q'uote.txt",
        "d\"q.txt",
        "$(touch PWNED).txt",
        "`touch PWNED2`.txt",
        "nl\nx.txt",
        "-dash.txt",
    ];
    for n in names {
        ws.write(&format!("blob/in/{n}"), n);
    }
    let p = ws.write(
        "h.yaml",
        format!(
            "name: hostile\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: {{ container: blob }}\npool:\n  hosts: \"{}\"\n  slots: 2\n  ssh_config: {}\nsteps:\n  - import: {{}}\n  - process:\n      foreach: in/*\n      outputs: [\"out/{{{{name}}}}\"]\n      env: {{ GREETING: \"it's $HOME `x`\" }}\n      command: mkdir -p out && cat -- {{{{input}}}} > {{{{output}}}} && printf '%s\\n' \"$GREETING\" > greeting\n",
            nodes.hostlist(),
            nodes.ssh_config().display()
        ),
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    for n in names {
        assert_eq!(
            std::fs::read_to_string(ws.path().join("lustre/out").join(n)).unwrap(),
            n
        );
    }
    assert!(!ws.path().join("lustre/PWNED").exists() && !ws.path().join("lustre/PWNED2").exists());
    assert_eq!(
        std::fs::read_to_string(ws.path().join("lustre/greeting")).unwrap(),
        "it's $HOME `x`\n"
    );
}

#[test]
fn exec_runs_a_command_once_on_every_host() {
    let mut nodes = Nodes::start(3, true);
    let ws = Workspace::new();
    let p = fan_pipeline(&ws, &nodes, &nodes.hostlist(), 1, "", "");
    let o = ws.stage(&[
        "exec",
        p.to_str().unwrap(),
        "--",
        "echo",
        "$SSH_CONNECTION",
        "|",
        "cut",
        "-d' '",
        "-f3",
    ]);
    assert_exit(&o, 0);
    let out = text(&o.stdout);
    for i in 0..3 {
        let a = nodes.addr(i);
        assert!(out.contains(&format!("{a}: {a}\n")), "{out}");
    }
    nodes.kill(2);
    let o = ws.stage(&["exec", p.to_str().unwrap(), "--", "true"]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "failed on 1 of 3 hosts");
}

/// The ssh clients this process (`pid`) runs.
fn ssh_children(pid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) && comm.ends_with("(ssh") {
            n += 1;
        }
    }
    n
}

/// A run of `tasks` tasks at 120 slots per host, from a client held to 1,024 open files (soft
/// and hard, as on many login nodes).
fn start_at_scale(
    ws: &Workspace,
    nodes: &Nodes,
    tasks: usize,
    extra: &str,
    timeout: &str,
) -> (std::process::Child, std::path::PathBuf) {
    let p = fan_pipeline(ws, nodes, &nodes.hostlist(), tasks, extra, timeout);
    let yaml = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, yaml.replace("slots: 3", "slots: 120")).unwrap();
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(STAGE)
        .args(["--state-dir"])
        .arg(ws.state())
        .args(["run", p.to_str().unwrap()])
        .current_dir(ws.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (child, p)
}

/// Waits until `n` tasks have started (each appends a line to `lustre/counter` first).
fn wait_started(ws: &Workspace, n: usize) {
    let counter = ws.path().join("lustre/counter");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while std::fs::read_to_string(&counter).map_or(0, |c| c.lines().count()) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "not every slot got a task"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The seed's pool shape and beyond, on sshd as real nodes run it (stock `MaxStartups
/// 10:30:100`, `MaxSessions 10`): 16 hosts × 120 slots, every slot busy at once with one local
/// ssh process per host; then a node dies with its 120 tasks running, and they finish
/// elsewhere.
#[test]
fn sixteen_stock_hosts_with_120_slots_each_keep_every_slot_busy() {
    let mut nodes = Nodes::start(16, false);
    let ws = Workspace::new();
    let tasks = 16 * 120;
    // Every task holds its slot until the test has seen them all running.
    let hold = "while [ ! -e release ]; do sleep 1; done &&";
    let started = std::time::Instant::now();
    let (child, _) = start_at_scale(&ws, &nodes, tasks, hold, "");
    wait_started(&ws, tasks);
    let all_busy = started.elapsed();
    let clients = ssh_children(child.id());
    assert!(clients <= 16, "{clients} local ssh processes for 16 hosts");
    nodes.kill(5);
    std::fs::write(ws.path().join("lustre/release"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 0);
    let err = text(&o.stderr);
    let lost = format!("{} quarantined", nodes.addr(5));
    assert_eq!(err.matches(&lost).count(), 1, "{err}");
    check_outputs(&ws, tasks);
    // The lost node's tasks ran again elsewhere.
    let counter = std::fs::read_to_string(ws.path().join("lustre/counter")).unwrap();
    assert!(counter.lines().count() >= tasks + 120, "no task was moved");
    eprintln!("{tasks} slots busy {all_busy:?} after the start, {clients} ssh clients");
}

/// At the same scale, every task's whole tree is killed on its node: by the timeout, then by
/// Ctrl-C in a second run.
#[test]
fn at_scale_timeouts_and_ctrl_c_leave_nothing_on_the_nodes() {
    let nodes = Nodes::start(16, false);
    let ws = Workspace::new();
    let tasks = 16 * 120;
    let (child, p) = start_at_scale(&ws, &nodes, tasks, "sleep 61.7 &&", "      timeout: 3s\n");
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 1);
    assert_has(&o.stderr, "timed out");
    assert_no_process(ws.path(), "sleep 61.7");
    let states = task_states(&ws, &p);
    assert_eq!(states.len(), tasks);
    assert!(states.values().all(|s| s == "failed"), "{states:?}");

    std::fs::remove_file(ws.path().join("lustre/counter")).unwrap();
    let (child, _) = start_at_scale(&ws, &nodes, tasks, "sleep 62.3 &&", "");
    wait_started(&ws, tasks);
    // Each task counts itself just before it starts its sleep.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while processes_under(ws.path(), "sleep 62.3").len() < tasks {
        assert!(
            std::time::Instant::now() < deadline,
            "not every task is running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ctrl_c_leaves_nothing(child, &ws, "sleep 62.3");
}
