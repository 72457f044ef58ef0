//! The azure target end to end against `stage emulator` (ARM/AMLFS) and Azurite (blob):
//! provisioning, HSM import jobs, archive, verification, teardown, kills and faults.

#[path = "common/azurite.rs"]
mod azurite;
mod common;
#[path = "common/emulator.rs"]
mod emulator;
#[path = "common/sshd.rs"]
mod sshd;

use std::path::PathBuf;
use std::process::Output;

use azurite::{Azurite, stage};
use common::*;
use emulator::Emulator;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const SUBNET: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-stage/providers/Microsoft.Network/virtualNetworks/vnet/subnets/amlfs";
const FS: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-stage/providers/Microsoft.StorageCache/amlFilesystems/genomics-scratch";

struct Bed {
    az: Azurite,
    em: Emulator,
    ws: Workspace,
    pipeline: PathBuf,
}

fn run(ws: &Workspace, args: &[&str], crash: Option<&str>) -> Output {
    let mut c = stage(ws, args);
    if let Some(point) = crash {
        c.env("STAGE_CRASH_AT", point);
    }
    c.output().expect("run stage")
}

/// Azurite with the genomics inputs, an emulator, and the genomics pipeline on `target: azure`.
fn bed(emulator_flags: &[&str], edit: impl Fn(String) -> String) -> Bed {
    let az = Azurite::start();
    let blob = format!("http://127.0.0.1:{}/devstoreaccount1", az.port);
    let em = Emulator::start(&blob, emulator_flags);
    // What the seed's Terraform makes before stage runs: the subnet and the logging
    // container (the data container gets the inputs below).
    em.create_subnet(SUBNET, "10.0.0.0/24");
    // On a thread of its own: some tests call this from inside a runtime.
    let logs = azurite::raw(&az, "genomics-logs");
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(logs.create(None))
            .expect("create the logging container");
    })
    .join()
    .unwrap();
    let ws = Workspace::new();
    let p = ws.genomics();
    for part in ["reference", "samples"] {
        let o = run(
            &ws,
            &[
                "export",
                &format!("pipelines/data/genomics/{part}"),
                &az.url(&format!("genomics/{part}")),
            ],
            None,
        );
        assert_exit(&o, 0);
    }
    let text = std::fs::read_to_string(&p).unwrap();
    let yaml = text
        .replace(
            "target: local",
            &format!(
                "target: azure\nazure:\n  subscription: {SUB}\n  resource_group: rg-stage\n  location: eastus\n  endpoint: {}",
                em.endpoint()
            ),
        )
        .replace("container: data/genomics ", &format!("container: {blob}/genomics "))
        .replace(
            "logging_container: data/genomics-logs",
            &format!(
                "logging_container: {blob}/genomics-logs\n    storage_account: /subscriptions/{SUB}/resourceGroups/rg-stage/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"
            ),
        )
        .replace(
            "  zone: \"1\"\n",
            &format!(
                "  zone: \"1\"\n  subnet: {SUBNET}\n  mount: {}\n",
                em.fs_dir("genomics-scratch").display()
            ),
        );
    let yaml = edit(yaml);
    std::fs::write(&p, yaml).unwrap();
    Bed {
        az,
        em,
        ws,
        pipeline: p,
    }
}

impl Bed {
    fn run(&self, crash: Option<&str>) -> Output {
        run(&self.ws, &["run", self.pipeline.to_str().unwrap()], crash)
    }

