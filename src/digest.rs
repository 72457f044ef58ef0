//! Hex digests and random names, shared by the journal, the movers and the executors.

use md5::{Digest, Md5};

/// Lower-case hex of bytes (how blob storage and `md5sum` show an MD5).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

/// A random number for names that must not collide (not for secrets): std's per-process
/// random hash keys, mixed with the time and the pid.
pub fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}
