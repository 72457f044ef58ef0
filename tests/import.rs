//! AMLFS import semantics on the local target: the conflict-mode matrix, maximum errors,
//! permissions, and export of only new or changed files.

mod common;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use common::*;

fn pipeline(ws: &Workspace, mode: &str, max_errors: i64) -> std::path::PathBuf {
    ws.write(
        "p.yaml",
        format!(
            "name: imp\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: {{ container: blob }}\nsteps:\n  - import:\n      prefixes: [d/]\n      conflict: {mode}\n      max_errors: {max_errors}\n"
        ),
    )
}

fn lustre(ws: &Workspace, rel: &str) -> Option<String> {
    std::fs::read_to_string(ws.path().join("lustre").join(rel)).ok()
}

/// Lustre path states before the second import, and what each mode must do with them.
#[derive(Clone, Copy, Debug)]
enum Before {
    Absent,
    CleanBlobSame,
    CleanBlobChanged,
    Dirty,
    Foreign,
}

#[derive(Debug, PartialEq)]
enum After {
    Imported,
    Kept,
    Failed,
}

fn case(before: Before, mode: &str) -> After {
    let ws = Workspace::new();
    ws.write("blob/d/a.txt", "blob v1");
    ws.write("blob/d/other.txt", "other");
    match before {
        Before::Foreign => {
            ws.write("lustre/d/a.txt", "made by hand");
        }
        Before::Absent => {}
        _ => {
            let p = pipeline(&ws, "fail", 0);
            assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 0);
            assert_eq!(lustre(&ws, "d/a.txt").as_deref(), Some("blob v1"));
        }
    }
    match before {
        Before::CleanBlobChanged => {
            std::thread::sleep(std::time::Duration::from_millis(5));
            ws.write("blob/d/a.txt", "blob v2");
        }
        Before::Dirty => {
            ws.write("lustre/d/a.txt", "edited in lustre");
        }
        _ => {}
    }
    let expected_before = lustre(&ws, "d/a.txt");
    let p = pipeline(&ws, mode, 0);
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    let now = lustre(&ws, "d/a.txt");
    let blob = std::fs::read_to_string(ws.path().join("blob/d/a.txt")).unwrap();
    match o.status.code() {
        Some(1) => {
            assert_has(&o.stderr, "conflict mode `fail`");
            assert_eq!(now, expected_before, "a failed import changed the file");
            After::Failed
        }
        Some(0)
            if now.as_deref() == Some(blob.as_str())
                && expected_before.as_deref() != Some(blob.as_str()) =>
        {
            After::Imported
        }
        Some(0) if matches!(before, Before::Absent) => After::Imported,
        Some(0) => {
            assert_eq!(now, expected_before);
            After::Kept
        }
        _ => panic!("unexpected exit {:?}: {}", o.status, text(&o.stderr)),
    }
}

#[test]
fn conflict_mode_matrix_matches_amlfs() {
    use After::*;
    use Before::*;
    let table = [
        (Absent, [Imported, Imported, Imported, Imported]),
        (CleanBlobSame, [Kept, Kept, Kept, Kept]),
        (CleanBlobChanged, [Failed, Kept, Kept, Imported]),
        (Dirty, [Failed, Kept, Imported, Imported]),
        (Foreign, [Failed, Kept, Imported, Imported]),
    ];
    let modes = ["fail", "skip", "overwrite-if-dirty", "overwrite-always"];
    for (before, expected) in table {
        for (mode, want) in modes.iter().zip(expected) {
            assert_eq!(case(before, mode), want, "{before:?} with {mode}");
        }
    }
}

fn bad_entries(ws: &Workspace) {
    ws.write("blob/d/good1.txt", "1");
    ws.write("blob/d/good2.txt", "2");
    std::os::unix::fs::symlink("/etc/passwd", ws.path().join("blob/d/link")).unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"bad-\xff-name");
    std::fs::write(ws.path().join("blob/d").join(bad), "x").unwrap();
}

