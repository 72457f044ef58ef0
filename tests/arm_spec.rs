//! The ARM wire format against Microsoft's spec for AMLFS 2026-01-01 (tests/fixtures, MIT):
//! the spec's examples round-trip through the client's types, and what the emulator returns
//! validates against the spec's definitions.

#[path = "common/azurite.rs"]
mod azurite;
mod common;
#[path = "common/emulator.rs"]
mod emulator;

use std::path::Path;

use serde_json::{Value, json};
use stage::azure::models::{AmlFilesystem, ImportJob, ImportJobList};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/amlfs-2026-01-01"
);

fn load(rel: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Integers and floats compare by value (the types read numbers leniently as f64).
fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(body: &Value, what: &str) {
    let parsed: T = serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        normalize(&back),
        normalize(body),
        "{what} changed in a round trip"
    );
}

#[test]
fn the_spec_examples_round_trip_through_the_client_types() {
    let mut checked = 0;
    for entry in std::fs::read_dir(Path::new(FIXTURES).join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let example = load(&format!("examples/{name}"));
        if let Some(req) = example["parameters"].get("amlFilesystem") {
            round_trip::<AmlFilesystem>(req, &format!("{name} request"));
            checked += 1;
        }
        if let Some(req) = example["parameters"].get("importJob") {
            round_trip::<ImportJob>(req, &format!("{name} request"));
            checked += 1;
        }
        for (code, resp) in example["responses"].as_object().unwrap() {
            let Some(body) = resp.get("body") else {
                continue;
            };
            let what = format!("{name} {code}");
            if name.starts_with("amlFilesystems_") {
                round_trip::<AmlFilesystem>(body, &what);
            } else if name.contains("List") {
                round_trip::<ImportJobList>(body, &what);
            } else {
                round_trip::<ImportJob>(body, &what);
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} bodies checked");
}

/// A validator for the subset of Swagger 2.0 the spec uses: `$ref`, `allOf`, `properties`,
/// `type`, `enum`, `items`, `additionalProperties`. References outside the file (ARM's common
/// types: id, name, type, location, tags, systemData) are accepted as such.
struct Spec {
    defs: Value,
}

const COMMON: &[&str] = &["id", "name", "type", "location", "tags", "systemData"];

impl Spec {
    fn resolve<'a>(&'a self, schema: &'a Value) -> Option<&'a Value> {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix("#/definitions/")
                .and_then(|n| self.defs.get(n)),
            None => Some(schema),
        }
    }

    /// Properties a schema allows, following allOf; `external` says whether a common type
    /// contributed (whose properties are not in this file).
    fn properties(
        &self,
        schema: &Value,
        out: &mut serde_json::Map<String, Value>,
        external: &mut bool,
    ) {
        let Some(schema) = self.resolve(schema) else {
            *external = true;
            return;
        };
        if let Some(p) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in p {
                out.insert(k.clone(), v.clone());
            }
        }
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.properties(part, out, external);
        }
    }

    fn check(&self, v: &Value, schema: &Value, at: &str, problems: &mut Vec<String>) {
        let Some(schema) = self.resolve(schema) else {
            return;
        };
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(v)
        {
            problems.push(format!("{at}: {v} is not one of {options:?}"));
        }
        let ty = schema.get("type").and_then(Value::as_str);
        let ok = match (ty, v) {
            (Some("string"), Value::String(_))
            | (Some("boolean"), Value::Bool(_))
            | (Some("array"), Value::Array(_))
            | (Some("object") | None, Value::Object(_))
            | (None, _) => true,
            (Some("integer"), Value::Number(n)) => {
                n.as_i64().is_some() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            (Some("number"), Value::Number(_)) => true,
            _ => false,
        };
        if !ok {
            problems.push(format!("{at}: {v} is not of type {}", ty.unwrap_or("?")));
            return;
        }
        match v {
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, x) in items.iter().enumerate() {
                        self.check(x, item, &format!("{at}[{i}]"), problems);
                    }
                }
            }
            Value::Object(o) => {
                let mut props = serde_json::Map::new();
                let mut external = false;
                self.properties(schema, &mut props, &mut external);
                let open = schema.get("additionalProperties").is_some();
                for (k, x) in o {
                    match props.get(k) {
                        Some(s) => self.check(x, s, &format!("{at}.{k}"), problems),
                        None if open => {}
                        None if external && COMMON.contains(&k.as_str()) => {}
                        None => problems.push(format!("{at}.{k}: not in the spec")),
                    }
                }
            }
            _ => {}
        }
    }

    fn validate(&self, v: &Value, definition: &str) {
        let mut problems = Vec::new();
        self.check(
            v,
            &json!({ "$ref": format!("#/definitions/{definition}") }),
            definition,
            &mut problems,
        );
        assert!(
            problems.is_empty(),
            "{definition} does not follow the spec:\n{}\n{v:#}",
            problems.join("\n")
        );
    }
}

