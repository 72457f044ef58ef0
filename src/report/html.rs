//! A run as one self-contained HTML page: steps on a timeline, each process step's tasks laid
//! out per host, the slowest tasks, and every failure with the tail of its stderr.
//!
//! Built from the journal, not from events: a run that resumed across several processes (a
//! crash, a cron retry) is one report, and a report can be made for any recorded run later.
//! Everything shown comes from file and task names a user or a blob container chose, so every
//! string is escaped; the page loads nothing from anywhere (no scripts, no fonts, no CDN).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::journal::{RunRecord, StepRecord, TaskRecord, TaskState};
use crate::report::human_ms;

/// Bars drawn per step (after joining back-to-back tasks): a page no browser opens helps
/// nobody. The tables and figures still count every task.
const MAX_BARS: usize = 5_000;
/// Rows in the "slowest tasks" table.
const SLOWEST: usize = 10;
/// Width of the drawing area of a timeline, in SVG units; labels sit left of it.
const WIDTH: f64 = 900.0;
const LABEL: f64 = 160.0;
/// Room above the first row for its label, which is taller than a task lane.
const TOP: f64 = 4.0;
/// Failures listed in full (stderr and all); the first few are shown open.
const MAX_FAILURES: usize = 200;
const OPEN_FAILURES: usize = 10;

/// One step of the run, as the journal has it.
pub struct StepView {
    pub step: StepRecord,
    pub tasks: Vec<TaskRecord>,
    /// The last lines of each failed task's stderr, by task key.
    pub stderr_tails: BTreeMap<String, String>,
}

pub struct RunView {
    pub run: RunRecord,
    pub steps: Vec<StepView>,
    /// Pipeline file as the user named it, for the `stage logs` hints.
    pub file: String,
    /// Stands in for the end of a run that has none recorded (it died, or is still going).
    pub now_ms: u64,
}

/// Where `stage report` writes a run's page unless told otherwise; pruning a run removes it.
pub fn default_path(state_dir: &std::path::Path, pipeline: &str, run: u64) -> std::path::PathBuf {
    state_dir
        .join("reports")
        .join(format!("{pipeline}-run-{run}.html"))
}

/// `<`, `>`, `&` and both quotes as entities: safe in text and in quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn state_name<T: std::fmt::Debug>(s: T) -> String {
    format!("{s:?}").to_lowercase()
}

fn time(ms: u64) -> String {
    crate::clock::readable(ms / 1000)
}

fn took(start: Option<u64>, end: Option<u64>) -> Option<u64> {
    Some(end?.saturating_sub(start?))
}

/// The page. Writing to a `String` cannot fail, hence the ignored `fmt::Result`s.
pub fn render(v: &RunView) -> String {
    let run = &v.run;
    let end = run.finished_ms.unwrap_or(v.now_ms).max(run.started_ms);
    let status = state_name(run.status);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{name} run {id}: {status}</title><style>{STYLE}</style></head><body>\n\
         <h1>{name} run {id}: <span class=\"{status}\">{status}</span></h1>\n\
         <p class=\"meta\">{file} · started {start} · {fin} · took {took}</p>\n",
        name = escape(&run.pipeline),
        id = run.id,
        file = escape(&v.file),
        start = time(run.started_ms),
        fin = match run.finished_ms {
            Some(f) => format!("finished {}", time(f)),
            None => "not finished".into(),
        },
        took = human_ms(end - run.started_ms),
    );
    if let Some(e) = &run.error {
        let _ = writeln!(h, "<pre class=\"error\">{}</pre>", escape(e));
    }
    if v.steps.is_empty() && run.fingerprint.is_some() {
        let _ = writeln!(h, "<p>{}</p>", escape(crate::engine::unchanged::STATUS));
    }
    steps_table(&mut h, v);
    let rows: Vec<Bar> = v
        .steps
        .iter()
        .map(|s| Bar {
            lane: s.step.name.clone(),
            start: s.step.started_ms,
            end: s.step.finished_ms.unwrap_or(end),
            class: state_name(s.step.state),
            title: format!(
                "{} {}: {}",
                s.step.kind,
                s.step.name,
                human_ms(s.step.finished_ms.unwrap_or(end) - s.step.started_ms)
            ),
        })
        .collect();
    timeline(&mut h, &rows, run.started_ms, end, 18.0);
    for s in v.steps.iter().filter(|s| !s.tasks.is_empty()) {
        tasks_section(&mut h, v, s);
    }
    h.push_str("</body></html>\n");
    h
}

