//! One line for a transfer in progress, shared by the pipeline bars and the one-shot commands.

use std::time::Duration;

use indicatif::HumanBytes;

use crate::mover::Tally;

/// `verb 120/2000 files, 7.50 MiB/125.00 MiB, 30.00 MiB/s, eta 4s`: short enough for 80
/// columns. Until the listing
/// is read to its end the totals are lower bounds (`2000+`) and there is no ETA: a guess from a
/// partial total would only ever grow.
pub fn line(verb: &str, t: &Tally, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let more = if t.listed { "" } else { "+" };
    let mut s = format!("{verb} {}", t.files);
    if t.found_files > 0 {
        s += &format!("/{}{more}", t.found_files);
    }
    s += " files";
    if t.bytes == 0 && t.found_bytes == 0 {
        // No sizes known (an AMLFS job reports counts only) or only empty files: "0 B, 0 B/s"
        // would read as a stall.
        s += &format!(", {:.0} files/s", t.files as f64 / secs);
    } else {
        s += &format!(", {}", HumanBytes(t.bytes));
        if t.found_files > 0 {
            s += &format!("/{}{more}", HumanBytes(t.found_bytes));
        }
        s += &format!(", {}/s", HumanBytes((t.bytes as f64 / secs) as u64));
    }
    if let Some(eta) = eta(t, secs) {
        s += &format!(", eta {}", short(eta));
    }
    s
}

/// A spinner whose message is cut at the terminal's width instead of wrapping (a wrapped
/// line is redrawn one row lower on every tick).
pub fn spinner() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {wide_msg}") {
        bar.set_style(style);
    }
    bar
}

/// Time left at the rate so far: by bytes when there are any, else by files.
fn eta(t: &Tally, secs: f64) -> Option<Duration> {
    if !t.listed {
        return None;
    }
    let (done, total) = match t.found_bytes {
        0 => (t.files, t.found_files),
        _ => (t.bytes, t.found_bytes),
    };
    if done == 0 {
        return None;
    }
    let left = total.saturating_sub(done) as f64 * secs / done as f64;
    Some(Duration::from_secs_f64(left.min(1e9)))
}

/// `4s`, `1m05s`, `2h03m`.
pub fn short(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(files: u64, bytes: u64, found: (u64, u64), listed: bool) -> Tally {
        Tally {
            files,
            bytes,
            found_files: found.0,
            found_bytes: found.1,
            listed,
        }
    }

    #[test]
    fn totals_and_eta_once_listed() {
        let t = tally(50, 50 << 20, (200, 200 << 20), true);
        assert_eq!(
            line("imported", &t, Duration::from_secs(10)),
            "imported 50/200 files, 50.00 MiB/200.00 MiB, 5.00 MiB/s, eta 30s"
        );
    }

    #[test]
    fn lower_bounds_and_no_eta_while_listing() {
        let t = tally(50, 1000, (200, 4000), false);
        let s = line("exported", &t, Duration::from_secs(1));
        assert_eq!(s, "exported 50/200+ files, 1000 B/3.91 KiB+, 1000 B/s");
    }

    #[test]
    fn eta_by_files_when_there_are_no_bytes() {
        let t = tally(10, 0, (40, 0), true);
        assert_eq!(
            line("imported", &t, Duration::from_secs(5)),
            "imported 10/40 files, 2 files/s, eta 15s"
        );
        let t = tally(120, 0, (0, 0), false);
        assert_eq!(
            line("import:", &t, Duration::from_secs(60)),
            "import: 120 files, 2 files/s"
        );
        let t = tally(0, 0, (40, 0), true);
        assert!(!line("imported", &t, Duration::from_secs(1)).contains("eta"));
    }

    #[test]
    fn nothing_found_shows_counts_alone() {
        let t = tally(3, 3, (0, 0), false);
        assert_eq!(
            line("imported", &t, Duration::from_secs(1)),
            "imported 3 files, 3 B, 3 B/s"
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(short(Duration::from_secs(4)), "4s");
        assert_eq!(short(Duration::from_secs(65)), "1m05s");
        assert_eq!(short(Duration::from_secs(7380)), "2h03m");
    }
}
