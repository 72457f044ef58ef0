//! Stage-in from a Slurm Prolog and stage-out from its Epilog, on a real slurmctld/slurmd.

#[path = "common/azurite.rs"]
mod azurite;
mod common;
#[path = "common/slurm.rs"]
mod slurm;

use azurite::{Azurite, CONNECTION_STRING, stage_env};
use common::*;
use slurm::Slurm;

/// The hook wrapper a site would install: credentials from the environment file, then stage.
fn hook(ws: &Workspace, which: &str) -> String {
    format!(
        "#!/bin/sh\nexport AZURE_STORAGE_CONNECTION_STRING='{CONNECTION_STRING}'\nexec {STAGE} --state-dir {} slurm {which} \"$@\"\n",
        ws.state().display()
    )
}

#[test]
fn a_job_gets_its_inputs_before_it_starts_and_its_outputs_exported_after() {
    let az = Azurite::start();
    let ws = Workspace::new();
    ws.write("upload/a.txt", "twelve bytes");
    ws.write("upload/sub/b.txt", "b");
    assert_exit(
        &stage_env(&ws, &["export", "upload", &az.url("jobdata/in")]),
        0,
    );
    let slurm = Slurm::start(&hook(&ws, "prolog"), &hook(&ws, "epilog"));
    let lustre = ws.path().join("lustre");
    let script = ws.write(
        "job.sh",
        format!(
            "#!/bin/sh\n#SBATCH -o {l}/job.out\n#STAGE in {inp} {l}/in\n#STAGE out {l}/out {out}\nmkdir -p {l}/out\nwc -c < {l}/in/a.txt > {l}/out/count.txt\ncat {l}/in/sub/b.txt >> {l}/out/count.txt\n",
            l = lustre.display(),
            inp = az.url("jobdata/in"),
            out = az.url("jobdata/out"),
        ),
    );
    let id = slurm.sbatch(&script);
    let rec = slurm.wait_job(&id, "completed", |r| {
        r.contains("JobState=COMPLETED") || r.contains("JobState=FAILED")
    });
    assert!(rec.contains("JobState=COMPLETED"), "{rec}");
    // The epilog may still be finishing just after the state flips: wait for its log line.
    let log = ws.state().join("slurm/hooks.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("epilog")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no epilog line in {}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_exit(
        &stage_env(&ws, &["import", &az.url("jobdata/out"), "fetched"]),
        0,
    );
    let got = std::fs::read_to_string(ws.path().join("fetched/count.txt")).unwrap();
    assert_eq!(got.split_whitespace().collect::<Vec<_>>(), ["12", "b"]);
    let hooks = std::fs::read_to_string(&log).unwrap();
    assert!(hooks.contains(&format!("stage prolog job {id}")), "{hooks}");

    // A job with no script of its own declares its data in its comment.
    let id = slurm
        .output(
            "sbatch",
            &[
                "--parsable",
                &format!(
                    "--comment=stage: in {} {l}/via-comment",
                    az.url("jobdata/in"),
                    l = lustre.display()
                ),
                &format!("--output={}/wrap.out", lustre.display()),
                &format!(
                    "--wrap=cat {l}/via-comment/sub/b.txt > {l}/wrap.txt",
                    l = lustre.display()
                ),
            ],
        )
        .trim()
        .to_string();
    let rec = slurm.wait_job(&id, "ended", |r| {
        r.contains("JobState=COMPLETED") || r.contains("JobState=FAILED")
    });
    assert!(rec.contains("JobState=COMPLETED"), "{rec}");
    assert_eq!(
        std::fs::read_to_string(lustre.join("wrap.txt")).unwrap(),
        "b"
    );
}

#[test]
fn a_failed_stage_in_keeps_the_job_from_running_and_holds_it() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let slurm = Slurm::start(&hook(&ws, "prolog"), &hook(&ws, "epilog"));
    let lustre = ws.path().join("lustre");
    let script = ws.write(
        "job.sh",
        format!(
            "#!/bin/sh\n#STAGE in {} {l}/in\ntouch {l}/ran\n",
            az.url("no-such-container"),
            l = lustre.display()
        ),
    );
    let id = slurm.sbatch(&script);
    let rec = slurm.wait_job(&id, "held", |r| {
        r.contains("JobState=PENDING") && r.contains("held")
    });
    assert!(rec.contains("Reason=launch_failed_requeued_held"), "{rec}");
    assert!(
        !lustre.join("ran").exists(),
        "the job ran without its inputs"
    );
    let hooks = std::fs::read_to_string(ws.state().join("slurm/hooks.log")).unwrap();
    assert!(hooks.contains("FAILED"), "{hooks}");
}