#[test]
fn max_errors_zero_stops_at_the_first_error() {
    let ws = Workspace::new();
    bad_entries(&ws);
    let p = pipeline(&ws, "fail", 0);
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "max_errors is 0");
}

#[test]
fn unlimited_errors_import_the_rest_and_never_follow_symlinks() {
    let ws = Workspace::new();
    bad_entries(&ws);
    let p = pipeline(&ws, "fail", -1);
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    let err = text(&o.stderr);
    assert!(err.contains("symlinks are not blobs"), "{err}");
    assert!(err.contains("not UTF-8"), "{err}");
    assert_eq!(lustre(&ws, "d/good1.txt").as_deref(), Some("1"));
    assert_eq!(lustre(&ws, "d/good2.txt").as_deref(), Some("2"));
    assert!(!ws.path().join("lustre/d/link").exists());
}

#[test]
fn two_errors_exceed_max_errors_one() {
    let ws = Workspace::new();
    bad_entries(&ws);
    let p = pipeline(&ws, "fail", 1);
    assert_exit(&ws.stage(&["run", p.to_str().unwrap()]), 1);
}

#[test]
fn permissions_travel_both_ways_and_export_skips_unchanged_files() {
    let ws = Workspace::new();
    let f = ws.write("blob/d/secret.txt", "s");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(
        ws.path().join("blob/d"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let p = ws.write(
        "p.yaml",
        "name: perms\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: { container: blob }\nsteps:\n  - import: { prefixes: [d/] }\n  - process:\n      foreach: d/*.txt\n      outputs: [\"out/{{name}}\"]\n      command: mkdir -p out && cp {{input}} {{output}} && chmod 600 {{output}}\n  - export: { paths: [out] }\n",
    );
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    let mode = |p: &str| {
        std::fs::metadata(ws.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("lustre/d/secret.txt"), 0o640);
    assert_eq!(mode("lustre/d"), 0o750);
    assert_eq!(mode("blob/out/secret.txt"), 0o600);
    assert_has(&o.stderr, "1 file exported");

    // A file changed in the file system after export is exported again, and only it.
    ws.write("lustre/out/extra.txt", "new");
    let export_only = ws.write(
        "q.yaml",
        "name: perms2\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: { container: blob }\nsteps:\n  - export: { paths: [out] }\n",
    );
    let o = ws.stage(&["run", export_only.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "1 file exported");
    assert_has(&o.stderr, "1 unchanged");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("blob/out/extra.txt")).unwrap(),
        "new"
    );
}

/// Exporting a directory that another program is writing (temporary files created, renamed,
/// removed): a file gone before stage reaches it is not there to export, not an error, and
/// never aborts the export. A real shell churns files during five exports.
#[test]
fn files_vanishing_during_an_export_are_skipped_not_errors() {
    let ws = Workspace::new();
    for i in 0..300 {
        ws.write(&format!("live/keep/k{i:03}"), format!("{i}\n"));
    }
    std::fs::create_dir_all(ws.path().join("live/churn")).unwrap();
    let mut churn = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "cd live/churn && while :; do for i in 1 2 3 4 5 6 7 8; do \
             mkdir -p d$i && echo x > d$i/t.part && mv d$i/t.part d$i/t && rm -rf d$i; done; done",
        )
        .current_dir(ws.path())
        .spawn()
        .unwrap();
    let mut outcomes = Vec::new();
    for n in 0..5 {
        let o = ws.stage(&["export", "live", &format!("container{n}")]);
        outcomes.push((o.status.code(), text(&o.stderr)));
    }
    churn.kill().unwrap();
    churn.wait().unwrap();
    for (code, err) in &outcomes {
        assert_eq!(*code, Some(0), "{err}");
        assert!(!err.contains("error"), "{err}");
    }
    for n in 0..5 {
        assert_eq!(ws.tree(&format!("container{n}/keep")).len(), 300);
    }
}
