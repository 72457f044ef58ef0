//! The command line itself: help, schema, completions, exit codes for bad input.

mod common;
use common::*;

#[test]
fn help_explains_commands_and_exit_codes() {
    let o = std::process::Command::new(STAGE)
        .arg("--help")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let out = text(&o.stdout);
    for word in [
        "run",
        "plan",
        "validate",
        "status",
        "logs",
        "explain",
        "schema",
        "completions",
        "Exit codes",
        "130",
    ] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
}

#[test]
fn schema_is_json_schema_naming_every_step_kind() {
    let o = std::process::Command::new(STAGE)
        .arg("schema")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    let s = text(&o.stdout);
    for kind in [
        "ensure",
        "import",
        "process",
        "export",
        "teardown",
        "overwrite-if-dirty",
        "AMLFS-Durable-Premium-500",
    ] {
        assert!(s.contains(kind), "schema lacks {kind}");
    }
}

#[test]
fn completions_for_bash() {
    let o = std::process::Command::new(STAGE)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(text(&o.stdout).contains("complete -F"));
}

#[test]
fn a_missing_pipeline_file_is_invalid_input() {
    let ws = Workspace::new();
    let o = ws.stage(&["run", "nope.yaml"]);
    assert_exit(&o, 2);
    assert_has(&o.stderr, "cannot read pipeline file nope.yaml");
}

#[test]
fn an_unreachable_arm_endpoint_fails_the_run_and_names_it() {
    let ws = Workspace::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let p = ws.write(
        "a.yaml",
        format!("name: az\ntarget: azure\nazure:\n  subscription: s\n  resource_group: rg\n  location: eastus\n  endpoint: http://127.0.0.1:{port}\nfilesystem:\n  name: fs1\n  sku: AMLFS-Durable-Premium-500\n  capacity_tib: 4\n  zone: \"1\"\n  subnet: /subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/amlfs\n  maintenance_window: {{ day: Sunday, time: \"02:00\" }}\n  hsm:\n    container: https://acct.blob.core.windows.net/data\n    logging_container: https://acct.blob.core.windows.net/logs\nsteps:\n  - ensure: {{}}\n"),
    );
    assert_exit(&ws.stage(&["validate", p.to_str().unwrap()]), 0);
    let o = ws
        .cmd(&["run", p.to_str().unwrap()])
        .env("AZURE_STORAGE_SAS_TOKEN", "sv=2022-11-02&sig=unused")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert_has(&o.stderr, &format!("127.0.0.1:{port}"));
}

#[test]
fn status_without_runs_and_with_runs() {
    let ws = Workspace::new();
    let o = ws.stage(&["status"]);
    assert_exit(&o, 0);
    assert!(text(&o.stdout).contains("no runs recorded"));
    let p = ws.genomics();
    assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 0);
    let o = ws.stage(&["status", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    let out = text(&o.stdout);
    assert!(out.contains("genomics run 1: succeeded"), "{out}");
    assert!(out.contains("4 succeeded"), "{out}");
}

#[test]
fn old_runs_are_pruned_so_cron_does_not_grow_the_state_forever() {
    let ws = Workspace::new();
    ws.write("blob/x", "x");
    let p = ws.write(
        "p.yaml",
        "name: cronjob\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: { container: blob }\nsteps:\n  - import: {}\n  - process: { outputs: [y], command: cp x y }\n",
    );
    for _ in 0..23 {
        assert_exit(&ws.stage(&["run", "-q", p.to_str().unwrap()]), 0);
        assert_exit(&ws.stage(&["report", "-q", p.to_str().unwrap()]), 0);
    }
    assert!(
        !ws.state().join("logs/cronjob/1").exists(),
        "logs of pruned run 1 remain"
    );
    let reports = std::fs::read_dir(ws.state().join("reports"))
        .unwrap()
        .count();
    assert_eq!(reports, 20, "reports of pruned runs remain");
    assert!(ws.state().join("reports/cronjob-run-23.html").exists());
    let o = ws.stage(&["status", "--output", "json"]);
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<u64> = runs.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 20, "{ids:?}");
    assert_eq!(ids.first(), Some(&23));
    assert_eq!(ids.last(), Some(&4));
    // The pruned run's success still counts: the task is up to date.
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_has(&o.stderr, "nothing to do");
}

#[test]
fn a_bad_container_url_is_invalid_input_named_once() {
    let ws = Workspace::new();
    ws.write("out/x", "x");
    let url = "http://127.0.0.1:9/devstoreaccount1/c1/p";
    let o = ws.stage(&["export", ws.path().join("out").to_str().unwrap(), url]);
    assert_exit(&o, 2);
    let err = text(&o.stderr);
    assert!(err.contains("`c1` is not a valid container name"), "{err}");
    assert_eq!(
        err.matches(url).count(),
        1,
        "URL not named exactly once:\n{err}"
    );
}

