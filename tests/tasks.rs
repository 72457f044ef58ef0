//! Process steps: what reruns after a change and why, retries, timeouts, quoting, logs.

mod common;
use common::*;

#[test]
fn a_changed_input_reruns_only_its_tasks_and_explain_says_why() {
    let ws = Workspace::new();
    let p = ws.genomics();
    let file = p.to_str().unwrap();
    assert_exit(&ws.stage(&["run", file]), 0);

    // A new version of one sample arrives in the container.
    std::thread::sleep(std::time::Duration::from_millis(10));
    let s3 = ws
        .path()
        .join("pipelines/data/genomics/samples/S3.fastq.gz");
    let s1 = std::fs::read(
        ws.path()
            .join("pipelines/data/genomics/samples/S1.fastq.gz"),
    )
    .unwrap();
    std::fs::write(&s3, &s1).unwrap();

    // Import brings it in (a clean file whose blob changed needs overwrite-always).
    let text_p = std::fs::read_to_string(&p)
        .unwrap()
        .replace("overwrite-if-dirty", "overwrite-always");
    std::fs::write(&p, text_p).unwrap();
    let plan = ws.stage(&["plan", file]);
    assert_exit(&plan, 0);
    assert_has(&plan.stdout, "1 file to import");

    let o = ws.stage(&["run", file]);
    assert_exit(&o, 0);
    let err = text(&o.stderr);
    assert!(err.contains("qc: 4 tasks, 3 up to date, 1 to run"), "{err}");
    assert!(
        err.contains("merge: 1 task, 0 up to date, 1 to run"),
        "{err}"
    );
    let summary = std::fs::read_to_string(
        ws.path()
            .join("pipelines/data/genomics/results/summary.tsv"),
    )
    .unwrap();
    assert!(
        summary.lines().any(|l| l.starts_with("S3\t400\t")),
        "{summary}"
    );

    // explain: touch one input in the file system, ask why.
    std::thread::sleep(std::time::Duration::from_millis(10));
    let lustre_s2 = ws
        .state()
        .join("lustre/genomics-scratch/samples/S2.fastq.gz");
    let data = std::fs::read(&lustre_s2).unwrap();
    std::fs::write(&lustre_s2, data).unwrap();
    let ex = ws.stage(&["explain", file, "qc"]);
    assert_exit(&ex, 0);
    let out = text(&ex.stdout);
    assert!(
        out.contains("qc/samples/S2.fastq.gz: will run because"),
        "{out}"
    );
    assert!(out.contains("input samples/S2.fastq.gz changed"), "{out}");
    assert!(out.contains("qc/samples/S1.fastq.gz: up to date"), "{out}");

    // A changed command reruns every task of the step, and explain shows the change.
    let changed = std::fs::read_to_string(&p)
        .unwrap()
        .replace("min_quality: \"20\"", "min_quality: \"30\"");
    std::fs::write(&p, changed).unwrap();
    let ex = ws.stage(&["explain", file, "qc", "--task", "S4"]);
    assert_has(&ex.stdout, "its command changed");
    assert_has(&ex.stdout, "-v q=30");
}

fn simple(ws: &Workspace, process: &str) -> std::path::PathBuf {
    ws.write(
        "p.yaml",
        format!(
            "name: tasks\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: {{ container: blob }}\npool: {{ slots: 2 }}\nsteps:\n  - import: {{}}\n  - process:\n{process}"
        ),
    )
}

