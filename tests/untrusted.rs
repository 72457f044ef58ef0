//! Data nobody here controls: blob names, blob metadata, symbolic links in the tree, pipeline
//! files named the way users type them. None of it may corrupt a result, write outside the
//! target, or hand out privileges.

#[path = "common/azurite.rs"]
mod azurite;
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use azurite::{Azurite, listing, put, raw, stage_env};
use common::*;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_pipeline_named_by_bare_file_name_resolves_its_paths_beside_itself() {
    let ws = Workspace::new();
    ws.write("blobs/in/a.txt", "alpha\n");
    ws.write("blobs/in/b.txt", "beta\n");
    ws.write(
        "p.yaml",
        r#"name: bare
target: local
filesystem:
  name: bare-fs
  mount: fs
  hsm:
    container: blobs
    logging_container: logs
pool: { hosts: localhost, slots: 2 }
steps:
  - ensure: {}
  - import: { prefixes: [in/] }
  - process:
      name: copy
      foreach: "in/*.txt"
      outputs: ["out/{{stem}}.txt"]
      command: mkdir -p out && tr a-z A-Z < {{input}} > {{output}}
  - export: { outputs_of: [copy] }
"#,
    );
    // Exactly as a user types it: a bare name, from the file's own directory.
    let o = ws.stage(&["run", "p.yaml"]);
    assert_exit(&o, 0);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("blobs/out/a.txt")).unwrap(),
        "ALPHA\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("fs/out/b.txt")).unwrap(),
        "BETA\n"
    );
    // And from elsewhere, by a relative path: the same file system, nothing to do.
    std::fs::create_dir_all(ws.path().join("elsewhere")).unwrap();
    let o = ws
        .cmd(&["run", "../p.yaml"])
        .current_dir(ws.path().join("elsewhere"))
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stderr, "nothing to do");
    assert!(!ws.path().join("elsewhere/fs").exists());

    // A report written to a bare file name.
    let o = ws.stage(&["report", "p.yaml", "-o", "report.html"]);
    assert_exit(&o, 0);
    assert!(ws.path().join("report.html").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_named_like_a_temporary_file_is_carried_like_any_other() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let c = raw(&az, "tmpnames");
    c.create(None).await.unwrap();
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    put(&c, "big", &big, &[]).await;
    put(&c, "big.stage-tmp", b"other blob!", &[]).await;
    put(&c, "d/x.part", b"part", &[]).await;

    let o = stage_env(&ws, &["import", &az.url("tmpnames"), "dst"]);
    assert_exit(&o, 0);
    assert_eq!(std::fs::read(ws.path().join("dst/big")).unwrap(), big);
    assert_eq!(
        std::fs::read(ws.path().join("dst/big.stage-tmp")).unwrap(),
        b"other blob!"
    );
    // Nothing of stage's own is left among the user's files.
    assert_eq!(
        entries(&ws.path().join("dst")),
        ["big", "big.stage-tmp", "d"]
    );
    let o = stage_env(&ws, &["import", &az.url("tmpnames"), "dst"]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "3 up to date");

    // Export carries such names too, and not stage's own directory.
    ws.write("out/n.stage-tmp", "n");
    ws.write("out/m", "m");
    let o = stage_env(&ws, &["export", "out", &az.url("back")]);
    assert_exit(&o, 0);
    let names: Vec<String> = listing(&raw(&az, "back")).await.into_keys().collect();
    assert_eq!(names, ["m", "n.stage-tmp"]);
    let o = stage_env(&ws, &["export", "dst", &az.url("back2")]);
    assert_exit(&o, 0);
    let names: Vec<String> = listing(&raw(&az, "back2")).await.into_keys().collect();
    assert_eq!(names, ["big", "big.stage-tmp", "d", "d/x.part"]);

    // Stage's own directory is not a name a blob may take.
    put(&c, ".stage-tmp/0/big", b"planted", &[]).await;
    let o = stage_env(&ws, &["import", &az.url("tmpnames"), "dst3"]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "reserved for stage's own temporary files");
}

