//! Crash points for resumption tests.
//!
//! `STAGE_CRASH_AT=NAME[:N]` makes the process SIGKILL itself the Nth time (default 1st) it
//! passes the point called NAME. Tests use it to stop a run exactly between a side effect and
//! its journal record, which a timer-driven kill hits only by luck. Unset, it costs one load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn spec() -> &'static Option<(String, u64)> {
    SPEC.get_or_init(|| {
        let v = std::env::var("STAGE_CRASH_AT").ok()?;
        match v.rsplit_once(':') {
            Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1))),
            None => Some((v, 1)),
        }
    })
}

pub fn hit(name: &str) {
    if let Some((point, at)) = spec()
        && point == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *at
    {
        // SAFETY: plain syscalls with no memory arguments.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
