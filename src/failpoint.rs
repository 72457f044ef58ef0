//! Crash and fault points for resumption tests.
//!
//! `STAGE_CRASH_AT=NAME[:N]` makes the process SIGKILL itself the Nth time (default 1st) it
//! passes the point called NAME. Tests use it to stop a run exactly between a side effect and
//! its journal record, which a timer-driven kill hits only by luck.
//!
//! `STAGE_FAIL_AT=NAME[:N]` makes [`fails`] return true there instead: an I/O error injected
//! where a real one (a full disk under the journal) cannot be caused from a test.
//!
//! Unset, each costs one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Point {
    spec: OnceLock<Option<(String, u64)>>,
    hits: AtomicU64,
    var: &'static str,
}

static CRASH: Point = Point::new("STAGE_CRASH_AT");
static FAIL: Point = Point::new("STAGE_FAIL_AT");

impl Point {
    const fn new(var: &'static str) -> Self {
        Point {
            spec: OnceLock::new(),
            hits: AtomicU64::new(0),
            var,
        }
    }

    fn reached(&self, name: &str) -> bool {
        let spec = self.spec.get_or_init(|| {
            let v = std::env::var(self.var).ok()?;
            match v.rsplit_once(':') {
                Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1))),
                None => Some((v, 1)),
            }
        });
        matches!(spec, Some((point, at)) if point == name
            && self.hits.fetch_add(1, Ordering::SeqCst) + 1 == *at)
    }
}

/// Dies by SIGKILL here if `STAGE_CRASH_AT` names this point and hit.
pub fn hit(name: &str) {
    if CRASH.reached(name) {
        // SAFETY: plain syscalls with no memory arguments.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// True if `STAGE_FAIL_AT` names this point and hit: the caller reports an I/O error.
pub fn fails(name: &str) -> bool {
    FAIL.reached(name)
}