/// On a terminal (a pty from `script`), an import shows how far it is against the total the
/// listing found, and an ETA.
#[test]
fn a_terminal_sees_transfer_totals_and_an_eta() {
    let ws = Workspace::new();
    for i in 0..300 {
        ws.write(&format!("container/f{i:03}"), "x".repeat(1000));
    }
    let on_a_tty = |args: &str| {
        let o = std::process::Command::new("script")
            .args([
                "-qec",
                &format!("'{STAGE}' --state-dir state {args}"),
                "/dev/null",
            ])
            .current_dir(ws.path())
            .env("NO_COLOR", "1")
            .output()
            .expect("run script");
        assert_exit(&o, 0);
        text(&o.stdout)
    };
    let out = on_a_tty("import container copy");
    assert!(out.contains("/300 files"), "no total in:\n{out}");
    assert!(out.contains("eta "), "no ETA in:\n{out}");
    assert!(out.contains("import done: 300 files imported"), "{out}");
    assert_eq!(ws.tree("copy"), ws.tree("container"));
}

#[test]
fn swapped_transfer_arguments_say_which_way_round() {
    let ws = Workspace::new();
    ws.write("dir/x", "x");
    let url = "http://127.0.0.1:9/devstoreaccount1/cont";
    let o = ws.stage(&["export", url, "dir"]);
    assert_exit(&o, 2);
    assert_has(&o.stderr, "stage export DIR URL");
    let o = ws.stage(&["import", "dir", url]);
    assert_exit(&o, 2);
    assert_has(&o.stderr, "stage import URL DIR");
}

/// The emulator reaches blob with its own environment's credentials: without them it says so
/// at start, instead of failing every import job later with a message that seems to be about
/// the run.
#[test]
fn the_emulator_refuses_to_start_without_blob_credentials() {
    let ws = Workspace::new();
    let emulator = |endpoint: &str| {
        let mut c = ws.cmd(&["emulator", "--listen", "127.0.0.1:0", "--data-dir", "emu"]);
        c.args(["--blob-endpoint", endpoint]);
        c
    };
    let o = emulator("http://127.0.0.1:10000/devstoreaccount1")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert_has(&o.stderr, "in the emulator's own environment");
    let o = emulator("http://127.0.0.1:10000/").output().unwrap();
    assert_exit(&o, 2);
    assert_has(&o.stderr, "not a blob service endpoint");
}

/// A dry run says it changed nothing and counts what it would move; a source with nothing in
/// it (a mistyped prefix, most often) is named rather than passed over as "0 files".
#[test]
fn dry_runs_and_empty_sources_say_so() {
    let ws = Workspace::new();
    ws.write("box/a/1.txt", "one");
    ws.write("box/a/2.txt", "two");
    let o = ws.stage(&["import", "--dry-run", "box", "out"]);
    assert_exit(&o, 0);
    assert_has(
        &o.stderr,
        "import dry run, nothing changed: 2 files to import (6 B), 0 up to date",
    );
    assert!(
        !ws.path().join("out").exists(),
        "a dry run created the target"
    );
    // With -v, the files it would write, as `rsync -nv` lists them; in JSON, as a list.
    let o = ws.stage(&["-v", "import", "--dry-run", "box", "out"]);
    assert_eq!(text(&o.stdout), "a/1.txt\na/2.txt\n");
    let o = ws.stage(&["--output", "json", "import", "--dry-run", "box", "out"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["report"]["planned"],
        serde_json::json!(["a/1.txt", "a/2.txt"])
    );
    let o = ws.stage(&["export", "--dry-run", "box", "container"]);
    assert_exit(&o, 0);
    assert_has(
        &o.stderr,
        "export dry run, nothing changed: 2 files to export",
    );
    assert!(ws.tree("container").is_empty());
    std::fs::create_dir_all(ws.path().join("empty")).unwrap();
    let o = ws.stage(&["import", "empty", "out"]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "; no blobs under");
    let o = ws.stage(&["export", "empty", "container"]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "; no files in empty");
}

/// `stage status | head` and the like: a reader that goes away ends a printing command
/// quietly (SIGPIPE, as for any Unix tool), not with a panic and a backtrace.
#[test]
fn a_closed_pipe_ends_a_printing_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let ws = Workspace::new();
    let mut child = ws
        .cmd(&["schema"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.signal(), Some(13), "{:?} {err}", o.status);
}

/// explain reads the journal and the file system; on the azure target it lists no container
/// (an AMLFS job's dry run names no files), so it needs no storage credentials.
#[test]
fn explain_on_the_azure_target_needs_no_storage_credentials() {
    let ws = Workspace::new();
    let sub = "00000000-0000-0000-0000-000000000000";
    let p = ws.write(
        "az.yaml",
        format!(
            "name: az\ntarget: azure\nazure: {{ subscription: {sub}, resource_group: rg, location: eastus, endpoint: http://127.0.0.1:9 }}\n\
             filesystem:\n  name: fsaz\n  sku: AMLFS-Durable-Premium-250\n  capacity_tib: 8\n  zone: \"1\"\n\
             \x20 subnet: /subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s\n\
             \x20 maintenance_window: {{ day: Saturday, time: \"22:00\" }}\n  mount: lustre\n\
             \x20 hsm:\n    container: http://127.0.0.1:9/devstoreaccount1/data\n    logging_container: http://127.0.0.1:9/devstoreaccount1/logs\n\
             steps:\n  - import: {{}}\n  - process: {{ name: work, foreach: in/*.txt, command: \"cat {{{{input}}}}\" }}\n"
        ),
    );
    ws.write("lustre/in/a.txt", "a");
    let o = ws
        .cmd(&["explain", p.to_str().unwrap()])
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stdout, "work/in/a.txt: will run because");
}
