//! `#STAGE` lines in a batch script: what a job needs staged in before it starts and out after
//! it ends. Read like `#SBATCH`: only in the comment block before the first command.
//!
//! ```text
//! #STAGE in  https://acct.blob.core.windows.net/genomics/samples  /lustre/run42/samples
//! #STAGE out /lustre/run42/results  https://acct.blob.core.windows.net/genomics/results
//! #STAGE conflict overwrite-if-dirty
//! #STAGE max_errors 0
//! #STAGE restore /lustre/reference
//! #STAGE allow_empty
//! ```
//!
//! An `in` source with no blobs at all fails the prolog (a mistyped prefix would otherwise
//! start the job without its inputs), unless `allow_empty` says the job can run without.
//!
//! `restore` brings the data of files already on the file system back from the HSM backend
//! (see [`super::restore`]).
//!
//! The same directives may come from the job's comment, for jobs without a script of their own
//! (`srun`, a workflow tool's generated scripts): `sbatch --comment "stage: in URL DIR; out DIR
//! URL; conflict skip"`. A comment that does not start with `stage:` is someone else's and is
//! ignored.

use std::path::PathBuf;

use crate::spec::ConflictMode;

#[derive(Debug, Clone, PartialEq)]
pub struct Directives {
    /// (container URL with prefix, directory)
    pub stage_in: Vec<(String, PathBuf)>,
    /// (directory, container URL with prefix)
    pub stage_out: Vec<(PathBuf, String)>,
    /// Paths whose files' data must be on the file system before the job starts.
    pub restore: Vec<PathBuf>,
    pub conflict: ConflictMode,
    pub max_errors: i64,
    /// `#STAGE allow_empty`: an `in` source with no blobs is not an error.
    pub allow_empty: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{place}: {message}")]
pub struct DirectiveError {
    /// `batch script line 3`, `job comment, directive 2`.
    pub place: String,
    pub message: String,
}

impl Directives {
    pub fn is_empty(&self) -> bool {
        self.stage_in.is_empty() && self.stage_out.is_empty() && self.restore.is_empty()
    }
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            stage_in: Vec::new(),
            stage_out: Vec::new(),
            restore: Vec::new(),
            conflict: ConflictMode::Fail,
            max_errors: 0,
            allow_empty: false,
        }
    }
}

/// Parses the directives; every problem is an error, so a typo never silently skips staging.
pub fn parse(script: &str) -> Result<Directives, DirectiveError> {
    let mut d = Directives::default();
    for (i, raw) in script.lines().enumerate() {
        let line = raw.trim();
        if i == 0 && line.starts_with("#!") {
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            break;
        }
        let Some(rest) = line.strip_prefix("#STAGE") else {
            continue;
        };
        apply(&mut d, rest, &format!("batch script line {}", i + 1))?;
    }
    Ok(d)
}

/// Adds the directives of a job comment (`stage: in URL DIR; out DIR URL; ...`) to `d`.
pub fn parse_comment(comment: &str, d: &mut Directives) -> Result<(), DirectiveError> {
    let Some(rest) = comment.trim().strip_prefix("stage:") else {
        return Ok(());
    };
    for (i, part) in rest.split(';').enumerate() {
        if !part.trim().is_empty() {
            apply(d, part, &format!("job comment, directive {}", i + 1))?;
        }
    }
    Ok(())
}

/// One directive (the words after `#STAGE`).
fn apply(d: &mut Directives, rest: &str, place: &str) -> Result<(), DirectiveError> {
    let line = rest.trim();
    let err = |message: String| DirectiveError {
        place: place.to_string(),
        message,
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let absolute = |p: &str| -> Result<PathBuf, DirectiveError> {
        let path = PathBuf::from(p);
        if !path.is_absolute() || p.split('/').any(|c| c == "..") {
            return Err(err(format!("`{p}` must be an absolute path without `..`")));
        }
        Ok(path)
    };
    let url = |u: &str| -> Result<String, DirectiveError> {
        if !crate::store::is_url(u) {
            return Err(err(format!("`{u}` is not a container URL")));
        }
        crate::store::azure::Location::parse(u).map_err(|e| err(format!("{u}: {e}")))?;
        Ok(u.to_string())
    };
    match words.as_slice() {
        ["in", from, to] => d.stage_in.push((url(from)?, absolute(to)?)),
        ["out", from, to] => d.stage_out.push((absolute(from)?, url(to)?)),
        ["restore", path] => d.restore.push(absolute(path)?),
        ["allow_empty"] => d.allow_empty = true,
        ["conflict", mode] => {
            d.conflict = ConflictMode::from_name(mode).ok_or_else(|| {
                err(format!(
                    "`{mode}` is not a conflict mode ({})",
                    ConflictMode::NAMES.join(", ")
                ))
            })?
        }
        ["max_errors", n] => {
            d.max_errors = n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= -1)
                .ok_or_else(|| err(format!("`{n}` is not -1 or a count")))?
        }
        _ => {
            return Err(err(format!(
                "cannot read `{line}`: expected `in URL DIR`, `out DIR URL`, `restore PATH`, `conflict MODE`, `max_errors N` or `allow_empty`"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_in_the_leading_comment_block() {
        let d = parse(
            "#!/bin/bash\n#SBATCH -N1\n#STAGE in http://127.0.0.1:1/devstoreaccount1/data/in /scratch/in\n\n#STAGE out /scratch/out https://a.blob.core.windows.net/res/run1\n#STAGE conflict skip\n#STAGE max_errors -1\n#STAGE restore /lustre/ref\necho hi\n#STAGE in http://x/y/z /late\n",
        )
        .unwrap();
        assert_eq!(d.stage_in.len(), 1);
        assert_eq!(d.stage_out[0].0, PathBuf::from("/scratch/out"));
        assert_eq!(d.conflict, ConflictMode::Skip);
        assert_eq!(d.max_errors, -1);
        assert_eq!(d.restore, vec![PathBuf::from("/lustre/ref")]);
        assert!(parse("#!/bin/sh\necho no directives\n").unwrap().is_empty());
    }

    #[test]
    fn mistakes_are_errors_with_their_line() {
        let e =
            parse("#!/bin/sh\n#STAGE in http://127.0.0.1:1/acct/data relative/dir\n").unwrap_err();
        assert_eq!(e.place, "batch script line 2");
        assert!(parse("#STAGE inn a b\n").is_err());
        assert!(parse("#STAGE in http://127.0.0.1:1/acct/data /a/../etc\n").is_err());
        assert!(parse("#STAGE conflict sometimes\n").is_err());
    }

    #[test]
    fn directives_from_the_job_comment() {
        let mut d = parse("#!/bin/sh\n#STAGE conflict skip\n").unwrap();
        parse_comment(
            "stage: in http://127.0.0.1:1/devstoreaccount1/data/in /scratch/in ; out /scratch/out http://127.0.0.1:1/devstoreaccount1/data/out;",
            &mut d,
        )
        .unwrap();
        assert_eq!(d.stage_in[0].1, PathBuf::from("/scratch/in"));
        assert_eq!(d.stage_out.len(), 1);
        assert_eq!(d.conflict, ConflictMode::Skip);
        // Someone else's comment.
        let mut d = Directives::default();
        parse_comment("priority run for lab B", &mut d).unwrap();
        assert!(d.is_empty());
        let e = parse_comment("stage: in /a; outt x y", &mut d).unwrap_err();
        assert_eq!(e.place, "job comment, directive 1");
        let e = parse_comment("stage: conflict skip; outt x y", &mut d).unwrap_err();
        assert_eq!(e.place, "job comment, directive 2");
    }
}
