//! What earlier steps of a run will write, for `plan` and `explain`: a task up to date now
//! runs anyway when a task before it will rewrite one of its inputs or add a file its input
//! globs match, and a `foreach` step gains a task for each such file its globs match. The run
//! itself needs none of this: it decides each step after the steps before it have run.

use std::collections::{BTreeMap, BTreeSet};

use super::tasks::{Task, Why, glob_matches};
use crate::spec::{ExportStep, ProcessStep};

#[derive(Default)]
pub struct Upstream {
    /// Output path → the task that will write it (`step/key`).
    writes: BTreeMap<String, String>,
}

impl Upstream {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Records the outputs of a task that will run.
    pub fn will_write(&mut self, step: &str, task: &Task) {
        for o in &task.outputs {
            self.writes
                .entry(o.clone())
                .or_insert_with(|| format!("{step}/{}", task.key));
        }
    }

    /// Records a file another kind of step (an import) will write.
    pub fn will_write_path(&mut self, by: &str, path: &str) {
        self.writes
            .entry(path.to_string())
            .or_insert_with(|| by.to_string());
    }

    /// Why `task`, up to date now, will run anyway: the first of its inputs an earlier task
    /// will write, or a new file its step's `inputs` globs will match.
    pub fn touches(&self, p: &ProcessStep, task: &Task) -> Option<Why> {
        let why = |(path, by): (&String, &String)| Why::Upstream {
            path: path.clone(),
            by: by.clone(),
        };
        if let Some(hit) = task
            .inputs
            .iter()
            .find_map(|i| self.writes.get_key_value(i))
        {
            return Some(why(hit));
        }
        self.writes
            .iter()
            .find(|(path, _)| p.inputs.iter().any(|g| glob_matches(g, path)))
            .map(why)
    }

    /// How many files earlier steps will write that `export` carries.
    pub fn exported(&self, export: &ExportStep) -> usize {
        self.writes
            .iter()
            .filter(|(f, by)| export.takes(f, by.split('/').next().unwrap_or(by)))
            .count()
    }

    /// Files earlier tasks will write that a `foreach` step's globs match and that are not
    /// among `keys` (its tasks now): each will be a new task.
    pub fn new_tasks(&self, p: &ProcessStep, keys: &BTreeSet<&str>) -> Vec<(String, String)> {
        self.writes
            .iter()
            .filter(|(path, _)| !keys.contains(path.as_str()))
            .filter(|(path, _)| p.foreach.iter().any(|g| glob_matches(g, path)))
            .map(|(path, by)| (path.clone(), by.clone()))
            .collect()
    }
}
