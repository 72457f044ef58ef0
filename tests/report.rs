//! `stage report`: a recorded run as an HTML page, built from the journal of a real run.

mod common;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use common::*;

/// Ten inputs, one of them named like markup, and a task that fails with a message on stderr.
fn pipeline(ws: &Workspace) -> PathBuf {
    for i in 0..9 {
        ws.write(&format!("blob/in/f{i}.txt"), format!("{i}\n"));
    }
    ws.write("blob/in/<img src=x onerror=alert(1)>.txt", "bad\n");
    ws.write(
        "rep.yaml",
        r#"name: rep
filesystem:
  name: repfs
  hsm: { container: blob }
pool: { slots: 3 }
steps:
  - ensure: {}
  - import: { prefixes: [in/] }
  - process:
      name: work
      foreach: in/*.txt
      outputs: ["out/{{stem}}.txt"]
      command: |
        if grep -q bad {{input}}; then echo "<b>unreadable</b> {{rel}}" >&2; exit 3; fi
        mkdir -p out && cp {{input}} {{output}}
"#,
    )
}

fn report(ws: &Workspace, p: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["report", p.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = ws.stage(&args);
    assert_exit(&o, 0);
    let path = text(&o.stdout).trim().to_string();
    assert!(
        path.ends_with(".html"),
        "report prints where it wrote: {path:?}"
    );
    std::fs::read_to_string(ws.path().join(path)).expect("report written")
}

#[test]
fn a_failed_run_reports_every_task_and_the_failure_with_its_stderr_escaped() {
    let ws = Workspace::new();
    let p = pipeline(&ws);
    assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 1);
    let page = report(&ws, &p, &[]);
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("rep run 1: <span class=\"failed\">failed</span>"));
    assert!(page.contains("10 tasks: 1 failed, 9 succeeded"), "{page}");
    // One bar per step on the run's timeline; on the step's, every task in a bar of its own
    // or in one that joins back-to-back tasks ("N tasks ...").
    let drawn: usize = page
        .split("<title>")
        .skip(2)
        .filter_map(|t| t.split("</title>").next())
        .map(|t| match t.split_once(" tasks ") {
            Some((n, _)) if n.parse::<usize>().is_ok() => n.parse().unwrap(),
            _ => usize::from(t.starts_with("in/")),
        })
        .sum();
    assert_eq!(drawn, 10, "{page}");
    assert!(page.contains("Failed tasks (1)"));
    assert!(page.contains("in/&lt;img src=x onerror=alert(1)&gt;.txt"));
    assert!(
        page.contains("&lt;b&gt;unreadable&lt;/b&gt; &#39;in/&lt;img"),
        "{page}"
    );
    assert!(!page.contains("<img") && !page.contains("<b>unreadable"));
    // The way to the whole log, quoted for a shell.
    assert!(
        page.contains(
            "/rep.yaml &#39;work/in/&lt;img src=x onerror=alert(1)&gt;.txt&#39; --stderr"
        ),
        "{page}"
    );
}

/// Every input readable, the run killed at its fourth task's exit, then run to the end.
fn killed_then_resumed(ws: &Workspace, p: &std::path::Path) {
    ws.write("blob/in/<img src=x onerror=alert(1)>.txt", "fine\n");
    let killed = ws
        .cmd(&["run", p.to_str().unwrap()])
        .env("STAGE_CRASH_AT", "task.after-exit:4")
        .output()
        .unwrap();
    assert_eq!(killed.status.signal(), Some(9), "{}", text(&killed.stderr));
    assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 0);
}

#[test]
fn a_run_resumed_after_a_kill_is_one_report() {
    let ws = Workspace::new();
    let p = pipeline(&ws);
    killed_then_resumed(&ws, &p);
    let page = report(&ws, &p, &["--run", "1"]);
    assert!(page.contains("rep run 1: <span class=\"succeeded\">succeeded</span>"));
    assert!(page.contains("10 tasks: 10 succeeded"), "{page}");
    assert!(!page.contains("Failed tasks"));
}

/// A step resumed by a later process began in the first: its span covers the tasks that
/// ran there, not only the last process's share.
#[test]
fn a_resumed_step_spans_every_process_that_ran_it() {
    let ws = Workspace::new();
    let p = pipeline(&ws);
    // Slow enough that the killed process's finished tasks are on record.
    let yaml = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, yaml.replace("mkdir -p out", "sleep 0.3; mkdir -p out")).unwrap();
    killed_then_resumed(&ws, &p);
    let o = ws.stage(&["--output", "json", "status", "--tasks", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let work = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"]["name"] == "work")
        .unwrap();
    let first_task = work["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["started_ms"].as_u64())
        .min()
        .unwrap();
    let step_start = work["step"]["started_ms"].as_u64().unwrap();
    assert!(
        step_start <= first_task,
        "the step starts at {step_start}, after its first task at {first_task}"
    );
}

#[test]
fn a_report_goes_to_stdout_with_a_dash_and_a_missing_run_is_invalid_input() {
    let ws = Workspace::new();
    let p = pipeline(&ws);
    let none = ws.stage(&["report", p.to_str().unwrap()]);
    assert_exit(&none, 2);
    assert_has(&none.stderr, "pipeline rep has no runs yet");
    assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 1);
    let missing = ws.stage(&["report", p.to_str().unwrap(), "--run", "9"]);
    assert_exit(&missing, 2);
    assert_has(&missing.stderr, "pipeline rep has no run 9");
    let out = ws.stage(&["report", p.to_str().unwrap(), "-o", "-"]);
    assert_exit(&out, 0);
    assert!(text(&out.stdout).starts_with("<!doctype html>"));
    assert!(!ws.state().join("reports").exists());
}