#[tokio::test(flavor = "multi_thread")]
async fn imports_never_write_through_a_symbolic_link() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let outside = tempfile::tempdir().unwrap();
    let c = raw(&az, "links");
    c.create(None).await.unwrap();
    put(&c, "link/evil", b"evil", &[]).await;
    put(&c, "file/under", b"x", &[]).await;
    let dst = ws.path().join("dst");
    std::fs::create_dir_all(&dst).unwrap();
    std::os::unix::fs::symlink(outside.path(), dst.join("link")).unwrap();
    std::fs::write(dst.join("file"), "a file").unwrap();

    // The default mode: a link where a directory should be is a conflict, and fails.
    let o = stage_env(&ws, &["import", &az.url("links"), "dst"]);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "conflict");
    assert!(
        entries(outside.path()).is_empty(),
        "wrote outside the target"
    );
    let o = stage_env(
        &ws,
        &["import", "--conflict", "skip", &az.url("links"), "dst"],
    );
    assert_exit(&o, 0);
    assert_has(&o.stderr, "2 conflicts skipped");
    assert!(
        entries(outside.path()).is_empty(),
        "wrote outside the target"
    );
    assert!(dst.join("link").is_symlink());

    // Overwriting replaces the link itself, never what it points to.
    let o = stage_env(
        &ws,
        &[
            "import",
            "--conflict",
            "overwrite-always",
            &az.url("links"),
            "dst",
        ],
    );
    assert_exit(&o, 0);
    assert!(
        entries(outside.path()).is_empty(),
        "wrote outside the target"
    );
    assert!(!dst.join("link").is_symlink());
    assert_eq!(std::fs::read(dst.join("link/evil")).unwrap(), b"evil");
    assert_eq!(std::fs::read(dst.join("file/under")).unwrap(), b"x");
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_never_read_through_a_symbolic_link() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    ws.write("src/ok.txt", "ok");
    std::os::unix::fs::symlink(outside.path(), ws.path().join("src/results")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        ws.path().join("src/alias.txt"),
    )
    .unwrap();
    let o = stage_env(
        &ws,
        &["export", "--max-errors", "-1", "src", &az.url("out")],
    );
    let names: Vec<String> = listing(&raw(&az, "out")).await.into_keys().collect();
    assert_eq!(names, ["ok.txt"], "{}", text(&o.stderr));
    assert_has(&o.stderr, "symlinks are not blobs");
}

/// As root — as the Slurm prolog always runs — metadata must not make a setuid file.
#[tokio::test(flavor = "multi_thread")]
async fn set_id_bits_in_blob_metadata_are_never_applied() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let c = raw(&az, "setid");
    c.create(None).await.unwrap();
    put(&c, "suid", b"#!/bin/sh\nid\n", &[("permissions", "4755")]).await;
    put(
        &c,
        "sgid",
        b"#!/bin/sh\nid\n",
        &[("permissions", "2755"), ("owner", "0")],
    )
    .await;
    put(
        &c,
        "shared",
        b"",
        &[("hdi_isfolder", "true"), ("permissions", "2775")],
    )
    .await;
    put(&c, "plain", b"x", &[("permissions", "0640")]).await;
    let o = stage_env(&ws, &["import", &az.url("setid"), "dst"]);
    assert_exit(&o, 0);
    let mode = |n: &str| {
        std::fs::metadata(ws.path().join("dst").join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o755);
    // A directory keeps setgid: it only passes the group on.
    assert_eq!(mode("shared"), 0o2775);
    assert_eq!(mode("plain"), 0o640);
    if unsafe { libc::geteuid() } == 0 {
        let m = std::fs::metadata(ws.path().join("dst/sgid")).unwrap();
        assert_eq!(m.uid(), 0);
    }
}

