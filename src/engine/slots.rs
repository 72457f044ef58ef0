//! Which slots may take work: hosts that drop their connection or keep failing tasks are
//! quarantined, and their slots are not handed out again in this step.

use std::collections::{HashMap, HashSet};

/// Consecutive failed tasks after which a host is quarantined (if another host is healthy).
pub const QUARANTINE_AFTER: u32 = 3;

pub struct Slots {
    host_of: Vec<String>,
    free: Vec<usize>,
    quarantined: HashSet<String>,
    failures: HashMap<String, u32>,
}

impl Slots {
    /// `host_of[i]` is slot i's host; `unreachable` hosts start quarantined.
    pub fn new(host_of: Vec<String>, unreachable: &[String]) -> Self {
        let quarantined: HashSet<String> = unreachable.iter().cloned().collect();
        let free = (0..host_of.len())
            .rev()
            .filter(|s| !quarantined.contains(&host_of[*s]))
            .collect();
        Slots {
            host_of,
            free,
            quarantined,
            failures: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.host_of.len()
    }

    pub fn host(&self, slot: usize) -> &str {
        &self.host_of[slot]
    }

    pub fn take(&mut self) -> Option<usize> {
        self.free.pop()
    }

    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Returns a slot after its task ended; slots of quarantined hosts are retired.
    pub fn give_back(&mut self, slot: usize) {
        if !self.quarantined.contains(&self.host_of[slot]) {
            self.free.push(slot);
        }
    }

    pub fn healthy_hosts(&self) -> usize {
        self.host_of
            .iter()
            .filter(|h| !self.quarantined.contains(*h))
            .collect::<HashSet<_>>()
            .len()
    }

    pub fn succeeded(&mut self, slot: usize) {
        self.failures.remove(&self.host_of[slot]);
    }

    /// Counts a failed task; returns the host if this quarantined it.
    pub fn failed(&mut self, slot: usize) -> Option<String> {
        let host = self.host_of[slot].clone();
        // Its tasks still running when it was quarantined end later: said once.
        if self.quarantined.contains(&host) {
            return None;
        }
        let n = self.failures.entry(host.clone()).or_default();
        *n += 1;
        if *n >= QUARANTINE_AFTER && self.healthy_hosts() > 1 {
            self.quarantine(&host);
            return Some(host);
        }
        None
    }

    /// The host's connection is gone (the executor already retried): quarantine it now.
    pub fn lost(&mut self, slot: usize) -> bool {
        let host = self.host_of[slot].clone();
        if self.quarantined.contains(&host) {
            return false;
        }
        self.quarantine(&host);
        true
    }

    fn quarantine(&mut self, host: &str) {
        self.quarantined.insert(host.to_string());
        let host_of = &self.host_of;
        self.free.retain(|s| host_of[*s] != host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_retires_a_hosts_slots_but_never_the_last_host_for_task_failures() {
        let mut s = Slots::new(vec!["a".into(), "b".into(), "a".into(), "b".into()], &[]);
        let first = s.take().unwrap();
        assert_eq!(s.host(first), "a");
        for _ in 0..QUARANTINE_AFTER - 1 {
            assert_eq!(s.failed(first), None);
        }
        assert_eq!(s.failed(first), Some("a".into()));
        // Its other tasks, still running then, fail later: quarantined once, said once.
        assert_eq!(s.failed(first), None);
        assert!(!s.lost(first));
        s.give_back(first);
        let rest: Vec<usize> = std::iter::from_fn(|| s.take()).collect();
        assert!(rest.iter().all(|x| s.host(*x) == "b"), "{rest:?}");
        // b is the last healthy host: failures alone never take it out.
        for _ in 0..10 {
            assert_eq!(s.failed(rest[0]), None);
        }
        assert!(s.lost(rest[0]));
        assert_eq!(s.healthy_hosts(), 0);
    }

    #[test]
    fn unreachable_hosts_start_quarantined() {
        let mut s = Slots::new(vec!["a".into(), "b".into()], &["a".into()]);
        assert_eq!(s.take().map(|x| s.host(x).to_string()), Some("b".into()));
        assert_eq!(s.take(), None);
    }
}
