//! `stage fs show FILE`: what the seed's Terraform outputs for a file system — state and
//! health, capacity and throughput, MGS address and mount command, HSM settings.
//! `stage fs delete FILE`: the way out of a file system that failed to provision.

use std::path::PathBuf;

use super::{CliError, Ctx, load};
use crate::exit::Exit;
use crate::spec::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: FsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FsCommand {
    /// Show the pipeline's file system as Azure (or the local target) has it.
    Show {
        /// The pipeline file.
        file: PathBuf,
    },
    /// Delete the pipeline's AMLFS file system and wait until it is gone. One in state
    /// Failed (a create that did not finish, which every run stops at) goes at once; one
    /// that works needs --force, since it may hold results not yet exported (a teardown
    /// step deletes only after a verified export).
    Delete {
        /// The pipeline file.
        file: PathBuf,
        /// Delete it even though it provisioned and may hold unexported data.
        #[arg(long)]
        force: bool,
    },
}

/// One line on the file system as Azure has it now: state, health, capacity.
pub async fn health(p: &crate::spec::Pipeline) -> Result<String, String> {
    let fs = crate::azure::resources::fs_ref(p).map_err(|e| e.to_string())?;
    let arm = crate::target::arm_client(p).map_err(|e| e.to_string())?;
    let got: Option<crate::azure::models::AmlFilesystem> =
        arm.get(&fs.path()).await.map_err(|e| e.to_string())?;
    let Some(r) = got else {
        return Ok(format!("AMLFS {} does not exist", fs.name));
    };
    let pr = &r.properties;
    let health = pr.health.as_ref();
    Ok(format!(
        "AMLFS {}: {}, health {} ({}), {} TiB",
        fs.name,
        pr.provisioning_state.as_deref().unwrap_or("unknown"),
        health.and_then(|h| h.state.as_deref()).unwrap_or("unknown"),
        health
            .and_then(|h| h.status_description.as_deref())
            .unwrap_or("no description"),
        r.current_capacity_tib().unwrap_or(0.0)
    ))
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<Exit, CliError> {
    let file = match a.command {
        FsCommand::Show { file } => file,
        FsCommand::Delete { file, force } => return delete(ctx, &file, force).await,
    };
    let p = load(&file)?;
    if p.target == Target::Local {
        let root = crate::target::local_root(&p, &ctx.state_dir);
        println!("name        {}", p.filesystem.name);
        println!("target      local (a directory plays Lustre)");
        println!("path        {}", root.display());
        println!("exists      {}", root.is_dir());
        println!("container   {}", p.filesystem.hsm.container);
        return Ok(Exit::Success);
    }
    let fs = crate::azure::resources::fs_ref(&p).map_err(|e| CliError::Usage(e.to_string()))?;
    let arm = crate::target::arm_client(&p)?;
    let got: Option<crate::azure::models::AmlFilesystem> = arm
        .get(&fs.path())
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let Some(r) = got else {
        println!("{} does not exist ({})", fs.name, fs.path());
        return Ok(Exit::Failed);
    };
    let pr = &r.properties;
    let sku = r.sku.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    let per_tib = crate::spec::Sku::ALL
        .iter()
        .find(|s| s.name() == sku)
        .map_or(0, |s| s.mb_per_tib());
    let cap = r.current_capacity_tib().unwrap_or(0.0);
    let show = |k: &str, v: String| println!("{k:<20}{v}");
    show("name", fs.name.clone());
    show("id", r.id.clone().unwrap_or_else(|| fs.path()));
    show("state", pr.provisioning_state.clone().unwrap_or_default());
    let health = pr.health.as_ref();
    show(
        "health",
        format!(
            "{} {}",
            health.and_then(|h| h.state.clone()).unwrap_or_default(),
            health
                .and_then(|h| h.status_description.clone())
                .unwrap_or_default()
        ),
    );
    show("sku", sku);
    show("capacity", format!("{cap} TiB"));
    show(
        "throughput",
        format!(
            "{} MB/s ({cap} TiB x {per_tib} MB/s per TiB)",
            pr.throughput_mbps.unwrap_or(cap * f64::from(per_tib))
        ),
    );
    let client = pr.client_info.as_ref();
    show(
        "mgs address",
        client
            .and_then(|c| c.mgs_address.clone())
            .unwrap_or_default(),
    );
    // Azure's command ends in a `/<local path>` placeholder: the pipeline says where.
    let mount =
        crate::spec::template::shell_quote(&crate::target::mount_point(&p).display().to_string());
    show(
        "mount command",
        client
            .and_then(|c| c.mount_command.clone())
            .filter(|c| !c.is_empty())
            .map(|c| c.replace("/<local path>", &mount))
            .unwrap_or_else(|| "(none yet: the file system is not ready)".into()),
    );
    if let Some(s) = pr.hsm_settings() {
        show("hsm container", s.container.clone());
        show("hsm logging", s.logging_container.clone());
        show(
            "import prefixes",
            s.import_prefixes_initial
                .clone()
                .unwrap_or_default()
                .join(", "),
        );
    }
    if let Some(a) = r.last_archive() {
        let st = a.status.clone().unwrap_or_default();
        show(
            "last archive",
            format!(
                "{} {} ({}%)",
                a.filesystem_path.clone().unwrap_or_default(),
                st.state.unwrap_or_default(),
                st.percent_complete.unwrap_or(0.0)
            ),
        );
    }
    Ok(Exit::Success)
}

async fn delete(ctx: &Ctx, file: &std::path::Path, force: bool) -> Result<Exit, CliError> {
    use crate::journal::{FsRecord, FsState};
    let p = load(file)?;
    if p.target == Target::Local {
        return Err(CliError::Usage(format!(
            "{}: on the local target the file system is a directory ({}); remove it yourself",
            file.display(),
            crate::target::local_root(&p, &ctx.state_dir).display()
        )));
    }
    let journal = ctx.open_journal(true)?;
    let backends = crate::target::backends(&p, &ctx.state_dir, journal.clone())?;
    let fs = &backends.fs;
    let engine =
        |e: crate::filesystem::FsError| CliError::from(crate::engine::EngineError::from(e));
    let Some(state) = fs.state().await.map_err(engine)? else {
        println!("{} does not exist: nothing to delete", fs.describe());
        return Ok(Exit::Success);
    };
    if !matches!(state.as_str(), "Failed" | "Canceled" | "Deleting") && !force {
        return Err(CliError::Usage(format!(
            "{} is {state} and may hold results not yet exported; `stage fs delete --force {}` deletes it anyway",
            fs.describe(),
            file.display()
        )));
    }
    let name = &p.filesystem.name;
    let created_here = journal.filesystem(name)?.is_some_and(|r| r.created_here);
    let record = |state| FsRecord {
        state,
        created_here,
        location: fs.describe(),
        updated_ms: crate::journal::now_ms(),
    };
    journal.put_filesystem(name, &record(FsState::Deleting))?;
    journal.flush()?;
    if !ctx.quiet {
        eprintln!("deleting {} (it was {state}) …", fs.describe());
    }
    fs.delete().await.map_err(engine)?;
    journal.forget_files(name)?;
    journal.put_filesystem(name, &record(FsState::Deleted))?;
    journal.flush()?;
    if !ctx.quiet {
        eprintln!("deleted {}", fs.describe());
    }
    Ok(Exit::Success)
}