    /// `stage run EXTRA PIPELINE` started in the background, its stderr piped.
    fn spawn_run(&self, extra: &[&str]) -> std::process::Child {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        args.push(self.pipeline.to_str().unwrap());
        stage(&self.ws, &args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `stage ARGS` with warnings logged (the suite's runs log none).
    fn logged(&self, args: &[&str]) -> Output {
        stage(&self.ws, args)
            .env("STAGE_LOG", "warn")
            .output()
            .unwrap()
    }

    fn check_results(&self) {
        let dst = format!("fetched-{}", crate::common::text(&[]).len() + rand_suffix());
        let o = run(
            &self.ws,
            &["import", &self.az.url("genomics/results"), &dst],
            None,
        );
        assert_exit(&o, 0);
        let golden = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/genomics-summary.tsv"
        ))
        .unwrap();
        let summary = std::fs::read(self.ws.path().join(&dst).join("summary.tsv")).unwrap();
        assert_eq!(text(&summary), text(&golden));
        assert_eq!(self.ws.tree(&dst).len(), 5);
    }

    fn jobs(&self) -> Vec<String> {
        self.em
            .list(&format!("{FS}/importJobs"))
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Stops the emulator with `signal` and starts another on its data directory, and points
    /// the pipeline at its new port.
    fn restart_emulator(&mut self, signal: i32, extra: &[&str]) {
        let old = self.em.endpoint();
        self.em.restart(signal, extra);
        let yaml = std::fs::read_to_string(&self.pipeline).unwrap();
        std::fs::write(&self.pipeline, yaml.replace(&old, &self.em.endpoint())).unwrap();
    }

    fn filesystems(&self) -> usize {
        std::fs::read_dir(self.em.data.path().join("filesystems"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn rand_suffix() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn genomics_on_the_azure_target_end_to_end_then_nothing_to_do() {
    let b = bed(&[], |y| y);
    let o = run(&b.ws, &["plan", b.pipeline.to_str().unwrap()], None);
    assert_exit(&o, 0);
    let plan = text(&o.stdout);
    for want in [
        "create  AMLFS genomics-scratch",
        "5 files to import",
        "cost: 8 TiB of AMLFS-Durable-Premium-250 (2000 MB/s)",
        "no teardown step",
    ] {
        assert!(plan.contains(want), "{want} missing from:\n{plan}");
    }
    let (status, _) = b.em.get(FS);
    assert_eq!(status, 404, "plan must not create anything");
    let o = b.run(None);
    assert_exit(&o, 0);
    assert_has(
        &o.stderr,
        "created AMLFS genomics-scratch in rg-stage/eastus",
    );
    // The automatic import at creation took the inputs; the step's job finds them there.
    assert_has(&o.stderr, "import: 0 files imported (0 B), 5 up to date");
    assert_has(&o.stderr, "5 files exported");
    b.check_results();
    let (status, fs) = b.em.get(FS);
    assert_eq!(status, 200);
    assert_eq!(fs["properties"]["provisioningState"], "Succeeded");
    // The automatic initial import, then the step's own job.
    assert_eq!(b.jobs().len(), 2, "{:?}", b.jobs());
    // The export step's five outputs went out by one archive of their common directory, not
    // one archive each (a real one costs a minute, and AMLFS runs one HSM job at a time).
    let archived = &fs["properties"]["hsm"]["archiveStatus"];
    assert_eq!(archived.as_array().map(Vec::len), Some(1), "{archived}");
    assert_eq!(archived[0]["filesystemPath"], "/results", "{archived}");
    let o = run(&b.ws, &["fs", "show", b.pipeline.to_str().unwrap()], None);
    assert_exit(&o, 0);
    let shown = text(&o.stdout);
    for want in [
        "Succeeded",
        "Available",
        "2000 MB/s (8 TiB x 250 MB/s per TiB)",
        // Azure's placeholder filled in with the pipeline's mount.
        &format!(
            "mount -t lustre -o noatime,user_xattr 127.0.0.1@tcp0:/lustrefs {}",
            b.em.fs_dir("genomics-scratch").display()
        ),
        "containers/genomics",
    ] {
        assert!(shown.contains(want), "{want} missing from:\n{shown}");
    }
    // status adds what Azure says about the file system now.
    let o = run(&b.ws, &["status", b.pipeline.to_str().unwrap()], None);
    assert_exit(&o, 0);
    assert_has(
        &o.stdout,
        "file system: AMLFS genomics-scratch: Succeeded, health Available (amlFilesystem is ok.), 8 TiB",
    );
    let o = b.run(None);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "nothing to do");
    // The emulator archives as AMLFS does: AMLFS metadata, none of stage's own.
    let blobs = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(azurite::listing(&azurite::raw(&b.az, "genomics")));
    let results: Vec<_> = blobs
        .iter()
        .filter(|(n, _)| n.starts_with("results/"))
        .collect();
    assert!(!results.is_empty(), "{blobs:?}");
    for (name, meta) in results {
        assert!(meta.contains_key("permissions"), "{name}: {meta:?}");
        assert!(!meta.contains_key("stage_crc64"), "{name}: {meta:?}");
    }
}

/// On Azure every import job walks its prefixes and holds the file system's one HSM slot
/// for minutes: a rerun from cron over an unchanged container must start none, and one
/// over a changed container (or a file system missing a file) must start one.
#[test]
fn an_unchanged_container_starts_no_import_job() {
    let b = bed(&[], |y| y);
    assert_exit(&b.run(None), 0);
    let rerun = |b: &Bed| {
        let o = run(&b.ws, &["run", "--new", b.pipeline.to_str().unwrap()], None);
        assert_exit(&o, 0);
        o
    };
    let jobs = b.jobs().len();
    let o = rerun(&b);
    assert_has(&o.stderr, "import: 0 files imported (0 B), 5 up to date");
    assert_eq!(b.jobs().len(), jobs, "{:?}", b.jobs());
    // A new blob: a job, and its file arrives.
    b.ws.write("more/S9.fastq.gz", "another sample\n");
    let o = run(
        &b.ws,
        &["export", "more", &b.az.url("genomics/samples")],
        None,
    );
    assert_exit(&o, 0);
    rerun(&b);
    assert_eq!(b.jobs().len(), jobs + 1, "{:?}", b.jobs());
    let fs = b.em.fs_dir("genomics-scratch");
    assert!(fs.join("samples/S9.fastq.gz").is_file());
    rerun(&b);
    assert_eq!(b.jobs().len(), jobs + 1, "{:?}", b.jobs());
    // A file gone from the file system, the container unchanged: a job brings it back.
    std::fs::remove_file(fs.join("samples/S9.fastq.gz")).unwrap();
    rerun(&b);
    assert_eq!(b.jobs().len(), jobs + 2, "{:?}", b.jobs());
    assert!(fs.join("samples/S9.fastq.gz").is_file());
}

#[test]
fn killed_while_provisioning_importing_and_archiving_resumes_without_duplicates() {
    let b = bed(&[], |y| y);
    for point in [
        "amlfs.after-create",
        "hsm.after-import-job",
        "hsm.after-archive",
    ] {
        let o = b.run(Some(point));
        assert_eq!(
            o.status.code(),
            None,
            "{point} should kill: {}",
            text(&o.stderr)
        );
    }
    let o = b.run(None);
    assert_exit(&o, 0);
    b.check_results();
    assert_eq!(b.filesystems(), 1);
    assert_eq!(
        b.jobs().len(),
        2,
        "one job per import step, none duplicated: {:?}",
        b.jobs()
    );
}

/// Azure does not forget a file system because a front end restarted; neither may the
/// emulator, or stage's journal (saying Ready) and the control plane disagree. A create the
/// emulator was killed in the middle of is finished by the next one.
#[test]
fn the_emulator_keeps_its_resources_across_a_restart_and_finishes_a_create() {
    // At 1/100 of Azure's time a create takes 9 s: long enough to be killed inside.
    let mut b = bed(&["--time-scale", "1/100"], |y| y);
    let mut run = b.spawn_run(&[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, fs) = b.em.get(FS);
        if status == 200 {
            assert_eq!(fs["properties"]["provisioningState"], "Creating", "{fs}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no create was sent");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Both die, as on a reboot of the machine they share.
    b.restart_emulator(libc::SIGKILL, &[]);
    let _ = run.kill();
    let _ = run.wait();
    let (status, fs) = b.em.get(FS);
    assert_eq!(status, 200, "the file system was forgotten: {fs}");
    let o = b.run(None);
    assert_exit(&o, 0);
    b.check_results();
    let jobs = b.jobs();
    // A clean stop, then everything is still there: a rerun has nothing to do and starts
    // no job.
    b.restart_emulator(libc::SIGTERM, &[]);
    let (status, fs) = b.em.get(FS);
    assert_eq!(status, 200, "{fs}");
    assert_eq!(fs["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        fs["properties"]["hsm"]["archiveStatus"][0]["status"]["state"],
        "Completed"
    );
    let o = b.run(None);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "nothing to do");
    assert_eq!(b.jobs(), jobs);
    assert_eq!(b.filesystems(), 1);
}

/// The seed's Terraform makes the subnet and both containers; a pipeline that names a
/// missing or too small one is told so before anything is created (on Azure the create
/// would fail minutes in, or leave a file system that cannot grow).
#[test]
fn missing_or_small_prerequisites_are_refused_before_anything_is_created() {
    let b = bed(&[], |y| {
        y.replace("/subnets/amlfs", "/subnets/small")
            .replace("/genomics-logs", "/genomics-nologs")
    });
    b.em.create_subnet(&SUBNET.replace("/amlfs", "/small"), "10.0.0.0/28");
    let file = b.pipeline.to_str().unwrap();
    let o = run(&b.ws, &["plan", file], None);
    assert_exit(&o, 0);
    for want in [
        "cannot be created (run stops here)",
        "is /28: a 8 TiB file system needs /27 or larger",
        "logging container genomics-nologs does not exist",
    ] {
        assert_has(&o.stdout, want);
    }
    let o = b.run(None);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "cannot be created");
    assert_has(
        &o.stderr,
        "logging container genomics-nologs does not exist",
    );
    assert_has(&o.stderr, "nothing was created");
    let (status, _) = b.em.get(FS);
    assert_eq!(status, 404, "created regardless");
    let yaml = std::fs::read_to_string(&b.pipeline).unwrap();
    std::fs::write(&b.pipeline, yaml.replace("/subnets/small", "/subnets/gone")).unwrap();
    let o = b.run(None);
    assert_exit(&o, 1);
    assert_has(
        &o.stderr,
        "subnets/gone does not exist: create it first (IPv4, /27 or larger for 8 TiB)",
    );
    // Fixed, the run goes on, noting what Microsoft recommends and Azurite lacks.
    std::fs::write(
        &b.pipeline,
        yaml.replace("/subnets/small", "/subnets/amlfs")
            .replace("/genomics-nologs", "/genomics-logs"),
    )
    .unwrap();
    let o = b.logged(&["run", file]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "has no hierarchical namespace");
}

/// An enabled auto-import job never ends and holds the file system's one HSM slot: a run
/// that needs an import job stops, saying how to disable it, instead of waiting for ever;
/// once it is disabled (and has stopped) the run goes on.
#[test]
fn an_enabled_auto_import_job_stops_an_import_with_the_command_that_disables_it() {
    let b = bed(&[], |y| y);
    assert_exit(&b.run(None), 0);
    let auto = format!("{FS}/autoImportJobs/site-sync");
    let body = serde_json::json!({ "location": "eastus", "properties": { "adminStatus": "Enable", "autoImportPrefixes": ["/"] } });
    let (status, r) = b.em.request("PUT", &auto, Some(&body));
    assert_eq!(status, 201, "{r}");
    // A new sample: the import step needs a job.
    b.ws.write("more/S9.fastq.gz", "another sample\n");
    let o = run(
        &b.ws,
        &["export", "more", &b.az.url("genomics/samples")],
        None,
    );
    assert_exit(&o, 0);
    let file = b.pipeline.to_str().unwrap();
    let o = run(&b.ws, &["run", "--new", file], None);
    assert_exit(&o, 1);
    assert_has(
        &o.stderr,
        "auto-import job site-sync is enabled on genomics-scratch",
    );
    assert_has(
        &o.stderr,
        "az amlfs auto-import update --resource-group rg-stage --aml-filesystem-name genomics-scratch --auto-import-job-name site-sync --admin-status Disable",
    );
    let disable = serde_json::json!({ "properties": { "adminStatus": "Disable" } });
    let (status, r) = b.em.request("PATCH", &auto, Some(&disable));
    assert_eq!(status, 200, "{r}");
    let o = run(&b.ws, &["run", "--new", file], None);
    assert_exit(&o, 0);
    assert!(
        b.em.fs_dir("genomics-scratch")
            .join("samples/S9.fastq.gz")
            .is_file()
    );
}

#[test]
fn immutable_drift_is_refused_with_a_diff_and_nothing_changes() {
    let b = bed(&[], |y| y);
    assert_exit(&b.run(None), 0);
    let text_now = std::fs::read_to_string(&b.pipeline).unwrap();
    std::fs::write(
        &b.pipeline,
        text_now.replace("/subnets/amlfs", "/subnets/other"),
    )
    .unwrap();
    let o = run(&b.ws, &["run", "--new", b.pipeline.to_str().unwrap()], None);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "subnet: pipeline wants");
    assert_has(&o.stderr, "nothing was changed");
    let (_, fs) = b.em.get(FS);
    assert!(
        fs["properties"]["filesystemSubnet"]
            .as_str()
            .unwrap()
            .ends_with("/subnets/amlfs")
    );
}

#[test]
fn more_capacity_grows_the_file_system_in_place_with_an_expansion_job() {
    let b = bed(&[], |y| y);
    assert_exit(&b.run(None), 0);
    let yaml = std::fs::read_to_string(&b.pipeline).unwrap();
    std::fs::write(
        &b.pipeline,
        yaml.replace("capacity_tib: 8", "capacity_tib: 16"),
    )
    .unwrap();
    let o = run(&b.ws, &["run", "--new", b.pipeline.to_str().unwrap()], None);
    assert_exit(&o, 0);
    // Azure keeps what was asked at create and reports the grown size beside it; stage
    // reads the current one.
    let (_, fs) = b.em.get(FS);
    assert_eq!(fs["properties"]["storageCapacityTiB"], 8, "{fs}");
    assert_eq!(fs["properties"]["currentStorageCapacityTiB"], 16, "{fs}");
    let o = run(&b.ws, &["fs", "show", b.pipeline.to_str().unwrap()], None);
    assert_has(&o.stdout, "4000 MB/s (16 TiB x 250 MB/s per TiB)");
    let (status, job) = b.em.get(&format!("{FS}/expansionJobs/stage-grow-16tib"));
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["properties"]["status"]["state"], "Completed");
    assert_eq!(job["properties"]["newStorageCapacityTiB"], 16.0);
    // Shrinking cannot be done: refused as drift, nothing changed.
    std::fs::write(&b.pipeline, yaml).unwrap();
    let o = run(&b.ws, &["run", "--new", b.pipeline.to_str().unwrap()], None);
    assert_exit(&o, 1);
    assert_has(
        &o.stderr,
        "capacity: pipeline wants 8 TiB, Azure has 16 TiB",
    );
}

#[test]
fn teardown_deletes_only_after_a_verified_export() {
    let b = bed(&[], |y| format!("{y}\n  - teardown: {{}}\n"));
    let o = b.run(None);
    assert_exit(&o, 0);
    b.check_results();
    let (status, _) = b.em.get(FS);
    assert_eq!(status, 404, "the file system should be gone");
    // Nothing changed in the container: the next run creates no AMLFS to find that out.
    let o = b.run(None);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "are as run 1 left them");
    assert!(!text(&o.stderr).contains("created AMLFS"));
    let (status, _) = b.em.get(FS);
    assert_eq!(status, 404, "a file system was created again");
}

#[test]
fn teardown_with_an_unexported_output_is_refused_before_anything_is_created() {
    // The summary (merge's output) is exported by no step: deleting the file system would lose it.
    let b = bed(&[], |y| {
        format!(
            "{}\n  - teardown: {{}}\n",
            y.replace("outputs_of: [qc, merge]", "outputs_of: [qc]")
        )
    });
    let o = b.run(None);
    assert_exit(&o, 2);
    assert_has(
        &o.stderr,
        "teardown would delete `results/summary.tsv`, an output of step `merge`",
    );
    assert_eq!(b.filesystems(), 0);
    let (status, _) = b.em.get(FS);
    assert_eq!(status, 404);
}

#[test]
fn missing_provider_roles_that_we_may_not_grant_stop_the_run_before_creating() {
    let b = bed(&["--deny-role-assignments"], |y| y);
    let o = b.run(None);
    assert_exit(&o, 1);
    let err = text(&o.stderr);
    for needed in [
        "Storage Account Contributor and Storage Blob Data Contributor",
        "AuthorizationFailed",
        "nothing was created",
        "az role assignment create --assignee 4392ab71-2ce2-4b0d-8770-b352745c73f5 --role 'Storage Blob Data Contributor' --scope /subscriptions/",
    ] {
        assert!(err.contains(needed), "{needed:?} missing from:\n{err}");
    }
    assert_eq!(b.filesystems(), 0);
    let (status, _) = b.em.get(FS);
    assert_eq!(status, 404);
    // Once an owner grants them, the same run goes through without granting anything.
    b.em.grant_provider_roles(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg-stage/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"
    ));
    let o = b.run(None);
    assert_exit(&o, 0);
    b.check_results();
}

/// The instances' user data is valid cloud-config (Debian's `cloud-init schema`), and its
/// script valid sh that installs Microsoft's client for the running kernel.
fn check_user_data(ws: &Workspace, init: &str) {
    assert!(init.starts_with("#cloud-config\n"), "{init}");
    let file = ws.write("user-data.yaml", init);
    let o = std::process::Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&file)
        .output()
        .expect("cloud-init (apt-get install cloud-init)");
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let doc = &yaml_rust2::YamlLoader::load_from_str(init).unwrap()[0];
    let script = doc["write_files"][0]["content"].as_str().unwrap();
    let path = ws.write("stage-lustre-mount", script);
    let o = std::process::Command::new("sh")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    for want in [
        "https://packages.microsoft.com/repos/amlfs-$VERSION_CODENAME/",
        "^amlfs-lustre-client-",
        "apt-get install -y -q \"$pkg=$kernel\"",
        "lustre $options,_netdev 0 0\" >> /etc/fstab",
    ] {
        assert!(script.contains(want), "{want} missing from:\n{script}");
    }
    assert_eq!(
        doc["runcmd"][0][0].as_str(),
        Some("/usr/local/sbin/stage-lustre-mount")
    );
}

#[test]
fn a_scale_set_pool_runs_the_tasks_on_its_instances_then_scales_to_zero() {
    // Two sshd nodes stand in for the instances the emulator hands out. Lustre cannot be
    // mounted here: their `stat -f` says "lustre" for the mount once the test has them
    // finish booting (the file `booted`), as cloud-init's mount would.
    let nodes = sshd::Nodes::start_with(2, true, |dir| {
        let shim = dir.join("shim");
        std::fs::create_dir_all(&shim).unwrap();
        let stat = shim.join("stat");
        std::fs::write(
            &stat,
            format!(
                "#!/bin/sh
if [ \"$1\" = -f ] && [ -e {booted} ]; then echo lustre; exit 0; fi
exec /usr/bin/stat \"$@\"
",
                booted = dir.join("booted").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stat, std::fs::Permissions::from_mode(0o755)).unwrap();
        // sshd keeps the first SetEnv: the fast nodes' SHLVL=1 goes in this one.
        format!("SetEnv SHLVL=1 PATH={}:/usr/bin:/bin\n", shim.display())
    });
    let hosts = format!("--vmss-hosts={},{}", nodes.addr(0), nodes.addr(1));
    let key = nodes.dir.path().join("client.pub");
    let b = bed(&[&hosts], |y| {
        y.replace(
            "pool:\n  hosts: localhost\n  slots: 4\n",
            &format!(
                "pool:\n  slots: 2\n  ssh_config: {}\n  scale_set:\n    size: Standard_HB120rs_v3\n    instances: 2\n    admin_user: root\n    ssh_public_key: {}\n    scale_to_zero: true\n",
                nodes.ssh_config().display(),
                key.display()
            ),
        )
    });
    let plan = run(&b.ws, &["plan", b.pipeline.to_str().unwrap()], None);
    assert_exit(&plan, 0);
    assert_has(
        &plan.stdout,
        "create  scale set genomics-pool (2 × Standard_HB120rs_v3)",
    );
    assert_has(
        &plan.stdout,
        "scale_to_zero scales them to 0 after a successful run",
    );
    // Provisioned instances are not ready until their mount answers: nothing runs before.
    let mut child = stage(&b.ws, &["run", b.pipeline.to_str().unwrap()])
        .env("STAGE_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let said = common::announced_line(
        child.stderr.take().unwrap(),
        "waiting for 2 of 2 instances to mount Lustre",
        std::time::Duration::from_secs(60),
    );
    assert!(said, "the run never waited for the mounts");
    let mount = b.em.fs_dir("genomics-scratch");
    assert!(
        !mount.join("results").exists(),
        "a task ran before the mount"
    );
    std::fs::write(nodes.dir.path().join("booted"), "").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    b.check_results();
    let vmss = format!(
        "/subscriptions/{SUB}/resourceGroups/rg-stage/providers/Microsoft.Compute/virtualMachineScaleSets/genomics-pool?api-version=2024-07-01"
    );
    let (status, set) = b.em.request("GET", &vmss, None);
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["sku"]["capacity"], 0, "not scaled to zero: {set}");
    assert_eq!(set["sku"]["name"], "Standard_HB120rs_v3");
    // Every instance mounts the file system from its MGS at the pipeline's mount.
    use base64::Engine;
    let profile = &set["properties"]["virtualMachineProfile"];
    let init = base64::engine::general_purpose::STANDARD
        .decode(profile["osProfile"]["customData"].as_str().unwrap())
        .unwrap();
    let init = String::from_utf8(init).unwrap();
    check_user_data(&b.ws, &init);
    // With the options and source of Azure's own mount command.
    assert!(
        init.contains("source='127.0.0.1@tcp0:/lustrefs'")
            && init.contains("options='noatime,user_xattr'"),
        "{init}"
    );
    // The tasks ran over SSH on the instances.
    let status = run(
        &b.ws,
        &["status", "--tasks", b.pipeline.to_str().unwrap()],
        None,
    );
    let listing = text(&status.stdout);
    assert!(
        listing.contains(&nodes.addr(0)) || listing.contains(&nodes.addr(1)),
        "{listing}"
    );
    // A rerun has nothing to do and leaves the set at zero.
    let o = b.run(None);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "nothing to do");
    let plan = run(&b.ws, &["plan", b.pipeline.to_str().unwrap()], None);
    assert_has(
        &plan.stdout,
        "scale   scale set genomics-pool (2 × Standard_HB120rs_v3), from 0 instances",
    );
    // Another VM size is not changed in place: refused, the set untouched.
    let yaml = std::fs::read_to_string(&b.pipeline).unwrap();
    std::fs::write(
        &b.pipeline,
        yaml.replace("Standard_HB120rs_v3", "Standard_HB176rs_v4"),
    )
    .unwrap();
    // `stage exec` needs the hosts, so it ensures the set (a run with nothing to do does not).
    let o = run(
        &b.ws,
        &["exec", b.pipeline.to_str().unwrap(), "--", "true"],
        None,
    );
    assert!(!o.status.success());
    let said = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        said.contains("size: Standard_HB120rs_v3 (wanted Standard_HB176rs_v4)"),
        "{said}"
    );
    let (_, set) = b.em.request("GET", &vmss, None);
    assert_eq!(set["sku"]["capacity"], 0);
}

