//! Slurm integration: stage-in from a prolog, stage-out from an epilog.

pub mod directives;
pub mod job_user;
pub mod restore;
pub mod route;
