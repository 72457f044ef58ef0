//! Crash safety: SIGKILL the real binary at chosen points and at random times, resume, and
//! check that the result equals an uninterrupted run, that no finished task ran again and that
//! only tasks the journal showed as possibly running at the kill ran twice.

mod common;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

const INPUTS: usize = 30;

/// A pipeline whose tasks append their name to a counter file, so executions can be counted.
fn crashy(ws: &Workspace) -> PathBuf {
    for i in 0..INPUTS {
        ws.write(
            &format!("blob/in/f{i:02}.txt"),
            format!("input number {i}\n"),
        );
    }
    let counter = ws.path().join("counter");
    ws.write(
        "crashy.yaml",
        format!(
            r#"name: crashy
vars:
  counter: "{}"
filesystem:
  name: crashfs
  hsm: {{ container: blob }}
pool: {{ slots: 3 }}
steps:
  - ensure: {{}}
  - import: {{ prefixes: [in/] }}
  - process:
      name: work
      foreach: in/*.txt
      outputs: ["out/{{{{stem}}}}.txt"]
      command: echo work/{{{{rel}}}} >> {{{{vars.counter}}}} && mkdir -p out && sleep 0.01 && tr a-z A-Z < {{{{input}}}} > {{{{output}}}}
  - process:
      name: total
      inputs: out/*.txt
      outputs: [total.txt]
      command: echo total/- >> {{{{vars.counter}}}} && cat {{{{inputs}}}} > {{{{output}}}}
  - export:
      outputs_of: [work, total]
"#,
            counter.display()
        ),
    )
}

fn counts(ws: &Workspace) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(ws.path().join("counter")).unwrap_or_default();
    let mut m = BTreeMap::new();
    for l in text.lines() {
        *m.entry(l.to_string()).or_default() += 1;
    }
    m
}

fn possibly_running(ws: &Workspace, p: &std::path::Path) -> BTreeSet<String> {
    task_states(ws, p)
        .into_iter()
        .filter(|(_, s)| s == "dispatched" || s == "running")
        .map(|(k, _)| k)
        .collect()
}

fn reference_outputs() -> BTreeMap<String, Vec<u8>> {
    let ws = Workspace::new();
    let p = crashy(&ws);
    assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 0);
    let c = counts(&ws);
    assert_eq!(c.len(), INPUTS + 1);
    assert!(
        c.values().all(|n| *n == 1),
        "uninterrupted run ran a task twice: {c:?}"
    );
    ws.tree("blob")
}

/// Resumes to completion and checks the contract; `running_at_kills` accumulates over crashes.
fn finish_and_check(
    ws: &Workspace,
    p: &std::path::Path,
    reference: &BTreeMap<String, Vec<u8>>,
    running_at_kills: &BTreeMap<String, usize>,
    label: &str,
) {
    let o = ws.stage(&["run", "--wait", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_eq!(
        &ws.tree("blob"),
        reference,
        "{label}: outputs differ from an uninterrupted run"
    );
    let c = counts(ws);
    assert_eq!(c.len(), INPUTS + 1, "{label}: a task never ran: {c:?}");
    for (task, n) in &c {
        let allowed = 1 + running_at_kills.get(task).copied().unwrap_or(0);
        assert!(
            *n <= allowed,
            "{label}: {task} ran {n} times but the journal showed it possibly running at only {} kill(s)",
            allowed - 1
        );
    }
    // And now there is nothing left to do.
    let again = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&again, 0);
    assert!(
        text(&again.stderr).contains("nothing to do"),
        "{label}: {}",
        text(&again.stderr)
    );
}

fn crash_at(ws: &Workspace, p: &std::path::Path, point: &str) -> bool {
    let o = ws
        .cmd(&["run", p.to_str().unwrap()])
        .env("STAGE_CRASH_AT", point)
        .output()
        .unwrap();
    match o.status.signal() {
        Some(9) => true,
        _ => {
            assert_exit(&o, 0);
            false
        }
    }
}

#[test]
fn killed_at_chosen_points_resumes_to_the_same_result() {
    let reference = reference_outputs();
    let points = [
        "ensure.after-intent",
        "import.after-intent",
        "import.after-copy:1",
        "import.after-copy:17",
        "process.after-intent:1",
        "process.after-intent:2",
        "task.after-exit:1",
        "task.after-exit:9",
        "task.after-exit:30",
        "task.after-exit:31",
        "journal.flush:2",
        "journal.flush:5",
        "journal.flush:8",
        "journal.flush:11",
        "journal.flush:14",
        "export.after-intent",
        "export.after-copy:1",
        "export.after-copy:20",
        "export.after-copy:31",
    ];
    let mut crashed = 0;
    for point in points {
        let ws = Workspace::new();
        let p = crashy(&ws);
        let mut at_kill = BTreeMap::new();
        if crash_at(&ws, &p, point) {
            crashed += 1;
            for t in possibly_running(&ws, &p) {
                *at_kill.entry(t).or_default() += 1;
            }
        }
        finish_and_check(&ws, &p, &reference, &at_kill, point);
    }
    assert!(
        crashed >= points.len() - 2,
        "only {crashed} of {} crash points were reached",
        points.len()
    );
}

#[test]
fn repeated_crashes_in_one_state_still_converge() {
    let reference = reference_outputs();
    let ws = Workspace::new();
    let p = crashy(&ws);
    let mut at_kill: BTreeMap<String, usize> = BTreeMap::new();
    for point in [
        "import.after-copy:5",
        "task.after-exit:4",
        "task.after-exit:6",
        "journal.flush:3",
        "export.after-copy:3",
    ] {
        if crash_at(&ws, &p, point) {
            for t in possibly_running(&ws, &p) {
                *at_kill.entry(t).or_default() += 1;
            }
        }
    }
    finish_and_check(&ws, &p, &reference, &at_kill, "repeated");
}

/// Deterministic pseudo-random delays (no dependency, reproducible failures).
fn delays(n: usize) -> Vec<Duration> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(x % 400)
        })
        .collect()
}

#[test]
fn killed_at_random_times_resumes_to_the_same_result() {
    let reference = reference_outputs();
    for (trial, delay) in delays(16).into_iter().enumerate() {
        let ws = Workspace::new();
        let p = crashy(&ws);
        let mut child = ws.cmd(&["run", "-q", p.to_str().unwrap()]).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let mut at_kill = BTreeMap::new();
        if status.signal() == Some(9) {
            for t in possibly_running(&ws, &p) {
                at_kill.insert(t, 1);
            }
        }
        finish_and_check(
            &ws,
            &p,
            &reference,
            &at_kill,
            &format!("trial {trial} ({delay:?})"),
        );
    }
}

#[test]
fn a_failed_journal_write_stops_the_run_loudly_and_a_rerun_finishes() {
    let reference = reference_outputs();
    let ws = Workspace::new();
    let p = crashy(&ws);
    let o = ws
        .cmd(&["run", p.to_str().unwrap()])
        .env("STAGE_FAIL_AT", "journal.flush:6")
        .output()
        .unwrap();
    assert_exit(&o, 4);
    let err = text(&o.stderr);
    assert!(err.contains("cannot write the journal"), "{err}");
    assert!(err.contains("injected"), "{err}");
    // It stopped: the export never ran.
    assert!(!ws.path().join("blob/total.txt").exists());
    let at_kill: BTreeMap<String, usize> = possibly_running(&ws, &p)
        .into_iter()
        .map(|t| (t, 1))
        .collect();
    finish_and_check(&ws, &p, &reference, &at_kill, "failed write");
}

/// A finished step is skipped on resume only if it would do the same thing: an import done
/// into one file system is not done for the file system the edited pipeline now names.
#[test]
fn a_resumed_run_redoes_a_finished_step_when_its_file_system_changed() {
    let ws = Workspace::new();
    ws.write("blob/in/a.txt", "a\n");
    let pipeline = |fs: &str| {
        format!(
            "name: moved\nfilesystem: {{ name: {fs}, hsm: {{ container: blob }} }}\nsteps:\n  - ensure: {{}}\n  - import: {{}}\n  - process: {{ name: work, foreach: in/*.txt, outputs: [\"out/{{{{stem}}}}\"], command: \"mkdir -p out && cp {{{{input}}}} {{{{output}}}}\" }}\n"
        )
    };
    let p = ws.write("p.yaml", pipeline("first"));
    assert!(
        crash_at(&ws, &p, "process.after-intent"),
        "never reached the tasks"
    );
    ws.write("p.yaml", pipeline("second"));
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "import: 1 file imported");
    assert_eq!(
        std::fs::read_to_string(ws.state().join("lustre/second/out/a")).unwrap(),
        "a\n"
    );
}

/// A task that writes its output in chunks to `OUTPUT.part` and renames it at the end, the way
/// real tools do: if a killed run's copy kept running beside the resumed run's, the two would
/// interleave their chunks and one would rename a half-written file into place as a success.
#[test]
fn a_killed_runs_tasks_never_run_beside_the_resumed_run() {
    let ws = Workspace::new();
    for i in 0..4 {
        ws.write(&format!("blob/in/s{i}.txt"), format!("{i}\n"));
    }
    let p = ws.write(
        "chunks.yaml",
        r#"name: chunks
filesystem:
  name: chunkfs
  hsm: { container: blob }
pool: { slots: 4 }
steps:
  - ensure: {}
  - import: { prefixes: [in/] }
  - process:
      name: write
      foreach: in/*.txt
      outputs: ["out/{{stem}}.txt"]
      command: |
        mkdir -p out
        : > {{output}}.part
        for i in 1 2 3 4 5 6; do echo "chunk $i" >> {{output}}.part; sleep 0.3; done
        mv {{output}}.part {{output}}
  - export: { outputs_of: [write] }
"#,
    );
    let file = p.to_str().unwrap();
    let mut child = ws.cmd(&["run", "-q", file]).spawn().unwrap();
    let out = ws.state().join("lustre/chunkfs/out");
    // Kill once every task is a chunk or two in.
    for i in 0..4 {
        wait_for_lines(&out.join(format!("s{i}.txt.part")), 2);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let o = ws.stage(&["run", file]);
    assert_exit(&o, 0);
    let want: String = (1..=6).map(|i| format!("chunk {i}\n")).collect();
    for i in 0..4 {
        let got = std::fs::read_to_string(ws.path().join(format!("blob/out/s{i}.txt"))).unwrap();
        assert_eq!(
            got, want,
            "s{i}: the dead run's copy ran beside the new one"
        );
    }
    assert!(!out.join("s0.txt.part").exists());
}

/// The campaign pipeline: 200 tasks in a first step, one over all their outputs in a second.
/// Each task holds a lock on its own name while it runs (a second copy of it running at once
/// says so and fails), counts its executions, and writes its output through `.part`.
fn campaign(ws: &Workspace) -> PathBuf {
    for i in 0..200 {
        ws.write(&format!("blob/in/f{i:03}.txt"), format!("input {i}\n"));
    }
    std::fs::create_dir_all(ws.path().join("locks")).unwrap();
    ws.write(
        "campaign.yaml",
        format!(
            r#"name: campaign
vars:
  counter: "{counter}"
  times: "{times}"
  locks: "{locks}"
filesystem:
  name: campaignfs
  hsm: {{ container: blob }}
pool: {{ slots: 4 }}
steps:
  - ensure: {{}}
  - import: {{ prefixes: [in/] }}
  - process:
      name: work
      foreach: in/*.txt
      outputs: ["out/{{{{stem}}}}.txt"]
      command: |
        exec 9>> {{{{vars.locks}}}}/{{{{stem}}}}.lock
        flock -n 9 || {{ echo concurrent work/{{{{rel}}}} >> {{{{vars.counter}}}}; exit 1; }}
        echo work/{{{{rel}}}} >> {{{{vars.counter}}}}
        echo "start work/{{{{rel}}}} $(date +%s%N)" >> {{{{vars.times}}}}
        mkdir -p out
        : > {{{{output}}}}.part
        tr a-z A-Z < {{{{input}}}} >> {{{{output}}}}.part
        sleep 0.0$(( $$ % 3 ))
        echo done >> {{{{output}}}}.part
        mv {{{{output}}}}.part {{{{output}}}}
        echo "end work/{{{{rel}}}} $(date +%s%N)" >> {{{{vars.times}}}}
  - process:
      name: total
      inputs: out/*.txt
      outputs: [total.txt]
      command: echo total/- >> {{{{vars.counter}}}} && cat {{{{inputs}}}} > {{{{output}}}}
  - export:
      outputs_of: [work, total]
"#,
            counter = ws.path().join("counter").display(),
            times = ws.path().join("times").display(),
            locks = ws.path().join("locks").display(),
        ),
    )
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Each task's first start and (if it got there) first end, from the `times` log.
fn first_runs(ws: &Workspace) -> BTreeMap<String, (u64, Option<u64>)> {
    let text = std::fs::read_to_string(ws.path().join("times")).unwrap_or_default();
    let mut m: BTreeMap<String, (u64, Option<u64>)> = BTreeMap::new();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        let (Some(what), Some(task), Some(ns)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Ok(ns) = ns.parse::<u64>() else { continue };
        match what {
            "start" => {
                m.entry(task.to_string()).or_insert((ns, None));
            }
            _ => {
                if let Some(e) = m.get_mut(task) {
                    e.1.get_or_insert(ns);
                }
            }
        }
    }
    m
}

/// SIGKILL at random moments of a 200-task, two-step run, then resume: every trial ends with
/// outputs byte-identical to an uninterrupted run, no task lost, a task run twice only if the
/// journal had not recorded its completion at the kill (the group-commit window, whose length
/// it measures), and no task ever running beside itself. `STAGE_KILL_TRIALS` sets the count (30 here;
/// `benches/kills.sh` runs 200 and prints the figures RELIABILITY.md records).
#[test]
fn a_campaign_of_random_kills_loses_nothing_and_never_runs_a_task_twice_at_once() {
    let trials: usize = std::env::var("STAGE_KILL_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let reference = {
        let ws = Workspace::new();
        let p = campaign(&ws);
        assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 0);
        ws.tree("blob")
    };
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let (mut killed, mut reruns, mut allowed_total) = (0, 0, 0);
    let (mut running_at_kill, mut finished_in_window, mut worst_ms) = (0, 0, 0u64);
    let started = std::time::Instant::now();
    for trial in 0..trials {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(x % 1800);
        let ws = Workspace::new();
        let p = campaign(&ws);
        let file = p.to_str().unwrap();
        let mut child = ws.cmd(&["run", "-q", file]).spawn().unwrap();
        std::thread::sleep(delay);
        let kill_ns = now_ns();
        let _ = child.kill();
        let status = child.wait().unwrap();
        // What each task's first execution did before the kill: started, and ended when.
        let before = first_runs(&ws);
        let possibly = if status.signal() == Some(9) {
            killed += 1;
            possibly_running(&ws, &p)
        } else {
            BTreeSet::new()
        };
        allowed_total += possibly.len();
        let label = format!("trial {trial} (kill after {delay:?})");
        let o = ws.stage(&["run", file]);
        assert_exit(&o, 0);
        assert_eq!(ws.tree("blob"), reference, "{label}: outputs differ");
        let c = counts(&ws);
        assert!(
            !c.keys().any(|k| k.starts_with("concurrent")),
            "{label}: a task ran beside itself: {c:?}"
        );
        assert_eq!(c.len(), 201, "{label}: a task never ran");
        for (task, n) in &c {
            if *n > 1 {
                reruns += 1;
                assert!(
                    possibly.contains(task) && *n == 2,
                    "{label}: {task} ran {n} times; the journal did not show it possibly running"
                );
                // The contract is the journal's (above: a completion it had flushed never
                // runs again). How long before the kill such a task had finished is measured
                // and printed, not asserted: 250 ms of group commit plus the flush's own
                // fsync, which a busy disk stretches without bound.
                match before.get(task) {
                    // Running at the kill, or forked just before it (its shell had not yet
                    // written its first line): the dead run's copy, which the resumed run
                    // killed before starting the task again (the lock says none overlapped).
                    Some((_, None)) | None => running_at_kill += 1,
                    Some((_, Some(end))) => {
                        let ago = kill_ns.saturating_sub(*end) / 1_000_000;
                        worst_ms = worst_ms.max(ago);
                        finished_in_window += 1;
                    }
                }
            }
        }
        let again = ws.stage(&["run", file]);
        assert_has(&again.stderr, "nothing to do");
    }
    eprintln!(
        "kill campaign: {trials} trials ({killed} killed mid-run) in {:.0?}: 0 lost, 0 \
         concurrent, 0 differing outputs; {reruns} tasks ran twice ({running_at_kill} running \
         at the kill, {finished_in_window} finished at most {worst_ms} ms before it), all among \
         the {allowed_total} the journal showed possibly running",
        started.elapsed()
    );
}
