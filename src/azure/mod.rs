//! Azure Resource Manager: wire types for AMLFS (api-version 2026-01-01).

pub mod arm;
pub mod models;
pub mod resources;