/// The Slurm hooks run as root for the job's user: what they make is the user's, and they
/// write and read only where the user could.
#[tokio::test(flavor = "multi_thread")]
async fn the_slurm_hooks_act_only_as_the_jobs_user_could() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root, as the hooks run");
        return;
    }
    let (uid, gid) = (4321u32, 8765u32);
    let az = Azurite::start();
    let ws = Workspace::new();
    let c = raw(&az, "jobdata");
    c.create(None).await.unwrap();
    put(
        &c,
        "sub/in.txt",
        b"input",
        &[("owner", "0"), ("group", "0")],
    )
    .await;
    put(
        &c,
        "tool",
        b"#!/bin/sh\n",
        &[("permissions", "6755"), ("owner", "0")],
    )
    .await;

    let home = ws.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    let root_only = ws.path().join("rootdir");
    std::fs::create_dir_all(&root_only).unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&root_only, home.join("link")).unwrap();
    let hook = |which: &str, line: String| {
        let script = ws.write(&format!("{which}.sh"), format!("#!/bin/sh\n{line}\ntrue\n"));
        azurite::stage(&ws, &["slurm", which, "--script", script.to_str().unwrap()])
            .env("SLURM_JOB_ID", "77")
            .env("SLURM_JOB_UID", uid.to_string())
            .env("SLURM_JOB_GID", gid.to_string())
            .output()
            .unwrap()
    };

    let dest = home.join("in/deeper");
    let o = hook(
        "prolog",
        format!("#STAGE in {} {}", az.url("jobdata"), dest.display()),
    );
    assert_exit(&o, 0);
    for rel in ["", "sub", "sub/in.txt", "tool"] {
        let m = std::fs::symlink_metadata(dest.join(rel)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (uid, gid),
            "{rel:?} is not the job user's"
        );
    }
    let m = std::fs::metadata(home.join("in")).unwrap();
    assert_eq!((m.uid(), m.gid()), (uid, gid));
    assert_eq!(
        std::fs::metadata(dest.join("tool")).unwrap().mode() & 0o7777,
        0o755
    );

    // Where the user cannot write, nor through a link they planted, nothing is written.
    for target in [root_only.join("in"), home.join("link/in")] {
        let o = hook(
            "prolog",
            format!("#STAGE in {} {}", az.url("jobdata"), target.display()),
        );
        assert_ne!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(
            entries(&root_only).is_empty(),
            "wrote into a root-only directory"
        );
    }

    // Stage-out exports only the user's own directory.
    std::fs::write(root_only.join("secret"), "root's").unwrap();
    let o = hook(
        "epilog",
        format!("#STAGE out {} {}", root_only.display(), az.url("leak")),
    );
    assert_exit(&o, 0);
    let hooks = std::fs::read_to_string(ws.state().join("slurm/hooks.log")).unwrap();
    assert!(hooks.contains("is not theirs"), "{hooks}");
    assert!(!raw(&az, "leak").exists().await.unwrap(), "exported");
    let o = hook(
        "epilog",
        format!("#STAGE out {} {}", dest.display(), az.url("back")),
    );
    assert_exit(&o, 0);
    assert!(listing(&raw(&az, "back")).await.contains_key("sub/in.txt"));
}

/// A read whose checksum does not match is read again before the blob counts as damaged: at a
/// 3 % bit-flip rate every import used to fail on its first bad file.
#[test]
fn a_read_that_fails_its_checksum_is_read_again() {
    let az = Azurite::start();
    let ws = Workspace::new();
    ws.write("src/a.dat", vec![7u8; 100_000]);
    assert_exit(&stage_env(&ws, &["export", "src", &az.url("flip")]), 0);
    let o = azurite::stage(&ws, &["import", &az.url("flip"), "dst"])
        .env("STAGE_FAIL_AT", "import.corrupt-read:1")
        .env("STAGE_LOG", "warn")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stderr, "reading it again");
    assert_eq!(
        std::fs::read(ws.path().join("dst/a.dat")).unwrap(),
        vec![7u8; 100_000]
    );
}

#[test]
fn teardown_of_a_mount_holding_the_pipeline_or_everything_is_refused() {
    let ws = Workspace::new();
    for (mount, ok) in [
        ("/", false),
        ("..", false),
        (".", false),
        ("scratch/fs", true),
    ] {
        let p = ws.write(
            "p.yaml",
            format!(
                "name: td\nfilesystem:\n  name: tdfs\n  mount: \"{mount}\"\n  hsm: {{ container: blob }}\nsteps:\n  - ensure: {{}}\n  - process: {{ outputs: [o], command: touch o }}\n  - export: {{ paths: [o] }}\n  - teardown: {{}}\n"
            ),
        );
        let o = ws.stage(&["validate", p.to_str().unwrap()]);
        if ok {
            assert_exit(&o, 0);
        } else {
            assert_exit(&o, 2);
            assert_has(&o.stderr, "p.yaml:4:10");
            assert_has(&o.stderr, "teardown would delete");
        }
    }
}

