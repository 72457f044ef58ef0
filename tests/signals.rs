//! One run per state directory, and clean stops on SIGINT/SIGTERM.

mod common;
use std::time::{Duration, Instant};

use common::*;

fn slow(ws: &Workspace, secs: &str) -> std::path::PathBuf {
    for n in 0..4 {
        ws.write(&format!("blob/in/{n}.txt"), "x");
    }
    ws.write(
        "p.yaml",
        format!(
            "name: slow\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: {{ container: blob }}\npool: {{ slots: 2 }}\nsteps:\n  - import: {{}}\n  - process:\n      name: nap\n      foreach: in/*.txt\n      command: echo {{{{name}}}} >> started.log; sleep {secs}\n"
        ),
    )
}

fn wait_for(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_run_is_refused_while_one_holds_the_state_then_waits_with_wait() {
    let ws = Workspace::new();
    let p = slow(&ws, "0.7");
    let mut first = ws.cmd(&["run", "-q", p.to_str().unwrap()]).spawn().unwrap();
    wait_for(&ws.path().join("lustre/started.log"));

    let second = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&second, 3);
    let err = text(&second.stderr);
    assert!(err.contains("another stage process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");

    // status still answers, from the running process's snapshot.
    let status = ws.stage(&["status", p.to_str().unwrap()]);
    assert_exit(&status, 0);
    assert_has(
        &status.stdout,
        &format!("slow run 1: running (pid {}), step nap", first.id()),
    );

    let waited = ws.stage(&["run", "--wait", p.to_str().unwrap()]);
    assert!(first.wait().unwrap().success());
    assert_exit(&waited, 0);
    assert_has(&waited.stderr, "nothing to do");
}

/// `nap` is a sleep length unique to the test, so the orphan check sees only its own tasks.
fn interrupt_then_resume(signal: i32, nap: &str) {
    let ws = Workspace::new();
    let p = slow(&ws, nap);
    let child = ws.cmd(&["run", "-q", p.to_str().unwrap()]).spawn().unwrap();
    wait_for(&ws.path().join("lustre/started.log"));
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe {
        libc_kill(child.id() as i32, signal);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    assert_no_process(ws.path(), &format!("sleep {nap}"));
    let states = task_states(&ws, &p);
    let interrupted = states.values().filter(|s| *s == "interrupted").count();
    assert_eq!(interrupted, 2, "{states:?}");

    // Resume with fast tasks: the interrupted and the never-started ones run.
    let fast = std::fs::read_to_string(&p)
        .unwrap()
        .replace(&format!("sleep {nap}"), "true");
    std::fs::write(&p, fast).unwrap();
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "4 to run");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn sigint_stops_cleanly_and_kills_tasks() {
    interrupt_then_resume(2, "63.25");
}

#[test]
fn sigterm_stops_cleanly_and_kills_tasks() {
    interrupt_then_resume(15, "64.75");
}

/// What cron does: start `stage run -q` every tick whether or not the last one finished.
#[test]
fn overlapping_runs_from_a_cron_like_loop_run_the_pipeline_exactly_once() {
    let ws = Workspace::new();
    let p = slow(&ws, "0.4");
    let ticks: Vec<std::process::Child> = (0..6)
        .map(|_| {
            let child = ws
                .cmd(&["run", "-q", p.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            child
        })
        .collect();
    let outs: Vec<std::process::Output> = ticks
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Some(3)).count(),
        5,
        "{codes:?}"
    );
    for o in &outs {
        if o.status.success() {
            // Quiet on success: cron mails nothing.
            assert!(
                o.stdout.is_empty() && o.stderr.is_empty(),
                "{}",
                text(&o.stderr)
            );
        } else {
            // One line saying why.
            assert_eq!(
                text(&o.stderr).trim().lines().count(),
                1,
                "{}",
                text(&o.stderr)
            );
            assert_has(&o.stderr, "another stage process");
        }
    }
    let started = std::fs::read_to_string(ws.path().join("lustre/started.log")).unwrap();
    assert_eq!(started.lines().count(), 4, "{started}");

    // The next tick has nothing to do and says nothing; a new input is picked up alone.
    let o = ws.stage(&["run", "-q", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    ws.write("blob/in/new.txt", "y");
    let o = ws.stage(&["run", "-q", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    let started = std::fs::read_to_string(ws.path().join("lustre/started.log")).unwrap();
    assert_eq!(started.lines().count(), 5, "{started}");
    assert_eq!(started.lines().last(), Some("new.txt"));
}