#[test]
fn hooks_with_nothing_declared_do_nothing_and_bad_directives_are_refused() {
    let ws = Workspace::new();
    let plain = ws.write("plain.sh", "#!/bin/sh\n#SBATCH -N1\necho hi\n");
    // No Azure credentials, no network, no state: nothing is touched.
    for hook in ["prolog", "epilog"] {
        let o = ws.stage(&["slurm", hook, "--script", plain.to_str().unwrap()]);
        assert_exit(&o, 0);
        assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    }
    assert!(!ws.state().exists(), "a no-op hook created state");
    let bad = ws.write(
        "bad.sh",
        "#!/bin/sh\n#STAGE in http://127.0.0.1:1/devstoreaccount1/data relative\n",
    );
    let o = ws.stage(&["slurm", "prolog", "--script", bad.to_str().unwrap()]);
    assert_exit(&o, 2);
    assert_has(&o.stderr, "batch script line 2");
}

/// `#STAGE restore` hands every file to `lfs hsm_restore` when `lfs` is installed (Lustre
/// cannot run here: a stand-in records the arguments it is given, which is our side of the
/// contract: every file once, after `--`, names with spaces and quotes intact), then reads
/// each file; symlinks are not followed.
#[test]
fn restore_queues_every_file_with_lfs_then_reads_them() {
    let ws = Workspace::new();
    let data = ws.path().join("lustre/ref");
    ws.write("lustre/ref/a.fa", "A");
    ws.write("lustre/ref/sub/it's b.fa", "B");
    std::os::unix::fs::symlink("/etc", data.join("etc-link")).unwrap();
    let bin = ws.path().join("bin");
    let calls = ws.path().join("lfs-calls");
    ws.write(
        "bin/lfs",
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\n",
            calls.display()
        ),
    );
    std::fs::set_permissions(
        bin.join("lfs"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = ws.write(
        "job.sh",
        format!("#!/bin/sh\n#STAGE restore {}\n", data.display()),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = ws
        .cmd(&["slurm", "prolog", "--script", script.to_str().unwrap()])
        .env("PATH", path)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stderr, "2 files");
    let args = std::fs::read_to_string(&calls).unwrap();
    let mut lines: Vec<&str> = args.lines().collect();
    assert_eq!(&lines[..2], &["hsm_restore", "--"], "{args}");
    lines.drain(..2);
    lines.sort();
    assert_eq!(
        lines,
        vec![
            data.join("a.fa").to_str().unwrap(),
            data.join("sub/it's b.fa").to_str().unwrap(),
        ]
    );
}

#[test]
fn a_failed_stage_out_keeps_the_node_up_and_shows_in_status() {
    let mut az = Azurite::start();
    az.stop();
    let ws = Workspace::new();
    // Storage is down: the epilog must give up within its time bound, not hold the node.
    let epilog = hook(&ws, "epilog").replace("slurm epilog", "slurm epilog --timeout 3s");
    let slurm = Slurm::start(&hook(&ws, "prolog"), &epilog);
    let lustre = ws.path().join("lustre");
    let script = ws.write(
        "job.sh",
        format!(
            "#!/bin/sh\n#STAGE out {l}/out {}\nmkdir -p {l}/out\necho result > {l}/out/r.txt\n",
            az.url("results"),
            l = lustre.display()
        ),
    );
    let id = slurm.sbatch(&script);
    let rec = slurm.wait_job(&id, "completed", |r| {
        r.contains("JobState=COMPLETED") || r.contains("JobState=FAILED")
    });
    assert!(rec.contains("JobState=COMPLETED"), "{rec}");
    let record = ws.state().join(format!("slurm/epilog-{id}.json"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !record.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no epilog failure recorded"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        slurm.output("sinfo", &["-h", "-o", "%T"]).trim(),
        "idle",
        "the node must stay up"
    );
    let o = ws.stage(&["status"]);
    assert_exit(&o, 0);
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("job {id}:")) && out.contains("results"),
        "{out}"
    );
}

