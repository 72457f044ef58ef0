//! stage against what Azure really sent: the recorded response bodies and headers of
//! Microsoft's own SDK tests (`tests/fixtures/recordings`, see its SOURCE.md), replayed for
//! stage's requests. The emulator is checked against the spec; this checks stage against
//! Azure's bytes: ids in another case, floats where integers were expected, `hsm: {}` while
//! creating, empty-bodied 200s, `Location` with `monitor=true`.
//!
//! The data plane is real (Azurite, and a directory for the Lustre mount); what an HSM job
//! does to it, which a recording cannot replay, the replay does with `stage` itself.

#[path = "common/azurite.rs"]
mod azurite;
mod common;
#[path = "common/replay.rs"]
mod replay;

use std::sync::{Arc, Mutex};

use azurite::{Azurite, stage};
use common::*;
use replay::{Answer, Replay, Request, recording};
use serde_json::{Value, json};

const SUB: &str = "0a715a3b-8a16-43ba-a6bb-1e38ad050791";
const GROUP: &str = "acctest43511";

fn fs_path(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.StorageCache/amlFilesystems/{name}"
    )
}

/// The recorded `Azure-AsyncOperation` status URL shape, at the replay.
fn operation(base: &str, id: &str) -> String {
    format!(
        "{base}/subscriptions/{SUB}/providers/Microsoft.StorageCache/locations/canadacentral/ascOperations/{id}?api-version=2026-01-01"
    )
}

/// A pipeline for the recorded file system `name`, as the recording's settings have it.
fn pipeline(
    ws: &Workspace,
    az: &Azurite,
    endpoint: &str,
    name: &str,
    fs: &str,
    steps: &str,
) -> String {
    let blob = format!("http://127.0.0.1:{}/devstoreaccount1", az.port);
    let text = format!(
        r#"name: replay
target: azure
azure:
  subscription: {SUB}
  resource_group: {GROUP}
  location: canadacentral
  endpoint: {endpoint}
filesystem:
  name: {name}
{fs}  mount: {mount}
  hsm:
    container: {blob}/importcontainer
    logging_container: {blob}/loggingcontainer
    storage_account: /subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Storage/storageAccounts/acctest43511sa
    import_prefixes: [/]
pool:
  hosts: localhost
  slots: 2
steps:
{steps}"#,
        mount = ws.path().join("mnt").display()
    );
    ws.write("replay.yaml", text).display().to_string()
}

/// The recorded file system after its archive, with the archive's path the one asked for
/// (the recording archived `/`).
fn with_archive(name: &str, path: &str) -> Value {
    let mut fs = recording(name);
    fs["properties"]["hsm"]["archiveStatus"][0]["filesystemPath"] = json!(path);
    fs
}

#[derive(Default)]
struct Azure {
    /// The archive asked for, and how often the file system was read since.
    archive: Option<(String, usize)>,
    job: Option<String>,
    deleted: bool,
}

