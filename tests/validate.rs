//! Broken pipeline files: each gives a located error and exit code 2, never a panic.

mod common;
use common::*;

/// (file, line, column, words the message must contain, words the hint must contain)
const CASES: &[(&str, usize, usize, &str, &str)] = &[
    (
        "32-mover.yaml",
        7,
        14,
        "`dierct` is not a valid mover",
        "direct",
    ),
    (
        "33-plain-http-container.yaml",
        5,
        16,
        "a container URL must be https",
        "plain http only for a local emulator",
    ),
    (
        "34-teardown-unexported-output.yaml",
        15,
        5,
        "teardown would delete `calls/out.vcf`, an output of step `call`",
        "add `call` to an export step's `outputs_of`",
    ),
    (
        "35-scale-set-on-local.yaml",
        7,
        14,
        "`scale_set` needs `target: azure`",
        "list the machines under `hosts`",
    ),
    (
        "31-env-var-in-command.yaml",
        9,
        24,
        "`{{vars.token}}` in a command takes its value from the environment",
        "not written into the journal",
    ),
    (
        "01-empty.yaml",
        1,
        1,
        "the pipeline file is empty",
        "stage schema",
    ),
    (
        "02-not-a-map.yaml",
        1,
        1,
        "must be a mapping, found a list",
        "",
    ),
    ("03-syntax.yaml", 3, 1, "YAML syntax error", "closed"),
    (
        "04-unknown-top-key.yaml",
        5,
        1,
        "unknown key `stpes`",
        "did you mean `steps`?",
    ),
    (
        "05-missing-name.yaml",
        1,
        1,
        "missing `name`",
        "name: genomics",
    ),
    (
        "06-bad-sku.yaml",
        4,
        8,
        "not a valid SKU",
        "AMLFS-Durable-Premium-250",
    ),
    (
        "07-capacity-step.yaml",
        5,
        17,
        "50 TiB is not a valid capacity",
        "at least 48 TiB in steps of 48 TiB (e.g. 48 or 96)",
    ),
    (
        "08-capacity-type.yaml",
        5,
        17,
        "must be a whole number, found `lots`",
        "",
    ),
    (
        "09-bad-hostlist.yaml",
        6,
        15,
        "range 07-03 runs backwards",
        "Slurm syntax",
    ),
    (
        "10-unknown-step-kind.yaml",
        7,
        5,
        "unknown step kind `proces`",
        "did you mean `process`?",
    ),
    (
        "11-conflict-mode.yaml",
        7,
        17,
        "`overwrite` is not a valid conflict mode",
        "overwrite-if-dirty",
    ),
    (
        "12-unknown-template-var.yaml",
        8,
        22,
        "`{{inptu}}` names an unknown variable",
        "did you mean `{{input}}`?",
    ),
    (
        "13-foreach-var-without-foreach.yaml",
        7,
        22,
        "`{{input}}` names an unknown variable",
        "only in steps with `foreach`",
    ),
    (
        "14-unknown-export-ref.yaml",
        10,
        20,
        "`qcc` is not a process step",
        "did you mean `qc`?",
    ),
    (
        "15-duplicate-step-names.yaml",
        7,
        5,
        "two steps are named `a`",
        "unique",
    ),
    (
        "16-azure-missing-fields.yaml",
        4,
        3,
        "`filesystem` is missing `subnet`",
        "resource id",
    ),
    (
        "17-bad-timeout.yaml",
        8,
        16,
        "`5 minutes` is not a valid timeout",
        "30m",
    ),
    (
        "18-path-escape.yaml",
        7,
        18,
        "leaves the file system",
        "`..`",
    ),
    (
        "19-unknown-var.yaml",
        9,
        30,
        "`{{vars.thread}}` names an unknown variable",
        "did you mean `vars.threads`?",
    ),
    (
        "20-env-in-command.yaml",
        7,
        43,
        "`{{env.SAS_TOKEN}}` in a command",
        "\"$SAS_TOKEN\"",
    ),
    (
        "21-quoted-template.yaml",
        8,
        23,
        "inside quotes",
        "quotes substituted values itself",
    ),
    (
        "22-teardown-without-export.yaml",
        7,
        5,
        "no export step comes before it",
        "verified export",
    ),
    (
        "23-host-key-checking.yaml",
        7,
        22,
        "`sometimes` is not a valid host key checking",
        "accept-new",
    ),
    (
        "24-sas-in-url.yaml",
        11,
        16,
        "carries a query string",
        "AZURE_STORAGE_SAS_TOKEN",
    ),
    (
        "25-bad-window.yaml",
        4,
        30,
        "`Caturday` is not a valid day",
        "Saturday",
    ),
    (
        "26-steps-not-list.yaml",
        6,
        9,
        "`steps` must be a list",
        "- import",
    ),
    ("27-unclosed-template.yaml", 7, 21, "unclosed `{{`", ""),
    ("28-max-errors-range.yaml", 7, 19, "between -1 and", ""),
    (
        "29-literal-output-foreach.yaml",
        8,
        17,
        "would write this same output",
        "{{stem}}",
    ),
    ("30-invalid-utf8.yaml", 1, 8, "not valid UTF-8", ""),
];