#[test]
fn process_tasks_run_as_slurm_jobs_with_their_environment_and_exit_codes() {
    let ws = Workspace::new();
    let slurm = Slurm::start(NO_HOOK, NO_HOOK);
    for i in 0..12 {
        ws.write(&format!("lustre/in/s{i:02}.txt"), "x".repeat(i + 1));
    }
    let p = ws.write(
        "p.yaml",
        "name: slurmpipe\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: { container: blob }\npool:\n  slots: 4\n  slurm: {}\nsteps:\n  - process:\n      name: work\n      foreach: in/*.txt\n      outputs: [\"out/{{stem}}.len\"]\n      env: { GREETING: hello }\n      command: mkdir -p out && printf '%s %s\\n' \"$GREETING\" $(wc -c < {{input}}) > {{output}}\n",
    );
    let o = stage_run(&ws, &slurm, &p).output().unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stderr, "12 ran");
    for i in 0..12 {
        let got =
            std::fs::read_to_string(ws.path().join(format!("lustre/out/s{i:02}.len"))).unwrap();
        assert_eq!(got.trim(), format!("hello {}", i + 1));
    }
    // A failing command fails its task with its exit code, after its retries.
    let bad = ws.write(
        "bad.yaml",
        "name: slurmbad\nfilesystem:\n  name: fs2\n  mount: lustre\n  hsm: { container: blob }\npool:\n  slots: 2\n  slurm: {}\nsteps:\n  - process:\n      name: fail\n      retries: 1\n      command: echo failing >&2; exit 3\n",
    );
    let o = stage_run(&ws, &slurm, &bad).output().unwrap();
    assert_exit(&o, 1);
    assert_has(&o.stderr, "exit code 3");
}

/// `stage run PIPELINE` against this Slurm.
fn stage_run(ws: &Workspace, slurm: &Slurm, pipeline: &std::path::Path) -> std::process::Command {
    let mut c = ws.cmd(&["run", pipeline.to_str().unwrap()]);
    c.env("SLURM_CONF", slurm.conf());
    c
}

const NO_HOOK: &str = "#!/bin/sh\nexit 0\n";

/// The distinct array jobs stage submitted, from slurmctld's records.
fn stage_arrays(slurm: &Slurm) -> std::collections::BTreeSet<String> {
    slurm
        .output("scontrol", &["show", "job", "-o"])
        .lines()
        .filter(|r| r.contains("JobName=stage-"))
        .filter_map(|r| {
            r.split_whitespace()
                .find_map(|kv| kv.strip_prefix("ArrayJobId="))
                .map(str::to_string)
        })
        .collect()
}

/// A pipeline of `n` tasks that each log a run to `runs/STEM` and copy their input.
fn counted_pipeline(
    ws: &Workspace,
    name: &str,
    n: usize,
    slots: u32,
    work: &str,
) -> std::path::PathBuf {
    for i in 0..n {
        ws.write(&format!("lustre/in/t{i:04}.txt"), format!("{i}\n"));
    }
    ws.write(
        &format!("{name}.yaml"),
        format!(
            "name: {name}\nfilesystem:\n  name: fs\n  mount: lustre\n  hsm: {{ container: blob }}\npool:\n  slots: {slots}\n  slurm: {{}}\nsteps:\n  - process:\n      name: work\n      foreach: in/*.txt\n      retries: 1\n      outputs: [\"out/{{{{stem}}}}.txt\"]\n      command: {work} mkdir -p out runs && echo ran >> runs/{{{{stem}}}} && cp {{{{input}}}} {{{{output}}}}\n"
        ),
    )
}

fn assert_each_ran_once(ws: &Workspace, n: usize) {
    for i in 0..n {
        let runs = std::fs::read_to_string(ws.path().join(format!("lustre/runs/t{i:04}")))
            .unwrap_or_default();
        assert_eq!(runs.lines().count(), 1, "task t{i:04} ran {runs:?}");
        let out =
            std::fs::read_to_string(ws.path().join(format!("lustre/out/t{i:04}.txt"))).unwrap();
        assert_eq!(out, format!("{i}\n"));
    }
}

