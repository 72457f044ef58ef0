//! Decoding and checking a pipeline file, section by section: the top level and the
//! helpers every section uses here, one file per larger section.

mod filesystem;
mod pool;
mod steps;

use std::collections::BTreeMap;
use std::path::Path;

use super::decode::{Cx, MapReader, sub_span};
use super::diagnostic::suggest;
use super::model::*;
use super::template::Template;
use super::yaml::{Node, Span, Value};
use crate::pool::hostlist;
use filesystem::filesystem;
use pool::pool;
use steps::steps;

pub const PIPELINE_KEYS: &[&str] = &[
    "name",
    "target",
    "azure",
    "vars",
    "filesystem",
    "pool",
    "steps",
];
pub const AZURE_KEYS: &[&str] = &["subscription", "resource_group", "location", "endpoint"];
pub const FILESYSTEM_KEYS: &[&str] = &[
    "name",
    "sku",
    "capacity_tib",
    "zone",
    "subnet",
    "maintenance_window",
    "hsm",
    "mount",
];
pub const HSM_KEYS: &[&str] = &[
    "container",
    "logging_container",
    "import_prefixes",
    "storage_account",
];
pub const WINDOW_KEYS: &[&str] = &["day", "time"];
pub const POOL_KEYS: &[&str] = &[
    "hosts",
    "slots",
    "ssh_config",
    "host_key_checking",
    "slurm",
    "scale_set",
];
pub const SCALE_SET_KEYS: &[&str] = &[
    "name",
    "size",
    "image",
    "instances",
    "subnet",
    "admin_user",
    "ssh_public_key",
    "scale_to_zero",
];
/// Ubuntu with the HPC stack (InfiniBand drivers, MPI) and a Lustre client package available.
pub const DEFAULT_HPC_IMAGE: &str = "microsoft-dsvm:ubuntu-hpc:2204:latest";
pub const SLURM_KEYS: &[&str] = &["partition", "account"];
pub const STEP_KINDS: &[&str] = &["ensure", "import", "process", "export", "teardown"];
pub const ENSURE_KEYS: &[&str] = &["name"];
pub const TEARDOWN_KEYS: &[&str] = &["name"];
pub const IMPORT_KEYS: &[&str] = &["name", "mover", "prefixes", "conflict", "max_errors"];
pub const PROCESS_KEYS: &[&str] = &[
    "name",
    "foreach",
    "inputs",
    "command",
    "outputs",
    "retries",
    "retry_delay",
    "timeout",
    "env",
];
pub const EXPORT_KEYS: &[&str] = &["name", "mover", "paths", "outputs_of", "auto"];
pub const DAYS: &[&str] = &[
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// The directory every relative path in the file is taken from: the file's own, however the
/// file was named (`p.yaml` has the parent `""`, which `absolute` refuses; `../p.yaml` from
/// elsewhere must name the same paths, or every task would look changed).
pub fn base_dir(path: &Path) -> std::path::PathBuf {
    let file = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf());
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::env::current_dir().unwrap_or_else(|_| ".".into()),
    }
}

