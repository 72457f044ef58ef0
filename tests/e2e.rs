//! The README's main job, end to end, on the local target.

mod common;
use common::*;

#[test]
fn genomics_runs_end_to_end_then_has_nothing_to_do() {
    let ws = Workspace::new();
    let p = ws.genomics();
    let file = p.to_str().unwrap();

    let first = ws.stage(&["run", file]);
    assert_exit(&first, 0);
    let err = text(&first.stderr);
    assert!(err.contains("4 ran, 0 up to date"), "{err}");
    assert!(err.contains("5 files imported"), "{err}");

    // Results exported to the container, byte for byte what the golden run produced.
    let summary = std::fs::read(
        ws.path()
            .join("pipelines/data/genomics/results/summary.tsv"),
    )
    .unwrap();
    let golden = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/genomics-summary.tsv"
    ))
    .unwrap();
    assert_eq!(text(&summary), text(&golden));
    let exported = ws.tree("pipelines/data/genomics/results");
    assert_eq!(exported.len(), 5, "{:?}", exported.keys());
    let lustre = ws.tree("state/lustre/genomics-scratch/results");
    assert_eq!(exported, lustre, "export differs from the file system");

    // Again: nothing to do, said plainly, exit 0, and no file touched.
    let before = std::fs::metadata(
        ws.path()
            .join("pipelines/data/genomics/results/summary.tsv"),
    )
    .unwrap()
    .modified()
    .unwrap();
    let second = ws.stage(&["run", file]);
    assert_exit(&second, 0);
    assert_has(&second.stderr, "nothing to do");
    let after = std::fs::metadata(
        ws.path()
            .join("pipelines/data/genomics/results/summary.tsv"),
    )
    .unwrap()
    .modified()
    .unwrap();
    assert_eq!(before, after);

    let plan = ws.stage(&["plan", file]);
    assert_exit(&plan, 0);
    assert_has(&plan.stdout, "nothing to do");
}