#[test]
fn a_thousand_tasks_run_as_one_throttled_array() {
    let ws = Workspace::new();
    let slurm = Slurm::with_nodes(4, NO_HOOK, NO_HOOK);
    let p = counted_pipeline(&ws, "thousand", 1000, 6, "");
    let o = stage_run(&ws, &slurm, &p).output().unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stderr, "1000 ran");
    assert_each_ran_once(&ws, 1000);
    let arrays = stage_arrays(&slurm);
    assert_eq!(arrays.len(), 1, "{arrays:?}");
    let record = slurm.job(arrays.iter().next().unwrap());
    assert!(record.contains("ArrayTaskThrottle=6"), "{record}");
    // Nothing left behind for a later process to attach to.
    let left = std::fs::read_dir(ws.state().join("slurm/arrays")).map_or(0, |d| d.count());
    assert_eq!(left, 0);
}

#[test]
fn a_killed_run_reattaches_to_its_array_without_submitting_again() {
    let ws = Workspace::new();
    let slurm = Slurm::with_nodes(2, NO_HOOK, NO_HOOK);
    let n = 24;
    let p = counted_pipeline(&ws, "reattach", n, 4, "sleep 0.5 &&");
    let run = |crash: Option<&str>| {
        let mut c = stage_run(&ws, &slurm, &p);
        if let Some(point) = crash {
            c.env("STAGE_CRASH_AT", point);
        }
        c
    };
    // Killed just after sbatch, before the job id is on disk: found again by its name.
    let o = run(Some("slurm.after-submit")).output().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(9),
        "{}",
        text(&o.stderr)
    );
    // Killed again while the array runs, a few tasks in.
    let mut second = run(None)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(ws.path().join("lustre/out")).map_or(0, |d| d.count()) < 6 {
        assert!(std::time::Instant::now() < deadline, "no task finished");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    second.kill().unwrap();
    second.wait().unwrap();
    let o = run(None).output().unwrap();
    assert_exit(&o, 0);
    assert_each_ran_once(&ws, n);
    assert_eq!(stage_arrays(&slurm).len(), 1, "a task was submitted twice");
    let o = run(None).output().unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stderr, "nothing to do");
}

#[test]
fn cancelled_tasks_are_retried_per_policy() {
    let ws = Workspace::new();
    let slurm = Slurm::with_nodes(2, NO_HOOK, NO_HOOK);
    let n = 6;
    let p = counted_pipeline(&ws, "cancelled", n, 2, "sleep 2 &&");
    let run = stage_run(&ws, &slurm, &p)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Cancel the first two tasks once they run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let running = loop {
        let q = slurm.output("squeue", &["-h", "-r", "-t", "RUNNING", "-o", "%i"]);
        let ids: Vec<String> = q.lines().map(str::to_string).collect();
        if ids.len() >= 2 {
            break ids;
        }
        assert!(std::time::Instant::now() < deadline, "no task started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    slurm.output("scancel", &[&running[0], &running[1]]);
    let o = run.wait_with_output().unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stderr, "killed by signal 15 (will retry)");
    for i in 0..n {
        let out =
            std::fs::read_to_string(ws.path().join(format!("lustre/out/t{i:04}.txt"))).unwrap();
        assert_eq!(out, format!("{i}\n"));
    }
}

/// The hooks' log file stays bounded on a node that runs them for years: past 8 MiB it moves
/// to `hooks.log.1` and a new one starts.
#[test]
fn the_hooks_log_moves_aside_when_it_grows_large() {
    let ws = Workspace::new();
    ws.write("lustre/ref/a.fa", "A");
    let old = "x".repeat(9 << 20);
    ws.write("state/slurm/hooks.log", &old);
    let script = ws.write(
        "job.sh",
        format!(
            "#!/bin/sh\n#STAGE restore {}\n",
            ws.path().join("lustre/ref").display()
        ),
    );
    let o = ws.stage(&["slurm", "prolog", "--script", script.to_str().unwrap()]);
    assert_exit(&o, 0);
    let moved = std::fs::read_to_string(ws.state().join("slurm/hooks.log.1")).unwrap();
    assert_eq!(moved.len(), old.len());
    let log = std::fs::read_to_string(ws.state().join("slurm/hooks.log")).unwrap();
    assert!(log.len() < 4096 && log.contains("stage prolog"), "{log}");
}