#[test]
fn every_broken_file_is_located_and_explained() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad");
    let files = std::fs::read_dir(dir).unwrap().count();
    assert_eq!(files, CASES.len(), "every file in tests/bad needs a case");
    for (file, line, col, message, hint) in CASES {
        let path = format!("{dir}/{file}");
        let o = std::process::Command::new(STAGE)
            .args(["validate", &path])
            .env("NO_COLOR", "1")
            .env_remove("SAS_TOKEN")
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{file}: exit {:?}\n{err}",
            o.status
        );
        assert!(!err.contains("panicked"), "{file} panicked:\n{err}");
        let located = format!("{path}:{line}:{col}: error: ");
        let hit = err
            .lines()
            .find(|l| l.starts_with(&located) && l.contains(message));
        assert!(
            hit.is_some(),
            "{file}: expected `{located}…{message}` in\n{err}"
        );
        assert!(
            err.contains(hint),
            "{file}: expected hint `{hint}` in\n{err}"
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad");
    let o = std::process::Command::new(STAGE)
        .args(["validate", &format!("{dir}/16-azure-missing-fields.yaml")])
        .output()
        .unwrap();
    let err = text(&o.stderr);
    for key in [
        "sku",
        "capacity_tib",
        "zone",
        "subnet",
        "maintenance_window",
        "logging_container",
        "azure",
    ] {
        assert!(
            err.contains(&format!("missing `{key}`")),
            "{key} not reported:\n{err}"
        );
    }
    assert!(err.contains("has 7 problems"), "{err}");
}

#[test]
fn json_diagnostics_for_machines() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad");
    let o = std::process::Command::new(STAGE)
        .args([
            "validate",
            "--output",
            "json",
            &format!("{dir}/06-bad-sku.yaml"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["valid"], false);
    assert_eq!(v[0]["problems"][0]["line"], 4);
    assert_eq!(v[0]["problems"][0]["column"], 8);
}

#[test]
fn shipped_pipelines_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let o = std::process::Command::new(STAGE)
        .args([
            "validate",
            &format!("{root}/pipelines/genomics.yaml"),
            &format!("{root}/pipelines/checksums.yaml"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

/// Truncations and byte flips of a real pipeline never panic the validator.
#[test]
fn mangled_input_never_panics() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/genomics.yaml"
    ))
    .unwrap();
    let bytes = text.as_bytes();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let noise = b"{}[]:-,'\"\n #&*!|>%@`\t{{}}";
    let mut cases: Vec<Vec<u8>> = (0..bytes.len())
        .step_by(7)
        .map(|n| bytes[..n].to_vec())
        .collect();
    for _ in 0..3000 {
        let mut b = bytes.to_vec();
        for _ in 0..(1 + next() % 4) {
            let i = (next() as usize) % b.len();
            b[i] = noise[(next() as usize) % noise.len()];
        }
        cases.push(b);
    }
    for case in cases {
        let s = String::from_utf8_lossy(&case).into_owned();
        let _ = stage::spec::parse_str(std::path::Path::new("fuzz.yaml"), s, &|_| None);
    }
}

/// Hostile pipeline files: a problem far along a long line, a byte-order mark, a second
/// document, an alias bomb. Each is answered with a located error or accepted, never a panic
/// or an exhausted machine.
#[test]
fn hostile_pipeline_files_are_answered_not_obeyed() {
    let ws = Workspace::new();
    let base = "name: hostile\nfilesystem:\n  name: hfs\n  hsm: { container: blob }\nsteps:\n  - ensure: {}\n";
    let long = ws.write(
        "long.yaml",
        format!(
            "{base}  - process: {{ command: x, {}bogus: 1 }}\n",
            " ".repeat(70_000)
        ),
    );
    let o = ws.stage(&["validate", long.to_str().unwrap()]);
    assert_exit(&o, 2);
    assert_has(&o.stderr, "long.yaml:7:");

    let bom = ws.write("bom.yaml", format!("\u{feff}{base}"));
    assert_exit(&ws.stage(&["validate", bom.to_str().unwrap()]), 0);

    let two = ws.write("two.yaml", format!("{base}---\nname: [\n"));
    let o = ws.stage(&["validate", two.to_str().unwrap()]);
    assert_exit(&o, 2);
    assert_has(&o.stderr, "two.yaml:7:1");
    assert_has(&o.stderr, "second YAML document");

    let mut bomb = format!("{base}vars:\n  l0: &l0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb += &format!(
            "  l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
        );
    }
    let bomb = ws.write("bomb.yaml", bomb);
    let o = ws.stage(&["validate", bomb.to_str().unwrap()]);
    assert_exit(&o, 2);
    assert_has(&o.stderr, "aliases expand");
}