#[test]
fn json_output_is_one_event_per_line() {
    let ws = Workspace::new();
    let p = ws.genomics();
    let o = ws.stage(&["run", "--output", "json", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    let events: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert_eq!(kinds.iter().filter(|k| **k == "task_finished").count(), 5);
    assert_eq!(events.last().unwrap()["status"], "succeeded");
}

#[test]
fn quiet_prints_nothing_on_success() {
    let ws = Workspace::new();
    let p = ws.genomics();
    let o = ws.stage(&["run", "-q", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_eq!(text(&o.stderr), "");
    assert_eq!(text(&o.stdout), "");
}

#[test]
fn teardown_deletes_only_after_export_and_rerun_starts_over() {
    let ws = Workspace::new();
    ws.genomics();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = ws.write(
        "pipelines/checksums.yaml",
        std::fs::read_to_string(repo.join("pipelines/checksums.yaml")).unwrap(),
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert!(
        !ws.state().join("lustre/checksum-scratch").exists(),
        "file system kept"
    );
    let manifest = std::fs::read_to_string(
        ws.path()
            .join("pipelines/data/genomics/manifest/SHA256SUMS"),
    )
    .unwrap();
    assert_eq!(manifest.lines().count(), 5, "{manifest}");
    assert!(manifest.contains("samples/S1.fastq.gz"));
    // Checked against sha256sum run directly on the container copy.
    let direct = std::process::Command::new("sha256sum")
        .arg("samples/S1.fastq.gz")
        .current_dir(ws.path().join("pipelines/data/genomics"))
        .output()
        .unwrap();
    assert!(manifest.contains(text(&direct.stdout).trim()));
}

/// With its file system torn down, only the container is left to compare with: a rerun with
/// the container and the pipeline as the last run left them creates nothing; a new input, a
/// result deleted from the container, an edited pipeline or `--new` runs it again.
#[test]
fn a_torn_down_pipeline_reruns_only_when_its_container_or_definition_changed() {
    let ws = Workspace::new();
    ws.genomics();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text_of = std::fs::read_to_string(repo.join("pipelines/checksums.yaml")).unwrap();
    let p = ws.write("pipelines/checksums.yaml", &text_of);
    let p = p.to_str().unwrap();
    let manifest = ws
        .path()
        .join("pipelines/data/genomics/manifest/SHA256SUMS");
    let ran = |o: &std::process::Output| {
        assert_exit(o, 0);
        !text(&o.stderr).contains("left them")
    };
    assert!(ran(&ws.stage(&["run", p])));
    let o = ws.stage(&["run", p]);
    assert!(!ran(&o), "{}", text(&o.stderr));
    assert_has(
        &o.stderr,
        "the container and the pipeline are as run 1 left them",
    );
    assert_has(&o.stderr, "nothing to do");
    assert!(!ws.state().join("lustre/checksum-scratch").exists());
    let plan = ws.stage(&["plan", p]);
    assert_has(&plan.stdout, "stage run would do nothing");
    let status = ws.stage(&["status", p]);
    assert_has(&status.stdout, "run 2: succeeded");
    assert_has(
        &status.stdout,
        "nothing to do: the container and the pipeline were",
    );
    // A new input.
    ws.write(
        "pipelines/data/genomics/samples/S9.fastq.gz",
        "new sample\n",
    );
    assert!(ran(&ws.stage(&["run", p])));
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap().lines().count(),
        6
    );
    assert!(!ran(&ws.stage(&["run", p])));
    // A result lost from the container.
    std::fs::remove_file(&manifest).unwrap();
    assert!(ran(&ws.stage(&["run", p])));
    assert!(manifest.exists());
    // More slots change no result; an edited command does.
    ws.write(
        "pipelines/checksums.yaml",
        text_of.replace("slots: 2", "slots: 3"),
    );
    assert!(!ran(&ws.stage(&["run", p])));
    ws.write(
        "pipelines/checksums.yaml",
        text_of.replace("sha256sum {{rel}}", "sha256sum -- {{rel}}"),
    );
    assert!(ran(&ws.stage(&["run", p])));
    assert!(!ran(&ws.stage(&["run", p])));
    assert!(ran(&ws.stage(&["run", "--new", p])));
    // A tick that finds nothing changed is pruned like any other run.
    for _ in 0..21 {
        assert!(!ran(&ws.stage(&["run", p])));
    }
    let o = ws.stage(&["status", "--output", "json"]);
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs.len(), 20);
}

#[test]
fn teardown_refuses_a_file_system_this_state_did_not_create() {
    let ws = Workspace::new();
    ws.genomics();
    let mount = ws.path().join("existing-lustre");
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::write(mount.join("precious"), "keep me").unwrap();
    let p = ws.write(
        "pipelines/tear.yaml",
        "name: tear\nfilesystem:\n  name: fs1\n  mount: ../existing-lustre\n  hsm: { container: data/genomics }\nsteps:\n  - import: { prefixes: [reference/] }\n  - export: { paths: [reference/] }\n  - teardown: {}\n",
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "not created by this state");
    assert!(mount.join("precious").exists());
    let forced = ws.stage(&["run", "--force", p.to_str().unwrap()]);
    assert_exit(&forced, 0);
    assert!(!mount.exists());
}

#[test]
fn quiet_failure_is_one_line() {
    let ws = Workspace::new();
    ws.write("blob/x", "");
    let p = ws.write(
        "p.yaml",
        "name: cronfail\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: { container: blob }\nsteps:\n  - import: {}\n  - process: { command: \"echo broken >&2; exit 4\" }\n",
    );
    let o = ws.stage(&["run", "-q", p.to_str().unwrap()]);
    assert_exit(&o, 1);
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: step `process` failed: 1 of 1 tasks failed"),
        "{err}"
    );
    assert_eq!(text(&o.stdout), "");
}
