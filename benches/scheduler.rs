//! Scheduler cost at scale: a process step of N tasks over H simulated hosts whose transport
//! completes every task at once, so what is measured is stage's own per-task work — queueing,
//! slot bookkeeping, journal records with group commit, events — not the tasks.
//!
//!   cargo bench --bench scheduler                 # 1,000,000 tasks, 1,000 hosts x 120 slots
//!   TASKS=100000 HOSTS=100 cargo bench --bench scheduler

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use stage::engine::events::{Event, Reporter};
use stage::engine::{Backends, Cancel, Engine, RunOptions};
use stage::executor::{ExecError, Executor, HostOutput, TaskCommand, TaskExit};
use stage::filesystem::LocalFileSystem;
use stage::journal::Journal;
use stage::mover::BlobMover;
use stage::store::DirStore;

/// Completes every task instantly with exit 0.
struct Instant0 {
    slots: Vec<String>,
}

#[async_trait]
impl Executor for Instant0 {
    fn slots(&self) -> Vec<String> {
        self.slots.clone()
    }
    async fn broadcast(&self, _command: &str) -> Vec<HostOutput> {
        Vec::new()
    }
    async fn run(&self, _slot: usize, _cmd: &TaskCommand) -> Result<TaskExit, ExecError> {
        Ok(TaskExit {
            code: Some(0),
            signal: None,
            timed_out: false,
        })
    }
}

#[derive(Default)]
struct Count(AtomicU64);

impl Reporter for Count {
    fn event(&self, e: &Event) {
        if matches!(e, Event::TaskFinished { .. }) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        / 1024
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing else we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tasks = env("TASKS", 1_000_000);
    let hosts = env("HOSTS", 1_000);
    // A thousand 120-core hosts (Standard_HB120rs_v3): 120,000 tasks in flight at once.
    let slots_per_host = env("SLOTS", 120);
    // SCHED_DIR keeps the input tree between runs (creating a million files takes longer than
    // the run); its state is wiped each time.
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = std::env::var_os("SCHED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let root = base.join("lustre");
    let t0 = Instant::now();
    let _ = std::fs::remove_dir_all(base.join("state"));
    let ready = base.join(format!("ready-{tasks}"));
    for i in (0..tasks).filter(|_| !ready.exists()) {
        let d = root.join(format!("in/d{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&d).expect("mkdir");
        }
        std::fs::File::create(d.join(format!("f{i:07}"))).expect("create");
    }
    std::fs::write(&ready, "").expect("marker");
    let setup = t0.elapsed();
    let dir = &base;
    let pipeline_file = dir.join("p.yaml");
    std::fs::write(
        &pipeline_file,
        "name: sched\nfilesystem:\n  name: fs1\n  mount: lustre\n  hsm: { container: blob }\nsteps:\n  - process:\n      foreach: \"in/*/*\"\n      command: true {{input}}\n",
    )
    .expect("write pipeline");
    let pipeline = stage::spec::load(&pipeline_file).expect("valid pipeline");
    let state = dir.join("state");
    let journal = Arc::new(Journal::open(&state, false).expect("journal"));
    let slots: Vec<String> = (0..slots_per_host)
        .flat_map(|_| (0..hosts).map(|h| format!("sim{h:04}")))
        .collect();
    let reporter = Arc::new(Count::default());
    let container: Arc<dyn stage::store::BlobStore> = Arc::new(DirStore::new(dir.join("blob")));
    let mover: Arc<dyn stage::mover::Mover> = Arc::new(BlobMover::new(
        "fs1".into(),
        root.clone(),
        container.clone(),
        journal.clone(),
        1,
    ));
    let engine = Engine {
        backends: Backends {
            fs: Arc::new(LocalFileSystem::new(root.clone())),
            mover: mover.clone(),
            direct: mover,
            executor: Arc::new(Instant0 { slots }),
            container,
        },
        pipeline,
        journal,
        state_dir: state,
        reporter: reporter.clone(),
        cancel: Cancel::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t1 = Instant::now();
    runtime
        .block_on(engine.run(RunOptions::default()))
        .expect("run");
    let elapsed = t1.elapsed();
    let done = reporter.0.load(Ordering::Relaxed);
    assert_eq!(done as usize, tasks, "every task completed");
    println!(
        "scheduler {tasks} tasks over {hosts} simulated hosts x {slots_per_host} slots: {:.2}s, {:.1} us/task (target < 20), peak RSS {} MB (target < 500); setup {:.1}s",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / tasks as f64,
        peak_rss_mb(),
        setup.as_secs_f64()
    );
}