fn steps_table(h: &mut String, v: &RunView) {
    if v.steps.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Steps</h2>\n<table><tr><th>step</th><th>kind</th><th>state</th><th>started</th>\
         <th>took</th><th>tasks</th><th>summary</th></tr>\n",
    );
    for s in &v.steps {
        let st = &s.step;
        let state = state_name(st.state);
        let name = escape(&st.name);
        let name = if s.tasks.is_empty() {
            name
        } else {
            format!("<a href=\"#step-{}\">{name}</a>", anchor(&st.name))
        };
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td>{}</td><td class=\"{state}\">{state}</td><td>{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&st.kind),
            time(st.started_ms),
            took(Some(st.started_ms), st.finished_ms).map_or("-".into(), human_ms),
            escape(&counts(&s.tasks)),
            summary(&st.summary),
        );
    }
    h.push_str("</table>\n");
}

/// `4 succeeded, 1 failed`: every state present, in a fixed order.
fn counts(tasks: &[TaskRecord]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        *by.entry(state_name(t.state)).or_default() += 1;
    }
    by.iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A step's summary object as `key: value` pairs; lists show their length and first items.
fn summary(v: &serde_json::Value) -> String {
    let Some(map) = v.as_object() else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (k, v) in map {
        let text = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) if items.is_empty() => continue,
            serde_json::Value::Array(items) => {
                let shown: Vec<String> = items
                    .iter()
                    .take(10)
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect();
                let more = if items.len() > 10 { ", …" } else { "" };
                format!("{} ({}{more})", items.len(), shown.join(", "))
            }
            other => other.to_string(),
        };
        parts.push(format!("{}: {}", escape(k), escape(&text)));
    }
    parts.join(" · ")
}

/// An `id` for a step heading: step names are already `[A-Za-z0-9_-]`, but the page must not
/// trust that.
fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn tasks_section(h: &mut String, v: &RunView, s: &StepView) {
    let st = &s.step;
    let _ = writeln!(
        h,
        "<h2 id=\"step-{}\">{} <span class=\"kind\">{}</span></h2>\n<p>{} tasks: {}</p>",
        anchor(&st.name),
        escape(&st.name),
        escape(&st.kind),
        s.tasks.len(),
        escape(&counts(&s.tasks))
    );
    let mut durations: Vec<u64> = s
        .tasks
        .iter()
        .filter_map(|t| took(t.started_ms, t.finished_ms))
        .collect();
    durations.sort_unstable();
    if !durations.is_empty() {
        let q = |p: f64| durations[((durations.len() - 1) as f64 * p).round() as usize];
        let _ = writeln!(
            h,
            "<p>task time: min {} · median {} · p95 {} · max {}</p>",
            human_ms(q(0.0)),
            human_ms(q(0.5)),
            human_ms(q(0.95)),
            human_ms(q(1.0))
        );
    }
    let end = st.finished_ms.unwrap_or(v.now_ms).max(st.started_ms);
    // A resumed step's record may start after tasks an earlier process ran.
    let start = s
        .tasks
        .iter()
        .filter_map(|t| t.started_ms)
        .fold(st.started_ms, u64::min);
    let end = s
        .tasks
        .iter()
        .filter_map(|t| t.finished_ms)
        .fold(end, u64::max);
    // Half a unit of the drawing: closer than that, two bars would touch anyway.
    let slack = (end - start) / (2.0 * WIDTH) as u64;
    let mut bars = task_bars(&s.tasks, end, slack);
    if bars.len() > MAX_BARS {
        bars.sort_by_key(|b| b.start);
        bars.truncate(MAX_BARS);
        let _ = writeln!(
            h,
            "<p class=\"meta\">the first {MAX_BARS} bars are drawn</p>"
        );
    }
    timeline(h, &bars, start, end, 8.0);
    hosts_table(h, &s.tasks, end);
    slowest_table(h, &s.tasks);
    failures(h, v, s);
}

