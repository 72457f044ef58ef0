//! stage: one pipeline file for the import → process → export lifecycle of HPC data on
//! Azure Managed Lustre, resumable from its sled journal.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so that tests and benchmarks
//! drive the same code.

pub mod azure;
pub mod beneath;
pub mod cli;
pub mod clock;
pub mod digest;
pub mod durable;
pub mod emulator;
pub mod engine;
pub mod executor;
pub mod exit;
pub mod failpoint;
pub mod filesystem;
pub mod journal;
pub mod mover;
pub mod pool;
pub mod report;
pub mod slurm;
pub mod spec;
pub mod store;
pub mod target;
