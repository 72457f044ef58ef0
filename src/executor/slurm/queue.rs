//! What slurmctld says about our arrays: `squeue` for the tasks still queued or running,
//! `scontrol show job` for how one ended when its wrapper could not say.

use std::collections::{HashMap, HashSet};

use crate::executor::TaskExit;

/// Terminal job states.
const DONE: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
];

/// The `squeue -o` format [`parse_squeue`] reads.
pub const SQUEUE_FORMAT: &str = "%j|%F|%K|%T";

/// One array's entries in the queue: its job id and the indices still queued or running.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Queued {
    pub job: String,
    pub live: HashSet<usize>,
}

/// `squeue -h -r -o '%j|%F|%K|%T'` by job name. Finished tasks are not listed.
pub fn parse_squeue(out: &str) -> HashMap<String, Queued> {
    let mut by_name: HashMap<String, Queued> = HashMap::new();
    for line in out.lines() {
        let mut parts = line.trim().splitn(4, '|');
        let (Some(name), Some(job), Some(indices), Some(state)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let entry = by_name.entry(name.to_string()).or_default();
        entry.job = job.to_string();
        if !DONE.contains(&state) {
            entry.live.extend(indices_of(indices));
        }
    }
    by_name
}

/// Array indices in Slurm's notation: `7`, `0-3,9`, `[4-999%2]`.
pub fn indices_of(spec: &str) -> Vec<usize> {
    let spec = spec.trim_matches(['[', ']']);
    let spec = spec.split('%').next().unwrap_or_default();
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b.min(a + 1_000_000));
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// How each ended task of an array ended, from `scontrol show job -o ARRAY_JOB_ID`.
pub fn parse_ended(out: &str) -> HashMap<usize, TaskExit> {
    let mut ended = HashMap::new();
    for record in out.lines() {
        let state = field(record, "JobState").unwrap_or_default();
        if !DONE.contains(&state) {
            continue;
        }
        let Some(index) = field(record, "ArrayTaskId").and_then(|i| i.parse().ok()) else {
            continue;
        };
        ended.insert(index, exit_of(state, field(record, "ExitCode")));
    }
    ended
}

/// A task's exit from its final state and `ExitCode=code:signal`.
pub fn exit_of(state: &str, exit_code: Option<&str>) -> TaskExit {
    let (code, signal) = exit_code
        .and_then(|e| e.split_once(':'))
        .map(|(c, s)| (c.parse().ok(), s.parse().ok().filter(|s: &i32| *s != 0)))
        .unwrap_or((None, None));
    match state {
        // Only COMPLETED is success: a cancelled or failed job may report exit code 0.
        "COMPLETED" => TaskExit {
            code: Some(0),
            signal: None,
            timed_out: false,
        },
        "TIMEOUT" => TaskExit {
            code: None,
            signal: None,
            timed_out: true,
        },
        "CANCELLED" => TaskExit {
            code: None,
            signal: signal.or(Some(libc::SIGTERM)),
            timed_out: false,
        },
        _ => TaskExit {
            code: code.filter(|c| *c != 0),
            signal,
            timed_out: false,
        },
    }
}

pub fn field<'a>(record: &'a str, key: &str) -> Option<&'a str> {
    record
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_in_slurm_notation() {
        assert_eq!(indices_of("7"), [7]);
        assert_eq!(indices_of("0-3,9"), [0, 1, 2, 3, 9]);
        assert_eq!(indices_of("[4-6%2]"), [4, 5, 6]);
        assert!(indices_of("N/A").is_empty());
    }

    #[test]
    fn squeue_lists_live_indices_by_job_name() {
        let out = "stage-t-0|120|3|RUNNING\nstage-t-0|120|[4-6%2]|PENDING\nstage-t-1|130|0|COMPLETING\nstage-t-1|130|1|CANCELLED\n";
        let q = parse_squeue(out);
        assert_eq!(q["stage-t-0"].job, "120");
        let mut live: Vec<_> = q["stage-t-0"].live.iter().copied().collect();
        live.sort();
        assert_eq!(live, [3, 4, 5, 6]);
        assert_eq!(q["stage-t-1"].live, HashSet::from([0]));
    }

    #[test]
    fn ended_tasks_from_job_records() {
        let out = "JobId=121 ArrayJobId=120 ArrayTaskId=1 JobState=CANCELLED Reason=None ExitCode=0:15\n\
JobId=122 ArrayJobId=120 ArrayTaskId=2 JobState=FAILED ExitCode=3:0\n\
JobId=123 ArrayJobId=120 ArrayTaskId=3 JobState=TIMEOUT ExitCode=0:0\n\
JobId=120 ArrayJobId=120 ArrayTaskId=4-9%2 JobState=PENDING ExitCode=0:0\n";
        let ended = parse_ended(out);
        assert_eq!(ended.len(), 3);
        assert_eq!(ended[&1].signal, Some(15));
        assert_eq!(ended[&2].code, Some(3));
        assert!(ended[&3].timed_out);
        assert!(!ended[&1].success() && !ended[&2].success());
    }
}