/// `a/./b/../c` → `a/c`, without touching the disk (the mount may not exist yet).
fn lexical(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Teardown deletes the file system; on the local target, its directory. A mount of `/`, or
/// of a directory holding the pipeline file (`..`, `.`), would delete far more.
fn check_teardown_mount(cx: &mut Cx, root: &Node, fs: &Filesystem, steps: &[Step], base: &Path) {
    let Some(mount) = &fs.mount else { return };
    if !steps.iter().any(|s| matches!(s.action, Action::Teardown)) {
        return;
    }
    let m = lexical(mount);
    if m.parent().is_some() && !base.starts_with(&m) {
        return;
    }
    let span = child(root, "filesystem")
        .and_then(|f| child(f, "mount"))
        .map_or(root.span, |n| n.span);
    cx.problems.hint(
        span,
        format!(
            "teardown would delete {}, which holds {}",
            m.display(),
            if m.parent().is_none() {
                "everything"
            } else {
                "this pipeline file"
            }
        ),
        "give the file system a directory of its own, such as `mount: scratch/fs`",
    );
}

/// The value under `key` in a mapping node.
fn child<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.value {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Decodes a whole pipeline; problems accumulate in `cx`.
pub fn decode(cx: &mut Cx, root: &Node, path: &Path) -> Option<Pipeline> {
    let base = base_dir(path);
    if matches!(root.value, Value::Null) {
        cx.problems.hint(
            root.span,
            "the pipeline file is empty",
            "start with `name:`, `filesystem:` and `steps:`; `stage schema` prints every key",
        );
        return None;
    }
    let mut top = cx.map(root, "the pipeline")?;

    // vars first: everything else may use them.
    if let Some(v) = top.get("vars")
        && let Some(mut vars) = cx.map(v, "`vars`")
    {
        let entries: Vec<(String, &Node, &Node)> = vars
            .keys()
            .map(|(k, kn, vn)| (k.to_string(), kn, vn))
            .collect();
        vars.mark_all_used();
        for (k, kn, vn) in entries {
            if !valid_ident(&k) {
                cx.problems.add(
                    kn.span,
                    format!("`{k}` is not a valid variable name (letters, digits, `_`, `-`)"),
                );
                continue;
            }
            if let Value::Scalar { text, .. } = &vn.value
                && text.contains("{{env.")
            {
                cx.from_env.insert(k.clone());
            }
            if let Some(val) = cx.string(vn, &format!("variable `{k}`")) {
                cx.vars.insert(k, val);
            }
        }
    }

    let name = top
        .required(cx, "name", "name the pipeline, e.g. `name: genomics`")
        .and_then(|n| resource_name(cx, n, "pipeline name"));
    let target = match top.get("target") {
        Some(n) => match cx.choice(n, "target", &["local", "azure"]) {
            Some("azure") => Target::Azure,
            _ => Target::Local,
        },
        None => Target::Local,
    };
    let azure = match (target, top.get("azure")) {
        (_, Some(n)) => azure(cx, n).map(Some),
        (Target::Azure, None) => {
            top.required(
                cx,
                "azure",
                "give `azure: { subscription: ID, resource_group: RG, location: eastus }`",
            );
            None
        }
        (Target::Local, None) => Some(None),
    };
    let filesystem = top
        .required(
            cx,
            "filesystem",
            "describe the file system under `filesystem:`",
        )
        .and_then(|n| filesystem(cx, n, target, &base));
    let pool = match top.get("pool") {
        Some(n) => pool(cx, n, &base, target, name.as_deref()),
        None => Some(Pool {
            hosts: vec![hostlist::Host {
                user: None,
                name: "localhost".into(),
                port: None,
            }],
            slots: default_slots(),
            ssh_config: None,
            host_key_checking: HostKeyChecking::AcceptNew,
            slurm: None,
            scale_set: None,
        }),
    };
    let steps = top
        .required(
            cx,
            "steps",
            "list the steps: ensure, import, process, export, teardown",
        )
        .map(|n| steps(cx, n))
        .unwrap_or_default();
    top.finish(cx, PIPELINE_KEYS);
    if let Some(fs) = &filesystem {
        check_teardown_mount(cx, root, fs, &steps, &base);
    }

    Some(Pipeline {
        name: name?,
        target,
        azure: azure?,
        path: path.to_path_buf(),
        filesystem: filesystem?,
        pool: pool?,
        steps,
        vars: cx.vars.clone(),
    })
}

/// Where the file system lives in Azure, and which ARM endpoint manages it.
fn azure(cx: &mut Cx, node: &Node) -> Option<AzureSettings> {
    let mut m = cx.map(node, "`azure`")?;
    let subscription = m
        .required(
            cx,
            "subscription",
            "the subscription id, e.g. 00000000-0000-0000-0000-000000000000",
        )
        .and_then(|n| cx.nonempty_string(n, "subscription"));
    let resource_group = m
        .required(
            cx,
            "resource_group",
            "the resource group of the file system",
        )
        .and_then(|n| cx.nonempty_string(n, "resource_group"));
    let location = m
        .required(cx, "location", "the Azure region, e.g. eastus")
        .and_then(|n| cx.nonempty_string(n, "location"));
    let endpoint = m.get("endpoint").and_then(|n| {
        let s = cx.nonempty_string(n, "endpoint")?;
        if !crate::azure::is_allowed_endpoint(&s) {
            cx.problems.hint(
                n.span,
                "the ARM endpoint must be https",
                "plain http only for a local emulator (http://127.0.0.1:PORT)",
            );
            return None;
        }
        Some(s.trim_end_matches('/').to_string())
    });
    m.finish(cx, AZURE_KEYS);
    Some(AzureSettings {
        subscription: subscription?,
        resource_group: resource_group?,
        location: location?,
        endpoint,
    })
}

pub fn default_slots() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Names that end up in Azure resource names, state keys and job names: ARM's rule.
fn resource_name(cx: &mut Cx, node: &Node, what: &str) -> Option<String> {
    let s = cx.nonempty_string(node, what)?;
    let ok = (2..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok {
        cx.problems.hint(
            node.span,
            format!("`{s}` is not a valid {what}"),
            "use 2-64 letters, digits, `-` or `_`, starting and ending with a letter or digit",
        );
        return None;
    }
    Some(s)
}

/// Blob prefixes as AMLFS takes them (`/`, `/data`), stored without the leading slash.
fn prefixes(cx: &mut Cx, node: &Node, what: &str) -> Vec<String> {
    let items = cx.strings(node, what);
    items
        .into_iter()
        .filter_map(|(s, span)| relative_path(cx, &s, span, what))
        .collect()
}

/// A path inside the file system or container: never absolute-escaping, never `..`.
fn relative_path(cx: &mut Cx, s: &str, span: Span, what: &str) -> Option<String> {
    let trimmed = s.trim_start_matches('/');
    if s.contains('\0') || trimmed.split('/').any(|c| c == "..") {
        cx.problems.hint(
            span,
            format!("{what} `{s}` leaves the file system"),
            "paths are relative to the file system root and cannot contain `..`",
        );
        return None;
    }
    Some(trimmed.to_string())
}