/// Tasks as bars, packed per host into as few lanes as their overlaps need (the slots that
/// ran them): a greedy interval partition in start order. Then, per lane, tasks of one state
/// that follow each other within `slack` ms are drawn as one bar: a thousand back-to-back
/// tasks are one stretch of green at any zoom a page can show, and the page stays small.
fn task_bars(tasks: &[TaskRecord], end: u64, slack: u64) -> Vec<Bar> {
    let mut started: Vec<&TaskRecord> = tasks.iter().filter(|t| t.started_ms.is_some()).collect();
    started.sort_by_key(|t| t.started_ms);
    // Per host, the end time of each lane so far.
    let mut lanes: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    // Per lane, its runs of back-to-back tasks.
    struct Stretch<'t> {
        start: u64,
        end: u64,
        first: &'t TaskRecord,
        count: usize,
    }
    let mut runs: BTreeMap<(&str, usize), Vec<Stretch>> = BTreeMap::new();
    for t in started {
        let host = t.host.as_deref().unwrap_or("-");
        let start = t.started_ms.unwrap_or(end);
        let stop = t.finished_ms.unwrap_or(end).max(start);
        let ends = lanes.entry(host).or_default();
        let lane = match ends.iter().position(|&e| e <= start) {
            Some(i) => {
                ends[i] = stop;
                i
            }
            None => {
                ends.push(stop);
                ends.len() - 1
            }
        };
        let row = runs.entry((host, lane)).or_default();
        match row.last_mut() {
            Some(last) if last.first.state == t.state && start <= last.end + slack => {
                last.end = last.end.max(stop);
                last.count += 1;
            }
            _ => row.push(Stretch {
                start,
                end: stop,
                first: t,
                count: 1,
            }),
        }
    }
    let mut bars = Vec::new();
    for ((host, lane), row) in runs {
        for Stretch {
            start,
            end: stop,
            first: t,
            count: n,
        } in row
        {
            let state = t.state;
            let title = if n == 1 {
                let exit = match (t.exit_code, t.signal) {
                    (Some(c), _) => format!(", exit {c}"),
                    (None, Some(s)) => format!(", signal {s}"),
                    _ => String::new(),
                };
                format!(
                    "{} on {host}: {}, {}{exit}, attempt {}",
                    t.key,
                    state_name(state),
                    human_ms(stop - start),
                    t.attempts
                )
            } else {
                format!(
                    "{n} tasks {} on {host} in {}, from {}",
                    state_name(state),
                    human_ms(stop - start),
                    t.key
                )
            };
            bars.push(Bar {
                lane: format!("{host}\u{0}{lane:06}"),
                start,
                end: stop,
                class: state_name(state),
                title,
            });
        }
    }
    bars
}

struct Bar {
    /// Row key; rows are drawn in key order. The part before a NUL is the row's label, shown
    /// once for the rows that share it.
    lane: String,
    start: u64,
    end: u64,
    class: String,
    title: String,
}