fn spec() -> Spec {
    Spec {
        defs: load("amlfilesystem.json")["definitions"].clone(),
    }
}

#[test]
fn the_validator_catches_what_it_should() {
    let s = spec();
    let mut problems = Vec::new();
    let bad = json!({ "properties": { "storageCapacityTiB": "eight", "bogus": 1, "health": { "state": "Fine" } } });
    s.check(
        &bad,
        &json!({"$ref": "#/definitions/AmlFilesystem"}),
        "fs",
        &mut problems,
    );
    assert_eq!(problems.len(), 3, "{problems:?}");
    // And the spec's own examples pass.
    s.validate(
        &load("examples/amlFilesystems_Get.json")["responses"]["200"]["body"],
        "AmlFilesystem",
    );
    s.validate(
        &load("examples/importJobs_Get.json")["responses"]["200"]["body"],
        "ImportJob",
    );
}

#[test]
fn emulator_responses_follow_the_spec() {
    let az = azurite::Azurite::start();
    // Each HSM job holds the slot for a second at least, so that a second job sent at once
    // meets the one it would collide with.
    let em = emulator::Emulator::start(
        &format!("http://127.0.0.1:{}/devstoreaccount1", az.port),
        &["--job-delay", "1s"],
    );
    let s = spec();
    let sa = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/scgroup/providers/Microsoft.Storage/storageAccounts/devstoreaccount1/blobServices/default/containers";
    let mut create =
        load("examples/amlFilesystems_CreateOrUpdate.json")["parameters"]["amlFilesystem"].clone();
    create["properties"]["hsm"]["settings"]["container"] = json!(format!("{sa}/data"));
    create["properties"]["hsm"]["settings"]["loggingContainer"] = json!(format!("{sa}/logs"));
    let fs = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/scgroup/providers/Microsoft.StorageCache/amlFilesystems/fs1";
    // A subnet that does not exist is refused at once.
    let (status, body) = em.request("PUT", fs, Some(&create));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["target"], "properties.filesystemSubnet");
    em.create_subnet(
        create["properties"]["filesystemSubnet"].as_str().unwrap(),
        "10.0.0.0/24",
    );
    // Without the provider's roles on the account the create fails late, as in Azure.
    let early = format!("{fs}-early");
    let (status, _) = em.request("PUT", &early, Some(&create));
    assert_eq!(status, 201);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while em.request("GET", &early, None).1["properties"]["provisioningState"] != "Failed" {
        assert!(
            std::time::Instant::now() < deadline,
            "created without roles"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    em.grant_provider_roles(sa.trim_end_matches("/blobServices/default/containers"));
    // Roles just granted are not in effect yet: the create is refused until they are.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = em.request("PUT", fs, Some(&create));
        if status != 403 {
            break (status, body);
        }
        assert_eq!(
            body["error"]["code"],
            "AmlFilesystemStorageAccountAuthorizationFailed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "roles never took effect"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status, 201, "{body}");
    s.validate(&body, "AmlFilesystem");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ready = loop {
        let (_, body) = em.request("GET", fs, None);
        if body["properties"]["provisioningState"] == "Succeeded" {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never provisioned: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    s.validate(&ready, "AmlFilesystem");
    // Whole numbers go out as integers, as Azure sends them.
    assert!(
        ready["properties"]["throughputProvisionedMBps"].is_u64(),
        "{ready}"
    );
    assert!(
        ready["properties"]["currentStorageCapacityTiB"].is_u64(),
        "{ready}"
    );
    let job = load("examples/importJobs_CreateOrUpdate.json")["parameters"]["importJob"].clone();
    // The initial import holds the slot: a second HSM job of any kind is refused, not queued.
    let busy = |status: u16, body: &serde_json::Value| {
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "Conflict");
    };
    let (status, body) = em.request("PUT", &format!("{fs}/importJobs/job1"), Some(&job));
    busy(status, &body);
    wait_free(&em, fs);
    let (status, body) = em.request("PUT", &format!("{fs}/importJobs/job1"), Some(&job));
    assert_eq!(status, 201, "{body}");
    s.validate(&body, "ImportJob");
    let archive = json!({"filesystemPath": "/"});
    let (status, body) = em.request("POST", &format!("{fs}/archive"), Some(&archive));
    busy(status, &body);
    let (status, list) = em.request("GET", &format!("{fs}/importJobs"), None);
    assert_eq!(status, 200);
    s.validate(&list, "ImportJobsListResult");
    // Cancelling is a state of its own, and holds the slot until the job is Canceled.
    let (status, body) = em.request(
        "PATCH",
        &format!("{fs}/importJobs/job1"),
        Some(&json!({ "properties": { "adminStatus": "Cancel" } })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["properties"]["status"]["state"], "Cancelling",
        "{body}"
    );
    wait_free(&em, fs);
    let (_, body) = em.request("GET", &format!("{fs}/importJobs/job1"), None);
    assert_eq!(body["properties"]["status"]["state"], "Canceled", "{body}");
    let (status, _) = em.request("POST", &format!("{fs}/archive"), Some(&archive));
    assert_eq!(status, 200);
    let (_, after) = em.request("GET", fs, None);
    s.validate(&after, "AmlFilesystem");
    wait_free(&em, fs);
    let grow = json!({ "location": "eastus", "properties": { "newStorageCapacityTiB": 32 } });
    let (status, body) = em.request("PUT", &format!("{fs}/expansionJobs/grow1"), Some(&grow));
    assert_eq!(status, 201, "{body}");
    s.validate(&body, "ExpansionJob");
    let auto = json!({ "location": "eastus", "properties": { "autoExportPrefixes": ["/results"], "adminStatus": "Enable" } });
    let (status, body) = em.request("PUT", &format!("{fs}/autoExportJobs/auto1"), Some(&auto));
    busy(status, &body);
    wait_free(&em, fs);
    let (_, grown) = em.request("GET", fs, None);
    assert_eq!(
        grown["properties"]["currentStorageCapacityTiB"], 32,
        "{grown}"
    );
    assert_eq!(
        grown["properties"]["storageCapacityTiB"], create["properties"]["storageCapacityTiB"],
        "what was asked at create stays"
    );
    // The spec allows one prefix per job for now.
    let two = json!({ "location": "eastus", "properties": { "autoExportPrefixes": ["/a", "/b"], "adminStatus": "Enable" } });
    let (status, body) = em.request("PUT", &format!("{fs}/autoExportJobs/auto2"), Some(&two));
    assert_eq!(status, 400, "{body}");
    let (status, body) = em.request("PUT", &format!("{fs}/autoExportJobs/auto1"), Some(&auto));
    assert_eq!(status, 201, "{body}");
    s.validate(&body, "AutoExportJob");
    // Enabled, an auto-export job holds the slot until it is disabled and has stopped.
    let (status, body) = em.request("PUT", &format!("{fs}/importJobs/job2"), Some(&job));
    busy(status, &body);
    let (status, _) = em.request(
        "PATCH",
        &format!("{fs}/autoExportJobs/auto1"),
        Some(&json!({ "properties": { "adminStatus": "Disable" } })),
    );
    assert_eq!(status, 200);
    wait_free(&em, fs);
    // So does an enabled auto-import job (it follows the change feed for ever).
    let import = json!({ "location": "eastus", "properties": { "autoImportPrefixes": ["/"], "adminStatus": "Enable" } });
    let (status, body) = em.request("PUT", &format!("{fs}/autoImportJobs/ai1"), Some(&import));
    assert_eq!(status, 201, "{body}");
    s.validate(&body, "AutoImportJob");
    let (status, body) = em.request("PUT", &format!("{fs}/importJobs/job3"), Some(&job));
    busy(status, &body);
    let (status, body) = em.request(
        "PATCH",
        &format!("{fs}/autoImportJobs/ai1"),
        Some(&json!({ "properties": { "adminStatus": "Disable" } })),
    );
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while em
        .request("GET", &format!("{fs}/autoImportJobs/ai1"), None)
        .1["properties"]["status"]["state"]
        != "Disabled"
    {
        assert!(std::time::Instant::now() < deadline, "never disabled");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Lists are paged: a client that reads one page misses jobs.
    for i in 0..emulator_page() + 1 {
        let (status, body) = em.request("PUT", &format!("{fs}/importJobs/p{i}"), Some(&job));
        assert_eq!(status, 201, "{body}");
        wait_free(&em, fs);
    }
    let (_, page) = em.request("GET", &format!("{fs}/importJobs"), None);
    s.validate(&page, "ImportJobsListResult");
    let next = page["nextLink"].as_str().expect("a nextLink");
    let next = next.split_once("127.0.0.1").unwrap().1;
    let next = &next[next.find('/').unwrap()..];
    let (status, more) = em.request("GET", next, None);
    assert_eq!(status, 200, "{more}");
    assert!(!more["value"].as_array().unwrap().is_empty());
    // DELETE answers 202 with a Location to poll, 204 for what is not there.
    let (status, _) = em.request("DELETE", &format!("{fs}/importJobs/p0"), None);
    assert_eq!(status, 202);
    let (status, _) = em.request("DELETE", &format!("{fs}/importJobs/p0"), None);
    assert_eq!(status, 204);
    let (status, _) = em.request(
        "PUT",
        &format!("{fs}/expansionJobs/shrink"),
        Some(&json!({ "location": "eastus", "properties": { "newStorageCapacityTiB": 8 } })),
    );
    assert_eq!(status, 400);
    // Errors in ARM's shape.
    let (status, err) = em.request("GET", &format!("{fs}x"), None);
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "ResourceNotFound");
    let mut bad = create.clone();
    bad["properties"]["storageCapacityTiB"] = json!(5);
    let (status, err) = em.request("PUT", &format!("{fs}2"), Some(&bad));
    assert_eq!(status, 400);
    assert_eq!(err["error"]["target"], "properties.storageCapacityTiB");
}

/// The emulator's list page size (`emulator::handlers::PAGE`).
fn emulator_page() -> usize {
    3
}

/// Polls until no HSM job holds the file system: every import job, archive and expansion
/// ended, every auto-export job stopped.
fn wait_free(em: &emulator::Emulator, fs: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let running = |v: &serde_json::Value, path: &str| {
            v["value"].as_array().into_iter().flatten().any(|j| {
                matches!(
                    j.pointer(path).and_then(|s| s.as_str()),
                    Some("InProgress" | "Cancelling" | "Disabling")
                )
            })
        };
        let (_, jobs) = em.request("GET", &format!("{fs}/importJobs"), None);
        let (_, fsv) = em.request("GET", fs, None);
        let (_, grows) = em.request("GET", &format!("{fs}/expansionJobs"), None);
        let (_, autos) = em.request("GET", &format!("{fs}/autoExportJobs"), None);
        let archiving = matches!(
            fsv["properties"]["hsm"]["archiveStatus"][0]["status"]["state"].as_str(),
            Some("InProgress" | "Cancelling")
        );
        // Pages beyond the first are followed in the paging check below; the first holds the
        // newest names only by chance, so look at every page here too.
        let mut all_jobs = jobs.clone();
        let mut next = jobs["nextLink"].as_str().map(str::to_string);
        while let Some(n) = next {
            let n = n.split_once("127.0.0.1").unwrap().1;
            let (_, page) = em.request("GET", &n[n.find('/').unwrap()..], None);
            all_jobs["value"]
                .as_array_mut()
                .unwrap()
                .extend(page["value"].as_array().cloned().unwrap_or_default());
            next = page["nextLink"].as_str().map(str::to_string);
        }
        let enabled = autos["value"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|j| j["properties"]["adminStatus"] == "Enable");
        if !running(&all_jobs, "/properties/status/state")
            && !archiving
            && !running(&grows, "/properties/status/state")
            && !running(&autos, "/properties/status/state")
            && !enabled
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the slot never freed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
