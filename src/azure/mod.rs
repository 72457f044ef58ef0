//! Azure Resource Manager: wire types for AMLFS (api-version 2026-01-01).

pub mod arm;
pub mod cloud_init;
pub mod hsm_slot;
pub mod models;
pub mod prerequisites;
pub mod resources;
pub mod roles;
pub mod vmss;

/// Plain http to this machine: an emulator or Azurite, which take test credentials.
pub fn is_loopback_http(url: &str) -> bool {
    url.starts_with("http://127.") || url.starts_with("http://localhost")
}

/// Endpoints and containers must be https, except a service on this machine.
pub fn is_allowed_endpoint(url: &str) -> bool {
    url.starts_with("https://") || is_loopback_http(url)
}