/// An SVG of bars on one time axis from `t0` to `t1`, one row per distinct lane.
fn timeline(h: &mut String, bars: &[Bar], t0: u64, t1: u64, row: f64) {
    if bars.is_empty() {
        return;
    }
    let mut rows: Vec<&str> = bars.iter().map(|b| b.lane.as_str()).collect();
    // Steps keep their order; task lanes sort by host, then lane number.
    if rows.iter().any(|r| r.contains('\u{0}')) {
        rows.sort_unstable();
    }
    rows.dedup();
    let index: BTreeMap<&str, usize> = rows.iter().enumerate().map(|(i, r)| (*r, i)).collect();
    let span = t1.saturating_sub(t0).max(1) as f64;
    let x = |t: u64| LABEL + t.saturating_sub(t0) as f64 / span * WIDTH;
    let height = TOP + rows.len() as f64 * row + 20.0;
    let _ = writeln!(
        h,
        "<svg class=\"timeline\" viewBox=\"0 0 {w} {height}\" width=\"{w}\" height=\"{height}\" \
         role=\"img\">",
        w = LABEL + WIDTH + 10.0
    );
    let mut last_label = None;
    for (i, r) in rows.iter().enumerate() {
        let label = r.split('\u{0}').next().unwrap_or(r);
        if last_label != Some(label) {
            let _ = writeln!(
                h,
                "<text x=\"{}\" y=\"{}\" class=\"label\">{}</text>",
                LABEL - 6.0,
                TOP + i as f64 * row + row.max(11.0) * 0.8,
                escape(label)
            );
            last_label = Some(label);
        }
    }
    for b in bars {
        let y = TOP + index[b.lane.as_str()] as f64 * row;
        let w = (x(b.end) - x(b.start)).max(1.5);
        let _ = writeln!(
            h,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" class=\"{}\">\
             <title>{}</title></rect>",
            x(b.start),
            y + 1.0,
            row - 2.0,
            escape(&b.class),
            escape(&b.title)
        );
    }
    let axis = TOP + rows.len() as f64 * row + 14.0;
    let _ = writeln!(
        h,
        "<text x=\"{LABEL}\" y=\"{axis}\" class=\"axis\">0s</text>\
         <text x=\"{}\" y=\"{axis}\" class=\"axis end\">{}</text></svg>",
        LABEL + WIDTH,
        human_ms(t1.saturating_sub(t0))
    );
}

/// Per host: tasks run, failures, and time busy (summed over its slots).
fn hosts_table(h: &mut String, tasks: &[TaskRecord], end: u64) {
    #[derive(Default)]
    struct Load {
        tasks: usize,
        failed: usize,
        busy: u64,
    }
    let mut hosts: BTreeMap<&str, Load> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.started_ms.is_some()) {
        let l = hosts.entry(t.host.as_deref().unwrap_or("-")).or_default();
        l.tasks += 1;
        l.failed += usize::from(t.state == TaskState::Failed);
        l.busy += took(t.started_ms, Some(t.finished_ms.unwrap_or(end))).unwrap_or(0);
    }
    if hosts.is_empty() {
        return;
    }
    h.push_str(
        "<h3>Hosts</h3>\n<table><tr><th>host</th><th>tasks</th><th>failed</th><th>busy</th></tr>\n",
    );
    for (host, l) in hosts {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(host),
            l.tasks,
            l.failed,
            human_ms(l.busy)
        );
    }
    h.push_str("</table>\n");
}

fn slowest_table(h: &mut String, tasks: &[TaskRecord]) {
    let mut timed: Vec<(u64, &TaskRecord)> = tasks
        .iter()
        .filter_map(|t| Some((took(t.started_ms, t.finished_ms)?, t)))
        .collect();
    if timed.len() < 2 {
        return;
    }
    timed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
    h.push_str(
        "<h3>Slowest tasks</h3>\n<table><tr><th>task</th><th>host</th><th>took</th>\
         <th>state</th><th>attempts</th></tr>\n",
    );
    for (ms, t) in timed.into_iter().take(SLOWEST) {
        let state = state_name(t.state);
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"{state}\">{state}</td>\
             <td class=\"num\">{}</td></tr>",
            escape(&t.key),
            escape(t.host.as_deref().unwrap_or("-")),
            human_ms(ms),
            t.attempts
        );
    }
    h.push_str("</table>\n");
}

