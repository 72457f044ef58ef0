//! One submitted job array on disk: what lets a resumed run find its jobs again.
//!
//! The directory is written before `sbatch` runs (the intent): `tasks` maps each array index to
//! the task's name, and `<index>.sh` is the task's wrapper. The job id is recorded after sbatch
//! answers; the job's name (`stage-TOKEN-SEQ`) finds it if the process died in between. Each
//! wrapper writes `<index>.rc` when its command ends, so exit codes come from the file system,
//! not from slurmctld, and outlive the job record's purge.

use std::path::{Path, PathBuf};

use crate::executor::TaskCommand;
use crate::spec::template::shell_quote;

pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("slurm").join("arrays")
}

pub fn job_name(token: &str, seq: u64) -> String {
    format!("stage-{token}-{seq}")
}

/// Writes the array's scripts and task list, flushed, before it is submitted.
pub fn write(dir: &Path, tasks: &[(&str, &TaskCommand)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut list = String::new();
    for (index, (name, cmd)) in tasks.iter().enumerate() {
        let rc = dir.join(format!("{index}.rc"));
        let tmp = dir.join(format!("{index}.rc.tmp"));
        let script = format!(
            "sh -c {} >{} 2>{} </dev/null\nrc=$?\nprintf '%s\\n' \"$rc\" >{tmp} && mv -f {tmp} {rc}\nexit \"$rc\"\n",
            shell_quote(&cmd.command),
            quote_path(&cmd.stdout),
            quote_path(&cmd.stderr),
            tmp = quote_path(&tmp),
            rc = quote_path(&rc),
        );
        std::fs::write(dir.join(format!("{index}.sh")), script)?;
        list.push_str(&serde_json::to_string(&(index, name)).unwrap_or_default());
        list.push('\n');
    }
    std::fs::write(
        dir.join("batch.sh"),
        format!(
            "#!/bin/sh\nexec sh {}/\"$SLURM_ARRAY_TASK_ID.sh\"\n",
            quote_path(dir)
        ),
    )?;
    crate::durable::write(&dir.join("tasks"), list.as_bytes())
}

/// Records the job id sbatch gave the array.
pub fn record_job(dir: &Path, job: &str) -> std::io::Result<()> {
    crate::durable::write(&dir.join("job"), job.as_bytes())
}

/// The exit code the task's wrapper recorded, once it has ended.
pub fn exit_code(dir: &Path, index: usize) -> Option<i32> {
    std::fs::read_to_string(dir.join(format!("{index}.rc")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The last lines Slurm itself wrote for a task (the wrapper's own errors).
pub fn slurm_output(dir: &Path, index: usize) -> String {
    let text = std::fs::read_to_string(dir.join(format!("slurm-{index}.out"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// An array found on disk, left by an earlier process.
pub struct Found {
    pub seq: u64,
    pub dir: PathBuf,
    pub job: Option<String>,
    pub tasks: Vec<String>,
}

/// Every array recorded under `root`, oldest first. Unreadable entries are skipped: at worst
/// their tasks run again.
pub fn load(root: &Path) -> Vec<Found> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<Found> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let seq: u64 = e.file_name().to_str()?.parse().ok()?;
            let dir = e.path();
            let list = std::fs::read_to_string(dir.join("tasks")).ok()?;
            let mut tasks = Vec::new();
            for line in list.lines() {
                let (index, name): (usize, String) = serde_json::from_str(line).ok()?;
                if index != tasks.len() {
                    return None;
                }
                tasks.push(name);
            }
            let job = std::fs::read_to_string(dir.join("job"))
                .ok()
                .map(|j| j.trim().to_string())
                .filter(|j| !j.is_empty());
            Some(Found {
                seq,
                dir,
                job,
                tasks,
            })
        })
        .collect();
    found.sort_by_key(|f| f.seq);
    found
}

/// The next free sequence number under `root`.
pub fn next_seq(root: &Path) -> u64 {
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .map_or(0, |m| m + 1)
        })
        .unwrap_or(0)
}

fn quote_path(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_written_is_found_again_with_its_job() {
        let root = tempfile::tempdir().unwrap();
        let cmd = TaskCommand {
            name: String::new(),
            command: "echo 'hi'".into(),
            cwd: root.path().into(),
            env: Default::default(),
            timeout: None,
            stdout: root.path().join("o"),
            stderr: root.path().join("e"),
        };
        assert_eq!(next_seq(root.path()), 0);
        let dir = root.path().join("3");
        write(&dir, &[("1/a/x\ty", &cmd), ("1/a/b", &cmd)]).unwrap();
        assert_eq!(next_seq(root.path()), 4);
        let found = load(root.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].tasks, ["1/a/x\ty", "1/a/b"]);
        assert_eq!(found[0].job, None);
        record_job(&dir, "42").unwrap();
        assert_eq!(load(root.path())[0].job.as_deref(), Some("42"));
        assert_eq!(exit_code(&dir, 1), None);
        let out = std::process::Command::new("sh")
            .arg(dir.join("1.sh"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(exit_code(&dir, 1), Some(0));
        assert_eq!(
            std::fs::read_to_string(root.path().join("o")).unwrap(),
            "hi\n"
        );
    }
}