#[test]
fn failures_retry_then_fail_the_run_with_the_last_lines_and_resume_runs_only_them() {
    let ws = Workspace::new();
    for n in ["a", "b", "c"] {
        ws.write(&format!("blob/in/{n}.txt"), n);
    }
    let marker = ws.path().join("fix");
    let p = simple(
        &ws,
        &format!(
            "      name: work\n      foreach: in/*.txt\n      retries: 2\n      command: echo attempt >> {{{{stem}}}}.tries; if [ {{{{stem}}}} = b ] && [ ! -e {} ]; then echo \"b is broken\" >&2; exit 3; fi\n",
            marker.display()
        ),
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 1);
    let err = text(&o.stderr);
    assert!(
        err.contains("work/in/b.txt on localhost, attempt 3: exit code 3"),
        "{err}"
    );
    assert!(err.contains("| b is broken"), "{err}");
    assert!(err.contains("1 of 3 tasks failed: in/b.txt"), "{err}");
    let tries = std::fs::read_to_string(ws.path().join("lustre/b.tries")).unwrap();
    assert_eq!(tries.lines().count(), 3, "retries: 2 means three attempts");
    assert_eq!(err.matches("(will retry)").count(), 2, "{err}");

    let logs = ws.stage(&["logs", p.to_str().unwrap(), "work/in/b.txt", "--stderr"]);
    assert_exit(&logs, 0);
    assert_eq!(text(&logs.stdout), "b is broken\n");
    // Short names work when they are unambiguous.
    let short = ws.stage(&["logs", p.to_str().unwrap(), "work/b", "--stderr"]);
    assert_exit(&short, 0);
    assert_eq!(text(&short.stdout), "b is broken\n");
    let states = task_states(&ws, &p);
    assert_eq!(states["work/in/b.txt"], "failed");
    assert_eq!(states["work/in/a.txt"], "succeeded");

    // --new abandons the failed run and starts another; b still fails there.
    let o = ws.stage(&["run", "--new", p.to_str().unwrap()]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "stage: run 2 of tasks");
    assert_has(&o.stderr, "3 tasks, 2 up to date, 1 to run");

    // Fix the cause; resuming reruns b only.
    std::fs::write(&marker, "").unwrap();
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "resuming run 2");
    assert_has(&o.stderr, "3 tasks, 2 up to date, 1 to run");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("lustre/a.tries"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let ws = Workspace::new();
    ws.write("blob/x", "");
    let p = simple(
        &ws,
        "      name: slow\n      timeout: 1s\n      command: (sleep 61.5; echo late > late.txt) & sleep 61.5\n",
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "timed out");
    assert_no_process(ws.path(), "sleep 61.5");
}