fn failures(h: &mut String, v: &RunView, s: &StepView) {
    let failed: Vec<&TaskRecord> = s
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::Failed)
        .collect();
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(h, "<h3>Failed tasks ({})</h3>", failed.len());
    for (i, t) in failed.iter().take(MAX_FAILURES).enumerate() {
        let exit = match (t.exit_code, t.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "no exit status".into(),
        };
        let _ = writeln!(
            h,
            "<details class=\"failure\"{}><summary><b>{}</b> on {} · {exit} · {} attempt(s) · {}\
             </summary>",
            if i < OPEN_FAILURES { " open" } else { "" },
            escape(&t.key),
            escape(t.host.as_deref().unwrap_or("-")),
            t.attempts,
            escape(t.error.as_deref().unwrap_or("")),
        );
        if let Some(tail) = s.stderr_tails.get(&t.key) {
            let _ = writeln!(h, "<pre>{}</pre>", escape(tail));
        }
        let _ = writeln!(
            h,
            "<p class=\"meta\">whole log: <code>stage logs {} {} --stderr</code></p></details>",
            escape(&crate::spec::template::shell_quote(&v.file)),
            escape(&crate::spec::template::shell_quote(&format!(
                "{}/{}",
                s.step.name, t.key
            ))),
        );
    }
    if failed.len() > MAX_FAILURES {
        let _ = writeln!(
            h,
            "<p class=\"meta\">and {} more: <code>stage status {} --tasks</code></p>",
            failed.len() - MAX_FAILURES,
            escape(&crate::spec::template::shell_quote(&v.file)),
        );
    }
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\
h1 span,td.succeeded,td.done{font-weight:600}\
.succeeded,.done{color:#1a7f37}.failed,.error{color:#cf222e}.running,.interrupted{color:#9a6700}\
.meta,.kind{color:#666;font-weight:normal}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 10px;border-bottom:1px solid #ddd;\
text-align:left;vertical-align:top;white-space:nowrap}td:last-child{white-space:normal}td.num{text-align:right;font-variant-numeric:tabular-nums}\
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;max-height:24em}\
pre.error{color:#cf222e}\
svg.timeline{display:block;margin:.5em 0}svg text{font-size:11px;fill:#444}\
svg .label{text-anchor:end}svg .axis.end{text-anchor:end}\
rect{fill:#8c959f}rect.succeeded,rect.done{fill:#2da44e}rect.failed{fill:#cf222e}\
rect.running,rect.dispatched,rect.interrupted{fill:#d4a72c}\
details.failure{margin:.3em 0}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{RunStatus, StepState};

    fn task(key: &str, host: &str, start: u64, end: u64, state: TaskState) -> TaskRecord {
        TaskRecord {
            key: key.into(),
            state,
            attempts: 1,
            host: Some(host.into()),
            exit_code: Some(if state == TaskState::Failed { 3 } else { 0 }),
            signal: None,
            started_ms: Some(start),
            finished_ms: Some(end),
            error: (state == TaskState::Failed).then(|| "exit status 3".into()),
        }
    }

    fn view(tasks: Vec<TaskRecord>, tails: BTreeMap<String, String>) -> RunView {
        RunView {
            run: RunRecord {
                id: 7,
                pipeline: "demo".into(),
                file: "p.yaml".into(),
                status: RunStatus::Failed,
                started_ms: 1_000,
                finished_ms: Some(11_000),
                did_work: true,
                error: Some("step work: 1 task failed".into()),
                fingerprint: None,
            },
            steps: vec![StepView {
                step: StepRecord {
                    name: "work".into(),
                    kind: "process".into(),
                    state: StepState::Failed,
                    definition: String::new(),
                    started_ms: 1_000,
                    finished_ms: Some(11_000),
                    summary: serde_json::json!({"ran": 3, "errors": ["a", "b"], "conflict": null}),
                },
                tasks,
                stderr_tails: tails,
            }],
            file: "pipelines/p.yaml".into(),
            now_ms: 20_000,
        }
    }

    #[test]
    fn names_from_files_are_escaped_everywhere() {
        let hostile = "<script>alert('x')</script>&\".fq";
        let tails = BTreeMap::from([(hostile.to_string(), "</pre><img src=x>".to_string())]);
        let page = render(&view(
            vec![task(
                hostile,
                "<b>node</b>",
                1_000,
                2_000,
                TaskState::Failed,
            )],
            tails,
        ));
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<b>node"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;.fq"));
        assert!(page.contains("&lt;/pre&gt;&lt;img src=x&gt;"));
    }

    #[test]
    fn overlapping_tasks_on_a_host_take_separate_lanes_and_reuse_freed_ones() {
        let tasks = vec![
            task("a", "n1", 0, 10, TaskState::Succeeded),
            task("b", "n1", 5, 15, TaskState::Succeeded),
            task("c", "n1", 12, 20, TaskState::Succeeded),
            task("d", "n2", 0, 30, TaskState::Succeeded),
        ];
        let bars = task_bars(&tasks, 30, 0);
        let lanes: Vec<(&str, u64)> = bars.iter().map(|b| (b.lane.as_str(), b.start)).collect();
        assert_eq!(
            lanes,
            [
                ("n1\u{0}000000", 0),
                ("n1\u{0}000000", 12),
                ("n1\u{0}000001", 5),
                ("n2\u{0}000000", 0),
            ]
        );
    }

    #[test]
    fn back_to_back_tasks_of_one_state_are_one_bar() {
        let mut tasks: Vec<TaskRecord> = (0..1000)
            .map(|i| {
                task(
                    &format!("t{i}"),
                    "n1",
                    i * 10,
                    i * 10 + 9,
                    TaskState::Succeeded,
                )
            })
            .collect();
        tasks.push(task("bad", "n1", 10_000, 10_005, TaskState::Failed));
        let bars = task_bars(&tasks, 10_005, 2);
        assert_eq!(bars.len(), 2);
        assert_eq!((bars[0].start, bars[0].end), (0, 9_999));
        assert!(
            bars[0].title.starts_with("1000 tasks succeeded on n1"),
            "{}",
            bars[0].title
        );
        assert_eq!(bars[1].class, "failed");
        // Without slack, a gap of 1 ms keeps them apart.
        assert_eq!(task_bars(&tasks, 10_005, 0).len(), 1001);
    }

    #[test]
    fn a_failure_shows_its_error_stderr_and_how_to_see_the_whole_log() {
        let tails = BTreeMap::from([("s/S2".to_string(), "bad read at line 4\n".to_string())]);
        let page = render(&view(
            vec![
                task("s/S1", "n1", 1_000, 3_000, TaskState::Succeeded),
                task("s/S2", "n1", 1_000, 9_000, TaskState::Failed),
            ],
            tails,
        ));
        assert!(page.contains("Failed tasks (1)"));
        assert!(page.contains("bad read at line 4"));
        assert!(page.contains("exit 3 · 1 attempt(s) · exit status 3"));
        assert!(page.contains("stage logs pipelines/p.yaml work/s/S2 --stderr"));
        // Slowest first.
        let s2 = page.find("<tr><td>s/S2</td>").expect("S2 row");
        let s1 = page.find("<tr><td>s/S1</td>").expect("S1 row");
        assert!(s2 < s1);
        assert!(page.contains("min 2.0s · median 8.0s · p95 8.0s · max 8.0s"));
        assert!(page.contains("errors: 2 (a, b)"));
        assert!(!page.contains("conflict"));
    }
}
