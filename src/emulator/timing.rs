//! How long Azure takes, in Azure's own seconds, scaled by one factor: the suite runs at
//! 1/3000 and a benchmark at 1/60, and both keep Azure's proportions (an archive's minute of
//! fixed cost against its data time, a create's quarter hour against a job's minute).

use std::time::Duration;

/// Creating a file system: 10–20 minutes (Microsoft's documentation).
pub const CREATE: f64 = 900.0;
/// Deleting one.
pub const DELETE: f64 = 300.0;
/// An archive's fixed cost whatever it moves: 03:55:23 → 03:56:21 for an almost empty file
/// system in Microsoft's own recording.
pub const ARCHIVE: f64 = 58.0;
/// An import job's fixed cost (walking the container, setting up the HSM copy tool).
pub const IMPORT: f64 = 30.0;
/// And per blob it brings in (namespace only: data comes on first read).
pub const IMPORT_PER_BLOB: f64 = 0.002;
/// Growing capacity in place.
pub const EXPANSION: f64 = 1200.0;
/// From `Cancel` to `Canceled`, for an import job or an archive.
pub const CANCEL: f64 = 15.0;
/// Until a new role assignment takes effect: up to five minutes, Microsoft says.
pub const ROLE_PROPAGATION: f64 = 120.0;
/// Provisioning a VM scale set's instances.
pub const SCALE_SET: f64 = 180.0;

/// Azure seconds to move `bytes` at the file system's throughput (`mbps`, MB/s).
pub fn data(bytes: u64, mbps: f64) -> f64 {
    if mbps <= 0.0 {
        return 0.0;
    }
    bytes as f64 / (mbps * 1e6)
}

#[derive(Debug, Clone)]
pub struct Timing {
    /// Emulated seconds per Azure second.
    pub scale: f64,
    /// Added to HSM jobs before they start copying, for tests that need one to be running.
    pub hold: Hold,
}

/// `--job-delay`: how long, and for which kind of job (`import`, `archive`, `expansion`,
/// `auto-export`; all when unnamed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hold {
    pub kind: Option<String>,
    pub delay: Duration,
}

impl Hold {
    /// `2s` or `archive:60s`.
    pub fn parse(
        s: &str,
        duration: impl Fn(&str) -> Result<Duration, String>,
    ) -> Result<Hold, String> {
        const KINDS: [&str; 4] = ["import", "archive", "expansion", "auto-export"];
        match s.split_once(':') {
            Some((kind, d)) if KINDS.contains(&kind) => Ok(Hold {
                kind: Some(kind.into()),
                delay: duration(d)?,
            }),
            Some((kind, _)) => Err(format!(
                "`{kind}` is not a kind of job: {}",
                KINDS.join(", ")
            )),
            None => Ok(Hold {
                kind: None,
                delay: duration(s)?,
            }),
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            scale: 1.0 / 500.0,
            hold: Hold::default(),
        }
    }
}

impl Timing {
    /// The hold for a job of `kind`.
    pub fn hold(&self, kind: &str) -> Duration {
        match &self.hold.kind {
            Some(k) if k != kind => Duration::ZERO,
            _ => self.hold.delay,
        }
    }

    /// `azure_secs` of Azure's time, as the emulator spends it.
    pub fn of(&self, azure_secs: f64) -> Duration {
        Duration::from_secs_f64((azure_secs * self.scale).clamp(0.0, 1e9))
    }

    /// A scale given as `1/60`, `0.01` or `0` (no delays at all).
    pub fn parse_scale(s: &str) -> Result<f64, String> {
        let bad = || format!("`{s}` is not a scale like 1/60, 0.01 or 0");
        let v = match s.split_once('/') {
            Some((a, b)) => {
                let (a, b): (f64, f64) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if b == 0.0 {
                    return Err(bad());
                }
                a / b
            }
            None => s.trim().parse().map_err(|_| bad())?,
        };
        if !(0.0..=1000.0).contains(&v) {
            return Err(bad());
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_keep_azure_proportions() {
        let t = Timing {
            scale: Timing::parse_scale("1/60").unwrap(),
            hold: Hold::default(),
        };
        assert_eq!(t.of(CREATE), Duration::from_secs(15));
        assert!(t.of(ARCHIVE) < t.of(CREATE) / 10);
        // 1 GB at 500 MB/s: two Azure seconds.
        assert_eq!(t.of(data(1_000_000_000, 500.0)), t.of(2.0));
        assert_eq!(Timing::parse_scale("0").unwrap(), 0.0);
        assert!(Timing::parse_scale("1/0").is_err() && Timing::parse_scale("-1").is_err());
    }
}