#[test]
fn an_auto_export_step_leaves_a_job_that_keeps_exporting() {
    let b = bed(&[], |y| {
        y.replace(
            "outputs_of: [qc, merge]",
            "paths: [results/]\n      auto: true",
        )
    });
    let o = b.run(None);
    assert_exit(&o, 0);
    b.check_results();
    let (status, job) =
        b.em.get(&format!("{FS}/autoExportJobs/stage-genomics-export"));
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["properties"]["adminStatus"], "Enable");
    assert_eq!(job["properties"]["status"]["state"], "InProgress");
    // After the run, a new result is exported without anyone asking.
    let fs = b.em.fs_dir("genomics-scratch");
    std::fs::write(fs.join("results/qc/late.tsv"), "late\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let dst = format!("late-{}", rand_suffix());
        let o = run(
            &b.ws,
            &["import", &b.az.url("genomics/results/qc"), &dst],
            None,
        );
        assert_exit(&o, 0);
        if b.ws.path().join(&dst).join("late.tsv").exists() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the auto-export job never exported late.tsv"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // A later run's import job cannot run beside it (one HSM job at a time): the job is
    // paused for the import and enabled again afterwards.
    let o = run(&b.ws, &["run", "--new", b.pipeline.to_str().unwrap()], None);
    assert_exit(&o, 0);
    let (_, job) =
        b.em.get(&format!("{FS}/autoExportJobs/stage-genomics-export"));
    assert_eq!(
        job["properties"]["adminStatus"],
        "Enable",
        "{job}\n{}",
        text(&o.stderr)
    );
    assert_eq!(job["properties"]["status"]["state"], "InProgress");

    // Killed while the job is paused for an import: the resumed run enables it again. A new
    // sample gives the resumed run a task to stop at, after its imports and before the
    // export step (which would enable its own job anyway).
    std::fs::create_dir_all(b.ws.path().join("more")).unwrap();
    std::fs::copy(
        b.ws.path()
            .join("pipelines/data/genomics/samples/S1.fastq.gz"),
        b.ws.path().join("more/S5.fastq.gz"),
    )
    .unwrap();
    let o = run(
        &b.ws,
        &["export", "more", &b.az.url("genomics/samples")],
        None,
    );
    assert_exit(&o, 0);
    let o = run(
        &b.ws,
        &["run", "--new", b.pipeline.to_str().unwrap()],
        Some("hsm.after-import-job"),
    );
    assert_eq!(
        o.status.code(),
        None,
        "should be killed: {}",
        text(&o.stderr)
    );
    let (_, job) =
        b.em.get(&format!("{FS}/autoExportJobs/stage-genomics-export"));
    assert_eq!(job["properties"]["adminStatus"], "Disable", "{job}");
    let o = b.run(Some("process.after-intent"));
    assert_eq!(
        o.status.code(),
        None,
        "should be killed: {}",
        text(&o.stderr)
    );
    let (_, job) =
        b.em.get(&format!("{FS}/autoExportJobs/stage-genomics-export"));
    assert_eq!(job["properties"]["adminStatus"], "Enable", "{job}");
    let o = b.run(None);
    assert_exit(&o, 0);
    let (_, job) =
        b.em.get(&format!("{FS}/autoExportJobs/stage-genomics-export"));
    assert_eq!(job["properties"]["adminStatus"], "Enable", "{job}");
}