/// An existing file system: ensure keeps it, an import job runs, results are archived and
/// verified, teardown deletes it; `fs show` reads it. Every answer is a recorded one.
#[test]
fn a_run_against_recorded_azure_imports_archives_verifies_and_tears_down() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let blob = format!("http://127.0.0.1:{}/devstoreaccount1", az.port);
    // The inputs are in the container, and (as the file system's initial import left them)
    // in the mount.
    for i in 0..3 {
        ws.write(&format!("inputs/data/s{i}.txt"), format!("sample {i}\n"));
    }
    assert_exit(
        &stage(
            &ws,
            &[
                "export",
                "inputs/data",
                &format!("{blob}/importcontainer/data"),
            ],
        )
        .output()
        .unwrap(),
        0,
    );
    copy_dir(&ws.path().join("inputs"), &ws.path().join("mnt"));
    let mount = ws.path().join("mnt");
    let fs = fs_path(GROUP);
    let azure = Arc::new(Mutex::new(Azure::default()));
    let (fs2, a2, mount2, blob2) = (fs.clone(), azure.clone(), mount.clone(), blob.clone());
    let replay = Replay::start(move |r: &Request, base: &str| {
        let mut a = a2.lock().unwrap();
        let jobs = format!("{fs2}/importJobs");
        if r.is("GET", &fs2) {
            if a.deleted {
                return Some(Answer::json(
                    404,
                    &json!({ "error": { "code": "ResourceNotFound", "message": "not found" } }),
                ));
            }
            return Some(Answer::json(
                200,
                &match &mut a.archive {
                    // Right after the POST it is in progress, a minute later completed.
                    Some((path, reads)) => {
                        *reads += 1;
                        let name = if *reads <= 2 {
                            "fs_get_2026_archive_inprogress.json"
                        } else {
                            "fs_get_2026_archive_completed.json"
                        };
                        with_archive(name, path)
                    }
                    None => recording("fs_get_2026_archive_completed.json"),
                },
            ));
        }
        if r.is("GET", &jobs) {
            return Some(Answer::json(200, &recording("importjobs_list.json")));
        }
        if r.under("PUT", &format!("{jobs}/")) {
            let name = r.path.rsplit('/').next().unwrap().to_string();
            let mut job = recording("importjob_put_201.json");
            job["name"] = json!(name);
            job["id"] = json!(r.path);
            job["properties"]["importPrefixes"] = r.json()["properties"]["importPrefixes"].clone();
            a.job = Some(name);
            // The data plane's part of the job: the blobs into the mount (already there).
            return Some(Answer::json(201, &job).header(
                "Azure-AsyncOperation",
                &operation(base, "9f2fc729-79db-4cba-a0fd-53dd87015dad"),
            ));
        }
        if r.under("GET", &format!("{jobs}/")) {
            let name = r.path.rsplit('/').next().unwrap();
            if a.job.as_deref() != Some(name) {
                return Some(Answer::json(
                    404,
                    &json!({ "error": { "code": "ResourceNotFound", "message": "not found" } }),
                ));
            }
            let mut job = recording("importjob_get_completed.json");
            job["name"] = json!(name);
            job["id"] = json!(r.path);
            return Some(Answer::json(200, &job));
        }
        if r.path.contains("/ascOperations/") {
            if r.query.contains("monitor=true") {
                return Some(Answer::empty(200));
            }
            return Some(Answer::json(200, &recording("asyncop_succeeded.json")));
        }
        // Lists the recordings hold no entries of: empty, as Azure answers them.
        for kind in ["autoExportJobs", "autoImportJobs", "expansionJobs"] {
            if r.is("GET", &format!("{fs2}/{kind}")) {
                return Some(Answer::json(200, &json!({ "value": [] })));
            }
        }
        if r.is("POST", &format!("{fs2}/archive")) {
            let path = r.json()["filesystemPath"]
                .as_str()
                .unwrap_or("/")
                .to_string();
            // What AMLFS's archive does to the data: the path's files into the container.
            let rel = path.trim_start_matches('/');
            let ws_dir = mount2.parent().unwrap();
            let o = std::process::Command::new(STAGE)
                .current_dir(ws_dir)
                .args(["--state-dir", "archive-state", "-q", "export"])
                .arg(mount2.join(rel))
                .arg(format!("{blob2}/importcontainer/{rel}"))
                .env(
                    "AZURE_STORAGE_CONNECTION_STRING",
                    azurite::CONNECTION_STRING,
                )
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o.stderr));
            a.archive = Some((path, 0));
            // Recorded: 200 with an empty body and no operation headers.
            return Some(Answer::empty(200));
        }
        if r.is("DELETE", &fs2) {
            a.deleted = true;
            // Recorded (az CLI): 202 with only Location, ending in monitor=true.
            let location =
                operation(base, "5b9c8c9e-0000-4000-8000-000000000001") + "&monitor=true";
            return Some(Answer::empty(202).header("Location", &location));
        }
        None
    });
    let file = pipeline(
        &ws,
        &az,
        &replay.endpoint(),
        GROUP,
        "  sku: AMLFS-Durable-Premium-250\n  capacity_tib: 8\n  zone: \"2\"\n  subnet: /subscriptions/0a715a3b-8a16-43ba-a6bb-1e38ad050791/resourceGroups/acctest43511/providers/Microsoft.Network/virtualNetworks/acctest43511/subnets/fsSubnet\n  maintenance_window: { day: Wednesday, time: \"09:00\" }\n",
        r#"  - ensure: {}
  - import: { prefixes: [data/] }
  - process:
      name: sum
      foreach: data/*.txt
      outputs: ["results/{{stem}}.sum"]
      command: mkdir -p results && cksum {{input}} > {{output}}
  - export: { outputs_of: [sum] }
  - teardown: {}
"#,
    );
    let o = stage(&ws, &["fs", "show", &file]).output().unwrap();
    assert_exit(&o, 0);
    for want in [
        "Succeeded",
        "The cluster is available",
        "2000 MB/s",
        &format!("10.5.0.4@tcp0:/lustrefs {}", mount.display()),
        "last archive        / Completed (100%)",
    ] {
        assert_has(&o.stdout, want);
    }
    let o = stage(&ws, &["run", "--force", &file]).output().unwrap();
    assert_exit(&o, 0);
    replay.assert_all_answered();
    assert_eq!(replay.count("PUT", "/importJobs/"), 1, "one import job");
    assert_eq!(
        replay.count("POST", "/archive"),
        1,
        "one archive for the step"
    );
    assert_eq!(replay.count("DELETE", "/amlFilesystems/"), 1, "torn down");
    assert_has(&o.stderr, "3 files exported");
    assert_has(&o.stderr, "3 verified");
    let archived = azure.lock().unwrap().archive.clone().unwrap().0;
    assert_eq!(archived, "/results");
}

/// A file system Azure is still creating (a run killed while it provisioned, resumed): the
/// recorded 201 body, with `hsm: {}` and empty client info, is waited for, not refused as
/// drift; once ready its settings are compared.
#[test]
fn a_file_system_azure_is_still_creating_is_waited_for_not_refused() {
    let az = Azurite::start();
    let ws = Workspace::new();
    let name = "acctest43511-1";
    let fs = fs_path(name);
    let reads = Arc::new(Mutex::new(0usize));
    let (fs2, reads2) = (fs.clone(), reads.clone());
    let replay = Replay::start(move |r: &Request, _base: &str| {
        if !r.is("GET", &fs2) {
            return None;
        }
        let mut n = reads2.lock().unwrap();
        *n += 1;
        let creating = recording("fs_put_201_creating.json");
        if *n <= 3 {
            return Some(Answer::json(200, &creating));
        }
        // Ready: what the recorded ready file system reports, on this one.
        let done = recording("fs_get_2026_archive_completed.json");
        let mut ready = creating;
        let p = &mut ready["properties"];
        p["provisioningState"] = json!("Succeeded");
        p["currentStorageCapacityTiB"] = json!(16.0);
        for key in ["health", "clientInfo", "hsm"] {
            p[key] = done["properties"][key].clone();
        }
        Some(Answer::json(200, &ready))
    });
    let file = pipeline(
        &ws,
        &az,
        &replay.endpoint(),
        name,
        "  sku: AMLFS-Durable-Premium-250\n  capacity_tib: 16\n  zone: \"1\"\n  subnet: /subscriptions/0a715a3b-8a16-43ba-a6bb-1e38ad050791/resourceGroups/acctest43511/providers/Microsoft.Network/virtualNetworks/acctest43511/subnets/acctest43511\n  maintenance_window: { day: Saturday, time: \"03:00\" }\n",
        "  - ensure: {}\n",
    );
    let o = stage(&ws, &["fs", "show", &file]).output().unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stdout, "Creating");
    assert_has(&o.stdout, "Transitioning");
    let o = stage(&ws, &["plan", &file]).output().unwrap();
    assert_exit(&o, 0);
    assert_has(&o.stdout, "wait    AMLFS acctest43511-1");
    let o = stage(&ws, &["run", &file]).output().unwrap();
    assert_exit(&o, 0);
    replay.assert_all_answered();
    assert!(*reads.lock().unwrap() > 3, "ready was never read");
    assert_eq!(
        replay.count("PUT", "/amlFilesystems/"),
        0,
        "no second create"
    );
}

/// Every recorded body reads as stage's client types read them, with the values Azure meant.
#[test]
fn every_recorded_body_parses_with_the_values_azure_meant() {
    use stage::azure::models::{AmlFilesystem, AsyncOperation, ImportJob};
    let fs = |name: &str| -> AmlFilesystem { serde_json::from_value(recording(name)).unwrap() };
    let done = fs("fs_get_2026_archive_completed.json");
    assert_eq!(done.current_capacity_tib(), Some(8.0));
    assert_eq!(done.archive_state(), Some("Completed"));
    assert_eq!(done.properties.throughput_mbps, Some(2000.0));
    let running = fs("fs_get_2026_archive_inprogress.json");
    assert_eq!(running.archive_state(), Some("InProgress"));
    // `percentComplete` as an integer 0 here, a float elsewhere: both numbers.
    assert!(running.last_archive().is_some());
    let creating = fs("fs_put_201_creating.json");
    assert_eq!(
        creating.properties.provisioning_state.as_deref(),
        Some("Creating")
    );
    assert!(creating.properties.hsm_settings().is_none(), "hsm: {{}}");
    for item in ["fs_list_item_mcp.json", "fs_list_item_importPrefix.json"] {
        let f = fs(item);
        assert!(f.properties.hsm_settings().is_some(), "{item}");
        assert_eq!(
            f.properties.provisioning_state.as_deref(),
            Some("Succeeded")
        );
    }
    let job: ImportJob = serde_json::from_value(recording("importjob_get_completed.json")).unwrap();
    assert_eq!(
        job.properties.status.and_then(|s| s.state).as_deref(),
        Some("Completed")
    );
    let list = recording("importjobs_list.json");
    let jobs: Vec<ImportJob> = serde_json::from_value(list["value"].clone()).unwrap();
    assert_eq!(jobs.len(), 2);
    let op: AsyncOperation = serde_json::from_value(recording("asyncop_succeeded.json")).unwrap();
    assert_eq!(op.status, "Succeeded");
}
