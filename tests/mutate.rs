//! Pipeline files damaged at random: every one is accepted or refused with located problems,
//! and rendering those never panics. Seeded, so a failure names the input that caused it.

use std::path::Path;

/// Small deterministic PRNG (xorshift64*): the same damage on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What YAML and the pipeline grammar give meaning to, and text that is not ASCII.
const PIECES: &[&str] = &[
    ":",
    "-",
    " ",
    "\n",
    "\t",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    "#",
    "&a",
    "*a",
    "!!str",
    "|",
    ">",
    "{{",
    "}}",
    "{{input}}",
    "{{vars.x}}",
    "..",
    "/",
    "\\",
    "é",
    "🙂",
    "\u{0}",
    "\r\n",
    "0",
    "-1",
    "99999999999999999999",
    "1e9",
    "null",
    "~",
    "true",
    "steps:",
    "- process:",
    "name:",
    "  ",
    "?",
    ",",
    "%",
    "@",
    "`",
];

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 if at < chars.len() => {
                let len = (1 + rng.below(12)).min(chars.len() - at);
                chars.drain(at..at + len);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())];
                chars.splice(at..at, piece.chars());
            }
            2 if at < chars.len() => {
                // Duplicate a stretch (repeated keys, steps, indentation).
                let len = (1 + rng.below(40)).min(chars.len() - at);
                let copy: Vec<char> = chars[at..at + len].to_vec();
                let to = rng.below(chars.len() + 1);
                chars.splice(to..to, copy);
            }
            _ => {
                if let Some(c) = chars.get_mut(at) {
                    *c = PIECES[rng.below(PIECES.len())]
                        .chars()
                        .next()
                        .unwrap_or(' ');
                }
            }
        }
    }
    chars.into_iter().collect()
}

fn render(e: &stage::spec::SpecError) -> String {
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
    let mut out = String::new();
    for report in e.reports() {
        handler
            .render_report(&mut out, report.as_ref())
            .expect("render");
    }
    out
}

#[test]
fn damaged_pipeline_files_are_refused_with_located_problems_never_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = vec![
        root.join("pipelines/genomics.yaml"),
        root.join("pipelines/checksums.yaml"),
    ];
    let mut bad: Vec<_> = std::fs::read_dir(root.join("tests/bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    bad.sort();
    seeds.extend(bad);
    let env = |name: &str| (name == "HOME").then(|| "/home/someone".to_string());
    let (mut refused, mut accepted) = (0, 0);
    for (i, seed) in seeds.iter().enumerate() {
        let Ok(text) = std::fs::read_to_string(seed) else {
            continue; // the invalid-UTF-8 case
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
        for n in 0..400 {
            let damaged = mutate(&text, &mut rng);
            let path = seed.with_extension(format!("mutant-{n}.yaml"));
            let outcome = std::panic::catch_unwind(|| {
                match stage::spec::parse_str(&path, damaged.clone(), &env) {
                    Ok(_) => None,
                    Err(stage::spec::LoadError::Invalid(e)) => {
                        assert!(!e.problems.is_empty(), "refused without a problem");
                        for p in &e.problems {
                            assert!(p.line >= 1 && p.column >= 1, "{}: {p:?}", path.display());
                        }
                        Some(render(&e))
                    }
                    Err(other) => panic!("{other}"),
                }
            });
            match outcome {
                Ok(Some(_)) => refused += 1,
                Ok(None) => accepted += 1,
                Err(_) => panic!(
                    "panicked on mutant {n} of {}:\n---\n{damaged}\n---",
                    seed.display()
                ),
            }
        }
    }
    // The damage must mostly break things, or this tests nothing.
    assert!(
        refused > accepted * 2,
        "refused {refused}, accepted {accepted}"
    );
}

/// Runs `f` on `count` mutants of each seed; a panic names the input.
fn never_panics(seeds: &[&str], count: usize, f: impl Fn(&str) -> bool) -> (usize, usize) {
    let (mut ok, mut err) = (0, 0);
    for (i, seed) in seeds.iter().enumerate() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (i as u64 + 7));
        for _ in 0..count {
            let damaged = mutate(seed, &mut rng);
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&damaged))) {
                Ok(true) => ok += 1,
                Ok(false) => err += 1,
                Err(_) => panic!("panicked on {damaged:?} (from {seed:?})"),
            }
        }
    }
    (ok, err)
}

#[test]
fn damaged_host_lists_are_refused_never_a_panic() {
    let (ok, err) = never_panics(
        &[
            "node[01-64]",
            "user@login[1-2]:2222",
            "a,b[1-3,5],c-[001-010]:22,[::1]",
            "rack[1-2]-node[001-100]",
        ],
        3000,
        |text| match stage::pool::hostlist::parse(text) {
            Ok(hosts) => {
                assert!(
                    hosts.len() <= 100_000,
                    "{text:?} gave {} hosts",
                    hosts.len()
                );
                true
            }
            Err(e) => {
                // The offset becomes a span in the pipeline file's diagnostics.
                assert!(
                    text.is_char_boundary(e.offset) && !e.message.is_empty(),
                    "{text:?}: {e:?}"
                );
                false
            }
        },
    );
    assert!(ok > 0 && err > 0, "ok {ok}, refused {err}");
}

#[test]
fn damaged_stage_directives_are_refused_never_a_panic() {
    let script = "#!/bin/sh\n#SBATCH -N 1\n\
        #STAGE in  https://acct.blob.core.windows.net/genomics/samples  /lustre/run42/samples\n\
        #STAGE out /lustre/run42/results  https://acct.blob.core.windows.net/genomics/results/run42\n\
        #STAGE restore /lustre/reference\n#STAGE conflict overwrite-if-dirty\n#STAGE max_errors 0\n\
        srun ./analyse\n";
    let (ok, err) = never_panics(&[script], 6000, |text| {
        stage::slurm::directives::parse(text).is_ok()
    });
    assert!(ok > 0 && err > 0, "ok {ok}, refused {err}");
    let (ok, err) = never_panics(
        &[
            "stage: in https://a.blob.core.windows.net/c/p /l/in; out /l/out https://a.blob.core.windows.net/c/o; conflict skip",
        ],
        3000,
        |text| {
            let mut d = stage::slurm::directives::Directives::default();
            stage::slurm::directives::parse_comment(text, &mut d).is_ok()
        },
    );
    assert!(ok > 0 && err > 0, "ok {ok}, refused {err}");
}
