//! Where tasks run: host lists today; VM scale sets and Slurm partitions later.

pub mod hostlist;