#[test]
fn throttling_and_server_errors_from_arm_are_retried() {
    let b = bed(&["--throttle-every", "4", "--error-every", "7"], |y| y);
    let o = b.run(None);
    assert_exit(&o, 0);
    b.check_results();
}

#[test]
fn a_failed_import_job_fails_the_step_and_says_why() {
    let b = bed(&["--fail-jobs"], |y| y);
    let o = b.run(None);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "injected failure");
}

/// Waits until the emulator lists an import job whose name contains `part`.
fn wait_for_job(b: &Bed, part: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _) = b.em.get(FS);
        let names = if status == 200 {
            b.em.list(&format!("{FS}/importJobs"))
        } else {
            Vec::new()
        };
        let found = names
            .iter()
            .filter_map(|j| j["name"].as_str())
            .find(|n| n.contains(part));
        if let Some(j) = found {
            return j.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job {part}: {:?}",
            b.jobs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn job_state(b: &Bed, name: &str) -> (String, String) {
    let (_, j) = b.em.get(&format!("{FS}/importJobs/{name}"));
    (
        j["properties"]["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        j["properties"]["adminStatus"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn interrupt_during_import(b: &Bed, extra: &[&str]) -> String {
    let child = b.spawn_run(extra);
    let job = wait_for_job(b, "-import");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    job
}

#[test]
fn ctrl_c_cancels_the_import_job_and_a_rerun_starts_it_again() {
    let b = bed(&["--job-delay", "2s"], |y| y);
    let job = interrupt_during_import(&b, &[]);
    // AMLFS takes its time to cancel: Cancelling, then Canceled.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while job_state(&b, &job).0 == "Cancelling" {
        assert!(std::time::Instant::now() < deadline, "never Canceled");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(job_state(&b, &job), ("Canceled".into(), "Cancel".into()));
    let o = b.run(None);
    assert_exit(&o, 0);
    b.check_results();
    assert_eq!(job_state(&b, &job).0, "Completed");
}

#[test]
fn ctrl_c_with_detach_leaves_the_job_running_and_a_rerun_reattaches() {
    let b = bed(&["--job-delay", "2s"], |y| y);
    let job = interrupt_during_import(&b, &["--detach"]);
    assert_eq!(job_state(&b, &job).1, "Active");
    let o = b.run(None);
    assert_exit(&o, 0);
    b.check_results();
    assert_eq!(
        b.jobs().len(),
        2,
        "reattached, not resubmitted: {:?}",
        b.jobs()
    );
}

/// The emulator's import job counts blobs as it copies them, as AMLFS does, and a run shows
/// those counts while it waits rather than only when the job ends.
#[test]
fn an_import_job_reports_its_progress_while_it_runs() {
    let b = bed(&[], |y| y);
    // A first run creates the file system, whose automatic import takes what is there now.
    assert_exit(&b.run(None), 0);
    const EXTRA: usize = 1500;
    for i in 0..EXTRA {
        b.ws.write(&format!("extra/x{i:04}.txt"), format!("{i}\n"));
    }
    let o = run(
        &b.ws,
        &["export", "extra", &b.az.url("genomics/reference/extra")],
        None,
    );
    assert_exit(&o, 0);
    let o = run(
        &b.ws,
        &[
            "--output",
            "json",
            "run",
            "--new",
            b.pipeline.to_str().unwrap(),
        ],
        None,
    );
    assert_exit(&o, 0);
    let seen: Vec<u64> = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "transfer" && e["step"] == "import")
        .filter_map(|e| e["files"].as_u64())
        .collect();
    let total = EXTRA as u64;
    assert!(
        seen.iter().any(|&n| n > 0 && n < total),
        "no count between 0 and {total} while the job ran: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    // Counted by the job, which reports no sizes: no "(0 B)" for 1,500 files.
    assert_has(
        &o.stdout,
        r#""step":"import","summary":"1500 files imported, 5 up to date""#,
    );
}

/// An archive's percentComplete moves while it runs (the emulator's as AMLFS's), and the run
/// turns it into files and bytes of what differed, so a long export shows progress and an
/// ETA instead of a spinner alone.
#[test]
fn an_archive_reports_its_progress_while_it_runs() {
    let b = bed(&[], |y| {
        y.replace(
            "        mv {{output}}.part {{output}}",
            "        mv {{output}}.part {{output}}\n        mkdir -p results/many && for i in $(seq 400); do echo $i > results/many/{{stem}}-$i; done",
        )
        .replace("outputs_of: [qc, merge]", "paths: [results/]")
    });
    let o = run(
        &b.ws,
        &["--output", "json", "run", b.pipeline.to_str().unwrap()],
        None,
    );
    assert_exit(&o, 0);
    let seen: Vec<(u64, u64)> = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "transfer" && e["step"] == "export")
        .filter_map(|e| Some((e["files"].as_u64()?, e["found_files"].as_u64()?)))
        .collect();
    let total = 4 * 400 + 5;
    assert!(
        seen.iter()
            .any(|&(n, of)| n > 0 && n < total && of == total),
        "no count between 0 and {total} of {total} while the archive ran: {seen:?}"
    );
    assert_has(&o.stdout, "1605 files exported");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_with_errors_under_max_errors_completes_partially() {
    let b = bed(&[], |y| y.replace("max_errors: 0", "max_errors: -1"));
    let c = azurite::raw(&b.az, "genomics");
    azurite::put(&c, "samples/../../escape.fastq.gz", b"evil", &[]).await;
    let ws = &b.ws;
    let pipeline = b.pipeline.to_str().unwrap().to_string();
    let o = tokio::task::spawn_blocking({
        let cmd = stage(ws, &["run", &pipeline]).output();
        move || cmd
    })
    .await
    .unwrap()
    .unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stderr, "error(s) reported by import job");
    let (_, job) =
        b.em.get(&format!("{FS}/importJobs/{}", wait_for_job(&b, "-import")));
    assert_eq!(job["properties"]["status"]["state"], "CompletedPartial");
    assert!(!b.em.data.path().join("escape.fastq.gz").exists());
    assert!(
        !b.em
            .data
            .path()
            .join("filesystems/escape.fastq.gz")
            .exists()
    );
}

/// On an AMLFS node the Slurm prolog turns `#STAGE in` lines for the file system's own
/// container into import jobs and copies the rest itself, restores `#STAGE restore` paths,
/// and when Slurm runs it again (a requeue) finds its job instead of starting another; the
/// epilog archives outputs there the same way.
#[test]
fn slurm_hooks_on_an_amlfs_node_stage_through_its_hsm() {
    let b = bed(&[], |y| y);
    assert_exit(&b.run(None), 0);
    let fs_dir = b.em.fs_dir("genomics-scratch");
    b.ws.write("more/S7.fastq.gz", "a new sample\n");
    let o = run(
        &b.ws,
        &["export", "more", &b.az.url("genomics/samples")],
        None,
    );
    assert_exit(&o, 0);
    let script = b.ws.write(
        "job.sh",
        format!(
            "#!/bin/sh\n#STAGE in {} {}/samples\n#STAGE in {} {}/copied\n#STAGE restore {}/reference\n#STAGE conflict skip\nsrun true\n",
            b.az.url("genomics/samples"),
            fs_dir.display(),
            b.az.url("genomics/reference"),
            b.ws.path().display(),
            fs_dir.display()
        ),
    );
    let hook = |which: &str, script: &std::path::Path| {
        let mut c = stage(
            &b.ws,
            &["slurm", which, "--script", script.to_str().unwrap()],
        );
        c.env("SLURM_JOB_ID", "4242")
            .env("STAGE_AMLFS", FS)
            .env("STAGE_AMLFS_MOUNT", &fs_dir)
            .env("STAGE_ARM_ENDPOINT", b.em.endpoint());
        c.output().unwrap()
    };
    let jobs_before = b.jobs().len();
    let o = hook("prolog", &script);
    assert_exit(&o, 0);
    assert_eq!(
        std::fs::read_to_string(fs_dir.join("samples/S7.fastq.gz")).unwrap(),
        "a new sample\n"
    );
    assert!(
        b.jobs().iter().any(|j| j == "slurm-4242-1"),
        "{:?}",
        b.jobs()
    );
    assert_eq!(b.jobs().len(), jobs_before + 1, "{:?}", b.jobs());
    // The reference lives in the same container but is wanted elsewhere: copied directly.
    assert_has(&o.stderr, "copying directly");
    assert!(b.ws.path().join("copied/chr21-mini.fa").is_file());
    assert_has(&o.stderr, "reference: 1 files");

    let o = hook("prolog", &script);
    assert_exit(&o, 0);
    assert_eq!(b.jobs().len(), jobs_before + 1, "{:?}", b.jobs());

    // The epilog: an output in the file system's own container goes out by archive (Lustre
    // then knows it is archived); one elsewhere is copied directly.
    std::fs::create_dir_all(fs_dir.join("out-4242")).unwrap();
    std::fs::write(fs_dir.join("out-4242/result.txt"), "result\n").unwrap();
    b.ws.write("local-out/log.txt", "log\n");
    let outs = b.ws.write(
        "outs.sh",
        format!(
            "#!/bin/sh\n#STAGE out {}/out-4242 {}\n#STAGE out {}/local-out {}\n#STAGE out {}/never-written {}\n",
            fs_dir.display(),
            b.az.url("genomics/out-4242"),
            b.ws.path().display(),
            b.az.url("elsewhere/logs-4242"),
            fs_dir.display(),
            b.az.url("genomics/never-written"),
        ),
    );
    let o = hook("epilog", &outs);
    assert_exit(&o, 0);
    // Only the output the job never wrote failed (recorded; the node stays up).
    let failed: Vec<String> = text(&o.stderr)
        .lines()
        .filter(|l| l.contains("FAILED"))
        .map(str::to_string)
        .collect();
    assert_eq!(failed.len(), 1, "{}", text(&o.stderr));
    assert!(failed[0].contains("never-written: not found"), "{failed:?}");
    let (_, fs) = b.em.get(FS);
    let archived = fs["properties"]["hsm"]["archiveStatus"].to_string();
    assert!(
        archived.contains("out-4242"),
        "no archive of out-4242: {archived}"
    );
    for (url, file, want) in [
        ("genomics/out-4242", "result.txt", "result\n"),
        ("elsewhere/logs-4242", "log.txt", "log\n"),
    ] {
        let dst = format!("check-{}", rand_suffix());
        assert_exit(&run(&b.ws, &["import", &b.az.url(url), &dst], None), 0);
        assert_eq!(
            std::fs::read_to_string(b.ws.path().join(&dst).join(file)).unwrap(),
            want
        );
    }

    // A path to restore that is not there fails the prolog (Slurm holds the job).
    let missing = b.ws.write(
        "missing.sh",
        format!("#!/bin/sh\n#STAGE restore {}/nope\n", fs_dir.display()),
    );
    let o = hook("prolog", &missing);
    assert_exit(&o, 1);
    assert_has(&o.stderr, "FAILED restore");
}

/// Spawns `stage run` with `extra`, waits until the emulator shows an archive running, then
/// sends `signal`: the run must answer at once (well before the held archive could end).
fn signal_during_archive(b: &Bed, extra: &[&str], signal: i32) -> Output {
    let child = b.spawn_run(extra);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while archive_state(b) != "InProgress" {
        assert!(std::time::Instant::now() < deadline, "no archive started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sent = std::time::Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let o = child.wait_with_output().unwrap();
    // The archive is held for 10 minutes: anything near that is a run that kept waiting.
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(60),
        "the run kept waiting on the archive after the signal"
    );
    o
}

fn archive_state(b: &Bed) -> String {
    let (_, fs) = b.em.get(FS);
    fs["properties"]["hsm"]["archiveStatus"][0]["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn sigterm_during_an_archive_cancels_it_and_exits_130() {
    let b = bed(&["--job-delay", "archive:600s"], |y| y);
    let o = signal_during_archive(&b, &[], libc::SIGTERM);
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while archive_state(&b) != "Canceled" {
        assert!(
            std::time::Instant::now() < deadline,
            "archive left {}",
            archive_state(&b)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = run(&b.ws, &["status", b.pipeline.to_str().unwrap()], None);
    assert_has(&o.stdout, "interrupted");
}

#[test]
fn sigint_with_detach_during_an_archive_leaves_it_running() {
    let b = bed(&["--job-delay", "archive:600s"], |y| y);
    let o = signal_during_archive(&b, &["--detach"], libc::SIGINT);
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    assert_eq!(archive_state(&b), "InProgress");
}

/// AMLFS refuses a second HSM job of any kind while one runs. A job stage did not start,
/// listed on the second page of the file system's jobs, holds the slot: the run waits for it
/// and then succeeds, where sending its own job at once would have met a 409.
#[test]
fn a_run_waits_for_a_foreign_job_on_any_page_then_runs() {
    let b = bed(&["--job-delay", "import:2s"], |y| y);
    assert_exit(&b.run(None), 0);
    let foreign = |name: &str| {
        let (status, body) = b.em.request(
            "PUT",
            &format!("{FS}/importJobs/{name}"),
            Some(&serde_json::json!({ "properties": { "importPrefixes": ["/reference"], "conflictResolutionMode": "Skip" } })),
        );
        assert_eq!(status, 201, "{body}");
    };
    foreign("a-filler");
    while job_state(&b, "a-filler").0 != "Completed" {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let jobs = b.jobs();
    assert!(jobs.len() >= 3, "{jobs:?}");
    // Named to sort last: the list's second page.
    foreign("zz-someone-else");
    let (_, page) = b.em.get(&format!("{FS}/importJobs"));
    assert!(
        !page["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "zz-someone-else"),
        "the foreign job should be past the first page: {page}"
    );
    // A new sample, so that the run has an import job to start.
    let sample = |name: &str| {
        b.ws.write(&format!("more-{name}/{name}"), "another sample\n");
        let o = run(
            &b.ws,
            &[
                "export",
                &format!("more-{name}"),
                &b.az.url("genomics/samples"),
            ],
            None,
        );
        assert_exit(&o, 0);
    };
    sample("S9.fastq.gz");
    let o = b.logged(&["run", "--new", b.pipeline.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "waiting for import job zz-someone-else");
    // And an archive of someone else's: the next import waits for it too.
    let (status, _) = b.em.request(
        "POST",
        &format!("{FS}/archive"),
        Some(&serde_json::json!({ "filesystemPath": "/reference" })),
    );
    assert_eq!(status, 200);
    sample("S10.fastq.gz");
    let o = run(&b.ws, &["run", "--new", b.pipeline.to_str().unwrap()], None);
    assert_exit(&o, 0);
    let fs = b.em.fs_dir("genomics-scratch");
    assert!(fs.join("samples/S10.fastq.gz").is_file());
}

/// A file system that failed to provision stops every run at ensure. `plan` says so, and
/// `stage fs delete` is the way out that works; a working one needs --force.
#[test]
fn a_failed_file_system_is_reported_and_fs_delete_removes_it() {
    let b = bed(&["--fail-create"], |y| y);
    let o = b.run(None);
    assert_exit(&o, 1);
    assert_has(
        &o.stderr,
        "failed to provision; delete it with `stage fs delete",
    );
    let (_, fs) = b.em.get(FS);
    assert_eq!(fs["properties"]["provisioningState"], "Failed");
    let file = b.pipeline.to_str().unwrap();
    let o = run(&b.ws, &["plan", file], None);
    assert_has(
        &o.stdout,
        "is in state Failed; the run stops here until `stage fs delete",
    );
    let o = run(&b.ws, &["fs", "delete", file], None);
    assert_exit(&o, 0);
    let (status, _) = b.em.get(FS);
    assert_eq!(status, 404, "deleted");
    let o = run(&b.ws, &["fs", "delete", file], None);
    assert_exit(&o, 0);
    assert_has(&o.stdout, "does not exist");
}

#[test]
fn fs_delete_of_a_working_file_system_needs_force() {
    let b = bed(&[], |y| y);
    assert_exit(&b.run(None), 0);
    let file = b.pipeline.to_str().unwrap();
    let o = run(&b.ws, &["fs", "delete", file], None);
    assert_exit(&o, 2);
    assert_has(&o.stderr, "may hold results not yet exported");
    let (status, _) = b.em.get(FS);
    assert_eq!(status, 200, "kept");
    // plan says what ensure would do: grow in place for more capacity, refuse a SKU change.
    let yaml = std::fs::read_to_string(&b.pipeline).unwrap();
    std::fs::write(
        &b.pipeline,
        yaml.replace("capacity_tib: 8", "capacity_tib: 16"),
    )
    .unwrap();
    let o = run(&b.ws, &["plan", file], None);
    assert_has(&o.stdout, "to 16 TiB (expansion job)");
    std::fs::write(
        &b.pipeline,
        yaml.replace("AMLFS-Durable-Premium-250", "AMLFS-Durable-Premium-500"),
    )
    .unwrap();
    let o = run(&b.ws, &["plan", file], None);
    assert_has(&o.stdout, "settings that cannot change differ");
    std::fs::write(&b.pipeline, &yaml).unwrap();
    let o = run(&b.ws, &["fs", "delete", "--force", file], None);
    assert_exit(&o, 0);
    let (status, _) = b.em.get(FS);
    assert_eq!(status, 404, "deleted");
}

/// Role assignments take minutes to take effect; a create sent at once is refused. Ensure
/// grants the provider its roles, then retries the create until they are in effect.
#[test]
fn a_create_right_after_granting_roles_waits_for_them_to_propagate() {
    // At 1/100 of Azure's time, propagation takes 1.2 s.
    let b = bed(&["--time-scale", "1/100"], |y| y);
    let o = b.logged(&["run", b.pipeline.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_has(&o.stderr, "not in effect yet");
    b.check_results();
}
