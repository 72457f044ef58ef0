use std::path::PathBuf;

use super::{CliError, Ctx, load};
use crate::engine::tasks;
use crate::exit::Exit;
use crate::filesystem::FsPlan;
use crate::mover::ExportRequest;
use crate::spec::Action;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub file: PathBuf,
}

/// Says when an import brings more data than the file system holds: AMLFS fails such an
/// import partway, after hours of copying.
fn fit_warning(bytes: u64, capacity_tib: Option<u32>) -> Option<String> {
    let tib = capacity_tib?;
    let capacity = u64::from(tib) << 40;
    (bytes > capacity).then(|| {
        format!(
            "; would NOT FIT in {tib} TiB: raise capacity_tib to at least {} (an existing file system grows in place)",
            bytes.div_ceil(1 << 40)
        )
    })
}

/// Like `terraform plan`: reads the journal, the container and the file system; changes nothing.
pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    let p = load(&a.file)?;
    let journal = ctx.open_journal(false)?;
    let backends = crate::target::backends(&p, &ctx.state_dir, journal.clone())?;
    let root = backends.fs.root();
    let fs_plan = backends
        .fs
        .plan()
        .await
        .map_err(crate::engine::EngineError::from)?;
    let exists = !matches!(
        fs_plan,
        FsPlan::Create(_) | FsPlan::Blocked(_) | FsPlan::Failed
    );
    match journal.latest_run(&p.name)? {
        Some(r) if !r.status.is_finished() => {
            println!("stage run would resume run {} of {}", r.id, p.name)
        }
        Some(r)
            if r.status == crate::journal::RunStatus::Succeeded
                && r.fingerprint.is_some()
                && crate::engine::unchanged::applies(&p) =>
        {
            let now = crate::engine::unchanged::fingerprint(&p, backends.container.as_ref())
                .await
                .map_err(|e| CliError::Usage(format!("cannot list the container: {e}")))?;
            if r.fingerprint.as_deref() == Some(now.as_str()) {
                println!(
                    "stage run would do nothing: the container and the pipeline are as run {} \
                     left them, and its file system was torn down",
                    r.id
                );
                return Ok(Exit::Success);
            }
            println!("stage run would start a new run of {}", p.name)
        }
        _ => println!("stage run would start a new run of {}", p.name),
    }
    let mut changes = 0usize;
    let mut upstream = crate::engine::upstream::Upstream::default();
    for step in &p.steps {
        let line = match &step.action {
            Action::Ensure => {
                let what = backends.fs.describe();
                if fs_plan != FsPlan::Keep {
                    changes += 1;
                }
                match &fs_plan {
                    FsPlan::Keep => format!("keep    {what}"),
                    FsPlan::Create(notes) => {
                        let mut s = format!("create  {what}");
                        for n in notes {
                            s += &format!("\n          note: {n}");
                        }
                        s
                    }
                    FsPlan::Blocked(problems) => format!(
                        "refuse  {what}: cannot be created (run stops here):\n            {}",
                        problems.join("\n            ")
                    ),
                    FsPlan::Wait => format!("wait    {what} (being created)"),
                    FsPlan::Grow(tib) => format!("grow    {what} to {tib} TiB (expansion job)"),
                    FsPlan::Update(field) => format!("update  {what}: {field}"),
                    FsPlan::Refuse(d) => format!(
                        "refuse  {what}: settings that cannot change differ (run stops here):\n            {}",
                        d.join("\n            ")
                    ),
                    FsPlan::Failed => format!(
                        "failed  {what} is in state Failed; the run stops here until `stage fs delete {}`",
                        a.file.display()
                    ),
                }
            }
            Action::Import(i) => {
                let r = backends.import_dry_run(i).await?;
                changes += r.imported as usize;
                for path in &r.planned {
                    upstream.will_write_path(&step.name, path);
                }
                let mut s = format!("import  {}", r.planned_summary());
                if p.target == crate::spec::Target::Azure
                    && let Some(warning) = fit_warning(r.bytes, p.filesystem.capacity_tib)
                {
                    s += &warning;
                }
                if let Some(c) = r.conflict {
                    s += &format!("; would FAIL on conflict at {c}");
                }
                s
            }
            Action::Process(proc) if exists => {
                let list = tasks::expand(&step.name, proc, &root, &p.vars)
                    .map_err(|e| CliError::Usage(format!("step {}: {e}", step.name)))?;
                let total = list.len();
                let (mut to_run, mut fresh) = tasks::triage(
                    &journal, &p.name, &step.name, &root, &list,
                )
                .map_err(|e| match e {
                    tasks::TriageError::Journal(j) => CliError::Journal(j),
                    tasks::TriageError::Expand(x) => {
                        CliError::Usage(format!("step {}: {x}", step.name))
                    }
                })?;
                let expand_err =
                    |e: tasks::ExpandError| CliError::Usage(format!("step {}: {e}", step.name));
                if !upstream.is_empty() {
                    // Up to date now, but a task before it will write one of its inputs.
                    let running: std::collections::BTreeSet<usize> =
                        to_run.iter().map(|(i, _)| *i).collect();
                    for i in (0..total).filter(|i| !running.contains(i)) {
                        let task = list.task_at(i).map_err(expand_err)?;
                        if let Some(why) = upstream.touches(proc, &task) {
                            to_run.push((i, why));
                            fresh -= 1;
                        }
                    }
                    to_run.sort_by_key(|(i, _)| *i);
                }
                let keys: std::collections::BTreeSet<&str> =
                    (0..total).map(|i| list.key(i)).collect();
                let born = upstream.new_tasks(proc, &keys);
                for (i, _) in &to_run {
                    upstream.will_write(&step.name, &list.task_at(*i).map_err(expand_err)?);
                }
                for (key, _) in &born {
                    upstream.will_write(&step.name, &list.task_for(key).map_err(expand_err)?);
                }
                changes += to_run.len() + born.len();
                let mut s = format!(
                    "run     {} of {total} tasks ({fresh} up to date)",
                    to_run.len()
                );
                if let Some((i, why)) = to_run.first() {
                    s += &format!(
                        "; e.g. {}: {}",
                        list.key(*i),
                        why.to_string().lines().next().unwrap_or_default()
                    );
                }
                if let Some((key, by)) = born.first() {
                    s += &format!(
                        "; and {} new, for files earlier steps will write (e.g. {key}, by {by})",
                        born.len()
                    );
                }
                s
            }
            Action::Process(_) => {
                "run     every task (its inputs arrive with the import)".to_string()
            }
            Action::Export(e) if exists => {
                let paths = crate::engine::export_paths(&p, e, &root)
                    .map_err(|err| CliError::Usage(format!("step {}: {err}", step.name)))?;
                let later = upstream.exported(e);
                let r = backends
                    .mover(e.mover)
                    .export(
                        ExportRequest {
                            job: String::new(),
                            paths,
                            dry_run: true,
                            auto: false,
                            cancel: None,
                            detach: false,
                        },
                        Box::new(|_| {}),
                    )
                    .await
                    .map_err(crate::engine::EngineError::from)?;
                changes += r.exported as usize;
                let mut s = format!(
                    "export  {} file(s) new or changed, {} unchanged",
                    r.exported, r.unchanged
                );
                if !r.errors.is_empty() {
                    s += &format!(" ({} not there yet)", r.errors.len());
                }
                if later > 0 {
                    changes += later;
                    s += &format!("; {later} file(s) the steps above will write");
                }
                s
            }
            Action::Export(_) => "export  everything the steps above produce".to_string(),
            Action::Teardown => {
                changes += 1;
                let ours = journal
                    .filesystem(&p.filesystem.name)?
                    .is_some_and(|r| r.created_here);
                if ours || !exists {
                    format!("delete  {} after a verified export", backends.fs.describe())
                } else {
                    format!(
                        "keep    {} (not created by this state; --force deletes it)",
                        backends.fs.describe()
                    )
                }
            }
        };
        println!("  {:<10} {line}", step.name);
    }
    if let Some(set) = &p.pool.scale_set {
        let arm = crate::target::arm_client(&p)?;
        let r = crate::target::scale_set_ref(&p, set)?;
        let have = crate::azure::vmss::capacity(&arm, &r)
            .await
            .map_err(|e| CliError::Usage(format!("scale set {}: {e}", set.name)))?;
        let what = format!("scale set {} ({} × {})", set.name, set.instances, set.size);
        let line = match have {
            None => format!("create  {what}"),
            Some(n) if n == u64::from(set.instances) => format!("keep    {what}"),
            Some(n) => format!("scale   {what}, from {n} instances"),
        };
        if have != Some(u64::from(set.instances)) {
            changes += 1;
        }
        println!("  {:<10} {line}", "pool");
    }
    if changes == 0 {
        println!("nothing to do: everything is up to date");
    }
    if p.target == crate::spec::Target::Azure
        && let (Some(sku), Some(cap)) = (p.filesystem.sku, p.filesystem.capacity_tib)
    {
        // AMLFS bills capacity by the hour and cannot be stopped, only deleted.
        let tears_down = p.steps.iter().any(|s| matches!(s.action, Action::Teardown));
        println!(
            "cost: {cap} TiB of {} ({} MB/s) billed per hour while it exists; {}",
            sku.name(),
            cap * sku.mb_per_tib(),
            if tears_down {
                "the teardown step deletes it after a verified export"
            } else {
                "no teardown step: it keeps running (and billing) after the run"
            }
        );
    }
    if let Some(set) = &p.pool.scale_set {
        println!(
            "cost: {} × {} billed per hour while running; {}",
            set.instances,
            set.size,
            if set.scale_to_zero {
                "scale_to_zero scales them to 0 after a successful run"
            } else {
                "they keep running (and billing) after the run; set scale_to_zero to stop them"
            }
        );
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_import_larger_than_the_capacity_is_flagged() {
        assert_eq!(super::fit_warning(1 << 40, Some(8)), None);
        assert_eq!(super::fit_warning(9 << 40, None), None);
        let w = super::fit_warning((9 << 40) + 1, Some(8)).unwrap();
        assert!(w.contains("NOT FIT in 8 TiB"), "{w}");
        assert!(w.contains("at least 10"), "{w}");
    }
}