#[test]
fn hostile_file_names_are_quoted_not_executed() {
    let ws = Workspace::new();
    let names = [
        "with space.txt",
        "quote'single.txt",
        "quote\"double.txt",
        "dollar$(touch PWNED).txt",
        "back`touch PWNED2`tick.txt",
        "new\nline.txt",
        "-n.txt",
        "semi;rm -rf x.txt",
    ];
    for n in names {
        ws.write(&format!("blob/in/{n}"), n);
    }
    let p = simple(
        &ws,
        "      name: copy\n      foreach: in/*\n      outputs: [\"out/{{name}}\"]\n      command: mkdir -p out && cat -- {{input}} > {{output}} && printf '%s\\n' {{name}} >> names.log\n",
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    for n in names {
        let got = std::fs::read_to_string(ws.path().join("lustre/out").join(n)).unwrap();
        assert_eq!(got, n);
    }
    assert!(!ws.path().join("lustre/PWNED").exists());
    assert!(!ws.path().join("lustre/PWNED2").exists());
    let log = std::fs::read_to_string(ws.path().join("lustre/names.log")).unwrap();
    for n in names {
        assert!(log.contains(n), "{n:?} missing from {log:?}");
    }
}

#[test]
fn a_task_that_does_not_write_its_output_fails() {
    let ws = Workspace::new();
    ws.write("blob/x", "");
    let p = simple(
        &ws,
        "      name: lazy\n      outputs: [result.txt]\n      command: \"true\"\n",
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "did not write its output result.txt");
}

#[test]
fn retries_wait_the_retry_delay_doubling_each_time() {
    let ws = Workspace::new();
    ws.write("blob/x", "");
    let p = simple(
        &ws,
        "      name: flaky\n      retries: 2\n      retry_delay: 1s\n      command: date +%s%N >> attempts; [ $(wc -l < attempts) -ge 3 ]\n",
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    let times: Vec<u128> = std::fs::read_to_string(ws.path().join("lustre/attempts"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 3);
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    assert!(gaps[0] >= 1000, "first retry after {} ms", gaps[0]);
    assert!(gaps[1] >= 2000, "second retry after {} ms", gaps[1]);
}

#[test]
fn a_missing_file_system_is_named_not_reported_as_a_spawn_error() {
    let ws = Workspace::new();
    ws.write("blob/x", "");
    let p = ws.write(
        "p.yaml",
        "name: nofs\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: { container: blob }\nsteps:\n  - process: { command: \"true\" }\n",
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 1);
    assert_has(
        &o.stderr,
        "does not exist; add `- ensure: {}` before this step",
    );
}

#[test]
fn secrets_from_the_environment_never_reach_the_journal_or_logs_of_stage() {
    let ws = Workspace::new();
    ws.write("blob/x", "");
    let secret = "sv=2026-01-01&sig=VERYSECRETSIGNATURE";
    let p = ws.write(
        "p.yaml",
        "name: secret\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: { container: blob }\nsteps:\n  - import: {}\n  - process:\n      env: { SAS: \"{{env.STAGE_TEST_SAS}}\" }\n      outputs: [used]\n      command: test -n \"$SAS\" && echo ok > used\n",
    );
    let o = ws
        .cmd(&["run", "--output", "json", p.to_str().unwrap()])
        .env("STAGE_TEST_SAS", secret)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(!text(&o.stdout).contains("VERYSECRET") && !text(&o.stderr).contains("VERYSECRET"));
    let state = ws.tree("state");
    assert!(!state.is_empty());
    for (path, bytes) in state {
        let hit = bytes.windows(19).any(|w| w == b"VERYSECRETSIGNATURE");
        assert!(!hit, "the secret is stored in state/{path}");
    }
}

/// plan and explain follow a change downstream, as the run will: a task up to date now runs
/// when a task before it will rewrite one of its inputs, a `foreach` step gains a task for
/// each file a step before it will create, and export counts what those steps will write.
/// The run then does what plan said.
#[test]
fn plan_and_explain_follow_changes_to_later_steps() {
    let ws = Workspace::new();
    for s in ["a", "b"] {
        ws.write(&format!("blob/in/{s}.txt"), format!("{s}\n"));
    }
    let p = ws.write(
        "chain.yaml",
        r#"name: chain
filesystem: { name: chainfs, hsm: { container: blob } }
steps:
  - ensure: {}
  - import: { conflict: skip }
  - process:
      name: upper
      foreach: in/*.txt
      outputs: ["mid/{{stem}}.up"]
      command: mkdir -p mid && tr a-z A-Z < {{input}} > {{output}}
  - process:
      name: twice
      foreach: mid/*.up
      outputs: ["out/{{stem}}.2"]
      command: mkdir -p out && cat {{input}} {{input}} > {{output}}
  - process:
      name: total
      inputs: out/*.2
      outputs: [total.txt]
      command: cat {{inputs}} > {{output}}
  - export: { paths: [out/, total.txt] }
"#,
    );
    let p = p.to_str().unwrap();
    assert_exit(&ws.stage(&["run", p]), 0);
    // One input changed and one new, both in the file system itself.
    let fs = ws.state().join("lustre/chainfs");
    std::fs::write(fs.join("in/a.txt"), "changed\n").unwrap();
    std::fs::write(fs.join("in/c.txt"), "c\n").unwrap();
    let plan = text(&ws.stage(&["plan", p]).stdout);
    for want in [
        "upper      run     2 of 3 tasks (1 up to date)",
        "twice      run     1 of 2 tasks (1 up to date); e.g. mid/a.up: input mid/a.up will be written by upper/in/a.txt; and 1 new, for files earlier steps will write (e.g. mid/c.up, by upper/in/c.txt)",
        "total      run     1 of 1 tasks (0 up to date); e.g. -: input out/a.2 will be written by twice/mid/a.up",
        "; 3 file(s) the steps above will write",
    ] {
        assert!(plan.contains(want), "{want:?} missing from:\n{plan}");
    }
    let explain = text(&ws.stage(&["explain", p, "twice"]).stdout);
    assert!(
        explain.contains(
            "twice/mid/c.up: a new task: input mid/c.up will be written by upper/in/c.txt"
        ),
        "{explain}"
    );
    assert!(explain.contains("twice/mid/b.up: up to date"), "{explain}");
    let o = ws.stage(&["run", p]);
    assert_exit(&o, 0);
    for want in [
        "done upper: 2 ran, 1 up to date",
        "done twice: 2 ran, 1 up to date",
        "done total: 1 ran",
    ] {
        assert_has(&o.stderr, want);
    }
    // A new blob: the import will bring it, and everything after follows.
    ws.write("blob/in/d.txt", "d\n");
    let plan = text(&ws.stage(&["plan", p]).stdout);
    for want in [
        "upper      run     0 of 3 tasks (3 up to date); and 1 new, for files earlier steps will write (e.g. in/d.txt, by import)",
        "twice      run     0 of 3 tasks (3 up to date); and 1 new",
        "total      run     1 of 1 tasks",
    ] {
        assert!(plan.contains(want), "{want:?} missing from:\n{plan}");
    }
    let explain = text(&ws.stage(&["explain", p, "upper"]).stdout);
    assert!(
        explain.contains("upper/in/d.txt: a new task: input in/d.txt will be written by import"),
        "{explain}"
    );
    let o = ws.stage(&["run", p]);
    assert_has(&o.stderr, "done upper: 1 ran, 3 up to date");
}

/// Two inputs sharing a stem render one output path: one result would be lost while both
/// tasks said up to date. plan and run refuse, naming both.
#[test]
fn two_tasks_writing_one_output_are_refused_naming_both() {
    let ws = Workspace::new();
    ws.write("blob/in/s1.a.dat", "a");
    ws.write("blob/in/s1.b.dat", "b");
    let p = ws.write(
        "p.yaml",
        r#"name: clash
filesystem:
  name: clashfs
  hsm: { container: blob }
steps:
  - ensure: {}
  - import: { prefixes: [in/] }
  - process:
      name: conv
      foreach: "in/*.dat"
      outputs: ["out/{{stem}}.out"]
      command: mkdir -p out && cp {{input}} {{output}}
"#,
    );
    let file = p.to_str().unwrap();
    for cmd in ["run", "plan"] {
        let o = ws.stage(&[cmd, file]);
        assert_ne!(o.status.code(), Some(0), "{cmd}");
        assert_has(
            &o.stderr,
            "tasks `in/s1.a.dat` and `in/s1.b.dat` would both write `out/s1.out`",
        );
    }
    assert!(
        !ws.state().join("lustre/clashfs/out").exists(),
        "a task ran"
    );
}

/// The leftover check itself can fail: it sees a process working in its workspace, and not
/// one working elsewhere.
#[test]
fn the_leftover_check_sees_processes_in_its_workspace_only() {
    let ws = Workspace::new();
    let other = tempfile::tempdir().unwrap();
    let mut here = std::process::Command::new("sleep")
        .arg("63.1")
        .current_dir(ws.path())
        .spawn()
        .unwrap();
    let mut there = std::process::Command::new("sleep")
        .arg("63.1")
        .current_dir(other.path())
        .spawn()
        .unwrap();
    let dir = std::fs::canonicalize(ws.path()).unwrap();
    assert_eq!(processes_under(&dir, "sleep 63.1").len(), 1);
    here.kill().unwrap();
    here.wait().unwrap();
    assert_no_process(ws.path(), "sleep 63.1");
    there.kill().unwrap();
    there.wait().unwrap();
}
