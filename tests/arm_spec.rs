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
    let em = emulator::Emulator::start(
        &format!("http://127.0.0.1:{}/devstoreaccount1", az.port),
        &[],
    );
    let s = spec();
    let sa = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/scgroup/providers/Microsoft.Storage/storageAccounts/devstoreaccount1/blobServices/default/containers";
    let mut create =
        load("examples/amlFilesystems_CreateOrUpdate.json")["parameters"]["amlFilesystem"].clone();
    create["properties"]["hsm"]["settings"]["container"] = json!(format!("{sa}/data"));
    create["properties"]["hsm"]["settings"]["loggingContainer"] = json!(format!("{sa}/logs"));
    let fs = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/scgroup/providers/Microsoft.StorageCache/amlFilesystems/fs1";
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
    let (status, body) = em.request("PUT", fs, Some(&create));
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
    let job = load("examples/importJobs_CreateOrUpdate.json")["parameters"]["importJob"].clone();
    let (status, body) = em.request("PUT", &format!("{fs}/importJobs/job1"), Some(&job));
    assert_eq!(status, 201, "{body}");
    s.validate(&body, "ImportJob");
    let (status, list) = em.request("GET", &format!("{fs}/importJobs"), None);
    assert_eq!(status, 200);
    s.validate(&list, "ImportJobsListResult");
    let (status, _) = em.request(
        "POST",
        &format!("{fs}/archive"),
        Some(&json!({"filesystemPath": "/"})),
    );
    assert_eq!(status, 200);
    let (_, after) = em.request("GET", fs, None);
    s.validate(&after, "AmlFilesystem");
    let grow = json!({ "location": "eastus", "properties": { "newStorageCapacityTiB": 32 } });
    let (status, body) = em.request("PUT", &format!("{fs}/expansionJobs/grow1"), Some(&grow));
    assert_eq!(status, 201, "{body}");
    s.validate(&body, "ExpansionJob");
    let auto = json!({ "location": "eastus", "properties": { "autoExportPrefixes": ["/results"], "adminStatus": "Enable" } });
    let (status, body) = em.request("PUT", &format!("{fs}/autoExportJobs/auto1"), Some(&auto));
    assert_eq!(status, 201, "{body}");
    s.validate(&body, "AutoExportJob");
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
