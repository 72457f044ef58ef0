//! Exit codes: stable, documented in the README, for cron and Slurm scripts to branch on.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The pipeline finished, or there was nothing to do.
    Success = 0,
    /// A step or task failed; `stage run` again resumes.
    Failed = 1,
    /// The pipeline file or the command line is invalid.
    Invalid = 2,
    /// Another stage process holds the state directory.
    Locked = 3,
    /// The journal could not be read or written.
    State = 4,
    /// A bug or an unexpected environment problem.
    Internal = 5,
    /// Stopped by SIGINT or SIGTERM; `stage run` again resumes.
    Interrupted = 130,
}