/// A `#STAGE in` prefix with no blobs (a typo, most often) fails the prolog, so the job is held
/// rather than run without its inputs; `#STAGE allow_empty` says the job can do without.
#[test]
fn an_empty_stage_in_source_holds_the_job_unless_allowed() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let dest = ws.path().join("in");
    let prolog = |extra: &str| {
        let script = ws.write(
            "job.sh",
            format!(
                "#!/bin/sh\n#STAGE in {} {}\n{extra}true\n",
                az.url("nosuchprefix/typo"),
                dest.display()
            ),
        );
        azurite::stage(
            &ws,
            &["slurm", "prolog", "--script", script.to_str().unwrap()],
        )
        .env_remove("SLURM_JOB_UID")
        .output()
        .unwrap()
    };
    // The container exists, the prefix holds nothing.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { raw(&az, "nosuchprefix").create(None).await.unwrap() });
    let o = prolog("");
    assert_exit(&o, 1);
    let hooks = std::fs::read_to_string(ws.state().join("slurm/hooks.log")).unwrap();
    assert!(hooks.contains("no blobs there"), "{hooks}");
    let o = prolog("#STAGE allow_empty\n");
    assert_exit(&o, 0);
}

/// Names a real container can hold and a shell would misread: every one is carried exactly
/// through import, a process step's command line, and export.
const HOSTILE: &[&str] = &[
    "sp ace.txt",
    "'single'.txt",
    "\"double\".txt",
    "$(touch pwned).txt",
    "`touch pwned`.txt",
    "semi;colon&amp|pipe.txt",
    "-rf",
    "--help",
    "..dots",
    "dots..",
    "glob*?[x].txt",
    "#hash",
    "~tilde",
    "percent%2e%2e%2fx",
    "ünïcødé/ñ.txt",
    "emoji😀.txt",
    "rtl\u{202e}txt.exe",
    "combining e\u{301}.txt",
    "deep/a/b/c/d/e/f/g/h.txt",
    "x.part",
    "big.stage-tmp",
    "d/.stage-tmp/nested-is-fine",
];

/// Names that must be refused, whatever the container says.
const ESCAPING: &[&str] = &[
    "../escape.txt",
    "a/../../escape.txt",
    "./dot.txt",
    ".stage-tmp/0/x",
];

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_round_trip_through_import_tasks_and_export() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let c = raw(&az, "corpus");
    c.create(None).await.unwrap();
    let long = "l".repeat(255);
    let names: Vec<&str> = HOSTILE.iter().copied().chain([long.as_str()]).collect();
    for n in &names {
        put(&c, &format!("in/{n}"), n.as_bytes(), &[]).await;
    }
    for n in ESCAPING {
        put(&c, n, b"evil", &[]).await;
    }
    let p = ws.write(
        "p.yaml",
        r#"name: corpus
target: local
filesystem:
  name: corpusfs
  mount: fs
  hsm: { container: box }
pool: { slots: 4 }
steps:
  - ensure: {}
  - import: { prefixes: [in/], max_errors: -1 }
  - process:
      name: copy
      foreach: "in/**"
      outputs: ["out/{{rel}}"]
      command: mkdir -p "$(dirname {{output}})" && cat {{input}} > {{output}}
  - export: { outputs_of: [copy] }
"#,
    );
    // Into a directory that plays the pipeline's container, from Azurite.
    let o = stage_env(
        &ws,
        &["import", "--max-errors", "-1", &az.url("corpus"), "box"],
    );
    assert_exit(&o, 0);
    for bad in ESCAPING {
        assert_has(&o.stderr, &format!("{bad:?}"));
    }
    let o = ws.stage(&["run", p.to_str().unwrap()]);
    assert_exit(&o, 0);
    // Back out to Azurite.
    let o = stage_env(&ws, &["export", "box/out", &az.url("back")]);
    assert_exit(&o, 0);
    let back = listing(&raw(&az, "back")).await;
    for n in &names {
        // Globs pass over hidden names, as the shell's do: those are checked as imported.
        if n.split('/').any(|c| c.starts_with('.')) {
            let got = std::fs::read(ws.path().join("fs/in").join(n)).unwrap_or_default();
            assert_eq!(got, n.as_bytes(), "{n:?} was not imported");
            continue;
        }
        let got = std::fs::read(ws.path().join("box/out/in").join(n)).unwrap_or_default();
        assert_eq!(got, n.as_bytes(), "{n:?} did not survive the pipeline");
        assert!(
            back.contains_key(&format!("in/{n}")),
            "{n:?} did not reach the container"
        );
    }
    assert!(
        !ws.tree("")
            .keys()
            .any(|k| k.contains("pwned") && !k.contains("touch")),
        "a name ran as a command"
    );
    assert!(!ws.path().join("escape.txt").exists() && !ws.path().join("box/escape.txt").exists());
}
