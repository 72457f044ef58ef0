//! The journal: every run, step, task and side effect, kept in sled under the state directory.
//!
//! Writes are not durable until [`Journal::flush`]; callers flush after recording an intent and
//! before performing the side effect it names. Any failed write is an error that stops the run:
//! a journal that silently misses records would make resumption lie.

pub mod lock;
pub mod records;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use lock::{LockError, StateLock};
pub use records::*;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("cannot open the journal in {}", .dir.display())]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("cannot write the journal: the run stops here so that no progress goes unrecorded")]
    Write(#[source] sled::Error),
    #[error("journal record {what} is unreadable")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, JournalError>;

pub struct Journal {
    db: sled::Db,
    runs: sled::Tree,
    latest: sled::Tree,
    steps: sled::Tree,
    tasks: sled::Tree,
    done: sled::Tree,
    files: sled::Tree,
    filesystems: sled::Tree,
    paused: sled::Tree,
    imported: sled::Tree,
    dir: PathBuf,
    _lock: StateLock,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

/// Keys are built from parts separated by NUL, which names and paths cannot contain.
fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

impl Journal {
    /// Opens (creating) the journal in `dir`, holding the state lock while open.
    pub fn open(dir: &Path, wait: bool) -> Result<Journal> {
        let lock = StateLock::acquire(dir, wait)?;
        let open_err = |source| JournalError::Open {
            dir: dir.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(dir.join("journal"))
            .mode(sled::Mode::LowSpace)
            // sled caches up to 1 GiB by default; the journal's working set is far smaller.
            .cache_capacity(64 << 20)
            .open()
            .map_err(open_err)?;
        let tree = |name: &str| db.open_tree(name).map_err(open_err);
        Ok(Journal {
            runs: tree("runs")?,
            latest: tree("latest")?,
            steps: tree("steps")?,
            tasks: tree("tasks")?,
            done: tree("done")?,
            files: tree("files")?,
            filesystems: tree("filesystems")?,
            paused: tree("paused")?,
            imported: tree("imported")?,
            db,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        crate::failpoint::hit("journal.flush");
        if crate::failpoint::fails("journal.flush") {
            let e = std::io::Error::other("injected by STAGE_FAIL_AT");
            return Err(JournalError::Write(sled::Error::Io(e)));
        }
        self.db.flush().map_err(JournalError::Write)?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, tree: &sled::Tree, k: &[u8]) -> Result<Option<T>> {
        match tree.get(k).map_err(JournalError::Write)? {
            None => Ok(None),
            Some(v) => decode(&v, k).map(Some),
        }
    }

    fn put<T: Serialize>(&self, tree: &sled::Tree, k: &[u8], v: &T) -> Result<()> {
        // Sized for a task's done record, the most frequent write: no regrowth while encoding.
        let mut bytes = Vec::with_capacity(512);
        serde_json::to_writer(&mut bytes, v).map_err(|source| JournalError::Corrupt {
            what: String::from_utf8_lossy(k).into_owned(),
            source,
        })?;
        tree.insert(k, bytes).map_err(JournalError::Write)?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>> {
        tree.scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(JournalError::Write)?;
                Ok((k.to_vec(), decode(&v, &k)?))
            })
            .collect()
    }

    // ---- runs ----

    pub fn new_run(&self, pipeline: &str, file: &str) -> Result<RunRecord> {
        let id = match self.runs.last().map_err(JournalError::Write)? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1,
            None => 1,
        };
        let run = RunRecord {
            id,
            pipeline: pipeline.to_string(),
            file: file.to_string(),
            status: RunStatus::Running,
            started_ms: now_ms(),
            finished_ms: None,
            did_work: false,
            error: None,
            fingerprint: None,
        };
        self.put_run(&run)?;
        self.latest
            .insert(pipeline.as_bytes(), &id.to_be_bytes())
            .map_err(JournalError::Write)?;
        self.flush()?;
        Ok(run)
    }

    pub fn put_run(&self, run: &RunRecord) -> Result<()> {
        self.put(&self.runs, &run.id.to_be_bytes(), run)
    }

    pub fn run(&self, id: u64) -> Result<Option<RunRecord>> {
        self.get(&self.runs, &id.to_be_bytes())
    }

    pub fn latest_run(&self, pipeline: &str) -> Result<Option<RunRecord>> {
        match self
            .latest
            .get(pipeline.as_bytes())
            .map_err(JournalError::Write)?
        {
            Some(v) => {
                let id = u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
                self.run(id)
            }
            None => Ok(None),
        }
    }

    /// Forgets all but the newest `keep` finished runs of a pipeline: their run, step and task
    /// records. Done records stay (they are the pipeline's current fingerprints). Returns the
    /// ids forgotten, so the caller can remove their logs.
    pub fn prune(&self, pipeline: &str, keep: usize) -> Result<Vec<u64>> {
        let finished: Vec<u64> = self
            .runs()?
            .into_iter()
            .filter(|r| r.pipeline == pipeline && r.status.is_finished())
            .map(|r| r.id)
            .collect();
        let old = &finished[..finished.len().saturating_sub(keep)];
        for id in old {
            let prefix = id.to_be_bytes();
            for tree in [&self.steps, &self.tasks] {
                for k in tree.scan_prefix(prefix).keys() {
                    tree.remove(k.map_err(JournalError::Write)?)
                        .map_err(JournalError::Write)?;
                }
            }
            self.runs.remove(prefix).map_err(JournalError::Write)?;
        }
        Ok(old.to_vec())
    }

    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .scan(&self.runs, b"")?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    // ---- steps ----

    fn step_key(run: u64, index: usize) -> Vec<u8> {
        let mut k = run.to_be_bytes().to_vec();
        k.extend_from_slice(&(index as u32).to_be_bytes());
        k
    }

    pub fn step(&self, run: u64, index: usize) -> Result<Option<StepRecord>> {
        self.get(&self.steps, &Self::step_key(run, index))
    }

    pub fn put_step(&self, run: u64, index: usize, step: &StepRecord) -> Result<()> {
        self.put(&self.steps, &Self::step_key(run, index), step)
    }

    pub fn steps(&self, run: u64) -> Result<Vec<(usize, StepRecord)>> {
        Ok(self
            .scan(&self.steps, &run.to_be_bytes())?
            .into_iter()
            .map(|(k, v)| {
                let idx = k[8..12].try_into().map(u32::from_be_bytes).unwrap_or(0);
                (idx as usize, v)
            })
            .collect())
    }

    // ---- tasks ----

    fn task_prefix(run: u64, step: usize) -> Vec<u8> {
        let mut k = Self::step_key(run, step);
        k.push(0);
        k
    }

    pub fn put_task(&self, run: u64, step: usize, task: &TaskRecord) -> Result<()> {
        let mut k = Self::task_prefix(run, step);
        k.extend_from_slice(task.key.as_bytes());
        self.put(&self.tasks, &k, task)
    }

    pub fn task(&self, run: u64, step: usize, key: &str) -> Result<Option<TaskRecord>> {
        let mut k = Self::task_prefix(run, step);
        k.extend_from_slice(key.as_bytes());
        self.get(&self.tasks, &k)
    }

    /// Every task of a step in this run: those with a record of their own, and those only
    /// named in an intent batch (state `dispatched`), in key order.
    pub fn tasks(
        &self,
        run: u64,
        step: usize,
        pipeline: &str,
        step_name: &str,
    ) -> Result<Vec<TaskRecord>> {
        let mut by_key: std::collections::BTreeMap<String, TaskRecord> = self
            .scan::<TaskRecord>(&self.tasks, &Self::task_prefix(run, step))?
            .into_iter()
            .map(|(_, v)| (v.key.clone(), v))
            .collect();
        for done in self.done_scan(pipeline, step_name) {
            let (key, d) = done?;
            if d.run == run
                && let Some(t) = d.task
            {
                by_key.insert(key, t);
            }
        }
        for (_, batch) in
            self.scan::<Vec<(String, u32)>>(&self.tasks, &Self::intent_prefix(run, step))?
        {
            for (key, attempts) in batch {
                by_key
                    .entry(key.clone())
                    .or_insert_with(|| TaskRecord::dispatched(key, attempts));
            }
        }
        Ok(by_key.into_values().collect())
    }

    fn intent_prefix(run: u64, step: usize) -> Vec<u8> {
        let mut k = Self::step_key(run, step);
        k.push(1);
        k
    }

    /// Records, as one entry, that these tasks may start from now on: one write and one
    /// flush cover a whole batch instead of one per task.
    pub fn put_intents(&self, run: u64, step: usize, tasks: &[(String, u32)]) -> Result<()> {
        // Unique across resumptions of the run, so a later batch never replaces an earlier one.
        let batch = self.db.generate_id().map_err(JournalError::Write)?;
        let mut k = Self::intent_prefix(run, step);
        k.extend_from_slice(&batch.to_be_bytes());
        self.put(&self.tasks, &k, &tasks)
    }

    // ---- completed tasks, across runs ----

    pub fn done(&self, pipeline: &str, step: &str, task: &str) -> Result<Option<DoneRecord>> {
        self.get(
            &self.done,
            &key(&[pipeline.as_bytes(), step.as_bytes(), task.as_bytes()]),
        )
    }

    pub fn put_done(&self, pipeline: &str, step: &str, task: &str, rec: &DoneRecord) -> Result<()> {
        self.put(
            &self.done,
            &key(&[pipeline.as_bytes(), step.as_bytes(), task.as_bytes()]),
            rec,
        )
    }

    /// A step's completed tasks in key order, decoded as they are read.
    pub fn done_scan(
        &self,
        pipeline: &str,
        step: &str,
    ) -> impl Iterator<Item = Result<(String, DoneRecord)>> + use<> {
        let mut prefix = key(&[pipeline.as_bytes(), step.as_bytes()]);
        prefix.push(0);
        let skip = prefix.len();
        self.done.scan_prefix(prefix).map(move |kv| {
            let (k, v) = kv.map_err(JournalError::Write)?;
            let task = String::from_utf8_lossy(&k[skip..]).into_owned();
            Ok((task, decode(&v, &k)?))
        })
    }

    // ---- local HSM file state ----

    pub fn file(&self, fs: &str, path: &str) -> Result<Option<FileRecord>> {
        self.get(&self.files, &key(&[fs.as_bytes(), path.as_bytes()]))
    }

    pub fn put_file(&self, fs: &str, path: &str, rec: &FileRecord) -> Result<()> {
        self.put(&self.files, &key(&[fs.as_bytes(), path.as_bytes()]), rec)
    }

    pub fn forget_files(&self, fs: &str) -> Result<()> {
        let mut prefix = fs.as_bytes().to_vec();
        prefix.push(0);
        for k in self.files.scan_prefix(&prefix).keys() {
            let k = k.map_err(JournalError::Write)?;
            self.files.remove(k).map_err(JournalError::Write)?;
        }
        Ok(())
    }

    // ---- file systems ----

    pub fn filesystem(&self, name: &str) -> Result<Option<FsRecord>> {
        self.get(&self.filesystems, name.as_bytes())
    }

    pub fn put_filesystem(&self, name: &str, rec: &FsRecord) -> Result<()> {
        self.put(&self.filesystems, name.as_bytes(), rec)
    }

    // ---- what AMLFS import jobs last brought in ----

    /// The fingerprint of the container as the last completed import of `what` (prefixes and
    /// mode, digested) into the file system `fs_id` found it.
    pub fn imported(&self, fs_id: &str, what: &str) -> Result<Option<String>> {
        self.get(
            &self.imported,
            &key(&[fs_id.to_ascii_lowercase().as_bytes(), what.as_bytes()]),
        )
    }

    pub fn put_imported(&self, fs_id: &str, what: &str, fingerprint: &str) -> Result<()> {
        self.put(
            &self.imported,
            &key(&[fs_id.to_ascii_lowercase().as_bytes(), what.as_bytes()]),
            &fingerprint,
        )
    }

    // ---- auto-export jobs paused for an import ----

    /// Jobs of the file system (by ARM id) that a run disabled and has not yet enabled again.
    pub fn paused_auto_exports(&self, fs_id: &str) -> Result<Vec<String>> {
        Ok(self
            .get(&self.paused, fs_id.to_ascii_lowercase().as_bytes())?
            .unwrap_or_default())
    }

    pub fn set_paused_auto_exports(&self, fs_id: &str, jobs: &[String]) -> Result<()> {
        let k = fs_id.to_ascii_lowercase();
        if jobs.is_empty() {
            self.paused
                .remove(k.as_bytes())
                .map_err(JournalError::Write)?;
            return Ok(());
        }
        self.put(&self.paused, k.as_bytes(), &jobs)
    }
}

fn decode<T: DeserializeOwned>(v: &[u8], k: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|source| JournalError::Corrupt {
        what: String::from_utf8_lossy(k).replace('\0', "/"),
        source,
    })
}
