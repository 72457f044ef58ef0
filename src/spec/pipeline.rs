//! Decoding and checking a pipeline file, section by section.

use std::collections::BTreeMap;
use std::path::Path;

use super::decode::{Cx, MapReader, sub_span};
use super::diagnostic::suggest;
use super::model::*;
use super::template::Template;
use super::yaml::{Node, Span, Value};
use crate::pool::hostlist;

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

/// Decodes a whole pipeline; problems accumulate in `cx`.
pub fn decode(cx: &mut Cx, root: &Node, path: &Path) -> Option<Pipeline> {
    let base = path.parent().unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
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

fn filesystem(cx: &mut Cx, node: &Node, target: Target, base: &Path) -> Option<Filesystem> {
    let mut m = cx.map(node, "`filesystem`")?;
    let azure = target == Target::Azure;
    let name = m
        .required(cx, "name", "name the file system, e.g. `name: scratch`")
        .and_then(|n| resource_name(cx, n, "file system name"));

    let sku_node = need_for(
        &mut m,
        cx,
        azure,
        "sku",
        "e.g. `sku: AMLFS-Durable-Premium-250`",
    );
    let sku_names: Vec<&str> = Sku::ALL.iter().map(|s| s.name()).collect();
    let sku = sku_node.and_then(|n| {
        cx.choice(n, "SKU", &sku_names)
            .and_then(|s| Sku::ALL.into_iter().find(|k| k.name() == s))
    });
    let cap_node = need_for(&mut m, cx, azure, "capacity_tib", "e.g. `capacity_tib: 8`");
    let capacity_tib =
        cap_node.and_then(|n| cx.integer(n, "capacity_tib", 1, 100_000).map(|c| c as u32));
    if let (Some(sku), Some(cap), Some(n)) = (sku, capacity_tib, cap_node) {
        let step = sku.capacity_step_tib();
        if cap < step || cap % step != 0 {
            let lo = (cap / step).max(1) * step;
            cx.problems.hint(
                n.span,
                format!("{} TiB is not a valid capacity for {}", cap, sku.name()),
                format!(
                    "{} needs at least {step} TiB in steps of {step} TiB (e.g. {lo} or {})",
                    sku.name(),
                    lo + step
                ),
            );
        }
    }
    let zone = need_for(&mut m, cx, azure, "zone", "e.g. `zone: \"1\"`").and_then(|n| {
        cx.choice(n, "availability zone", &["1", "2", "3"])
            .map(String::from)
    });
    let subnet = need_for(&mut m, cx, azure,
        "subnet",
        "the full resource id of the subnet the file system joins",
    )
    .and_then(|n| {
        let s = cx.string(n, "subnet")?;
        if !is_subnet_id(&s) {
            cx.problems.hint(
                n.span,
                "`subnet` is not a subnet resource id",
                "/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/VNET/subnets/SUBNET",
            );
            return None;
        }
        Some(s)
    });
    let maintenance_window = need_for(
        &mut m,
        cx,
        azure,
        "maintenance_window",
        "e.g. `maintenance_window: { day: Saturday, time: \"22:00\" }`",
    )
    .and_then(|n| window(cx, n));
    let hsm = m
        .required(
            cx,
            "hsm",
            "the blob container the file system imports from and exports to",
        )
        .and_then(|n| hsm(cx, n, target, base));
    // On Azure: where the compute nodes mount it (default /mnt/lustre).
    let mount = m
        .get("mount")
        .and_then(|n| cx.nonempty_string(n, "mount").map(|s| base.join(s)));
    m.finish(cx, FILESYSTEM_KEYS);
    Some(Filesystem {
        name: name?,
        sku,
        capacity_tib,
        zone,
        subnet,
        maintenance_window,
        hsm: hsm?,
        mount,
    })
}

/// Azure needs the key; the local target takes it when given (so a pipeline rehearsed locally
/// is already valid for Azure).
fn need_for<'n>(
    m: &mut MapReader<'n>,
    cx: &mut Cx,
    azure: bool,
    key: &str,
    hint: &str,
) -> Option<&'n Node> {
    if azure {
        m.required(cx, key, hint)
    } else {
        m.get(key)
    }
}

fn is_subnet_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    parts.len() == 11
        && parts[0].is_empty()
        && lower[1] == "subscriptions"
        && lower[3] == "resourcegroups"
        && lower[5] == "providers"
        && lower[6] == "microsoft.network"
        && lower[7] == "virtualnetworks"
        && lower[9] == "subnets"
        && [2, 4, 8, 10].iter().all(|i| !parts[*i].is_empty())
}

fn window(cx: &mut Cx, node: &Node) -> Option<MaintenanceWindow> {
    let mut m = cx.map(node, "`maintenance_window`")?;
    let day = m
        .required(cx, "day", "e.g. `day: Saturday`")
        .and_then(|n| cx.choice(n, "day", DAYS).map(String::from));
    let time = m
        .required(cx, "time", "e.g. `time: \"22:00\"` (UTC)")
        .and_then(|n| {
            let s = cx.raw_string(n, "time")?;
            let ok = s.len() == 5
                && s.as_bytes()[2] == b':'
                && s[..2].parse::<u8>().is_ok_and(|h| h < 24)
                && s[3..].parse::<u8>().is_ok_and(|m| m < 60);
            if !ok {
                cx.problems.hint(
                    n.span,
                    format!("`{s}` is not a time"),
                    "write HH:MM in UTC, quoted: \"22:00\"",
                );
                return None;
            }
            Some(s)
        });
    m.finish(cx, WINDOW_KEYS);
    Some(MaintenanceWindow {
        day: day?,
        time_utc: time?,
    })
}

fn hsm(cx: &mut Cx, node: &Node, target: Target, base: &Path) -> Option<Hsm> {
    let mut m = cx.map(node, "`hsm`")?;
    let container_hint = match target {
        Target::Local => "a directory that plays the blob container, e.g. `container: data/blob`",
        Target::Azure => "the container URL, e.g. https://ACCOUNT.blob.core.windows.net/CONTAINER",
    };
    let data_container = m
        .required(cx, "container", container_hint)
        .and_then(|n| container(cx, n, target, base));
    let logging_container = if target == Target::Azure {
        m.required(
            cx,
            "logging_container",
            "AMLFS needs a second container for its HSM logs",
        )
    } else {
        m.get("logging_container")
    }
    .and_then(|n| container(cx, n, target, base));
    let import_prefixes = match m.get("import_prefixes") {
        Some(n) => prefixes(cx, n, "import prefix"),
        None => vec![String::new()],
    };
    let storage_account = m.get("storage_account").and_then(|n| {
        let s = cx.nonempty_string(n, "storage_account")?;
        let lower = s.to_ascii_lowercase();
        if !(lower.starts_with("/subscriptions/") && lower.contains("/providers/microsoft.storage/storageaccounts/")) {
            cx.problems.hint(
                n.span,
                "`storage_account` is not a storage account resource id",
                "/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/ACCOUNT",
            );
            return None;
        }
        Some(s.trim_end_matches('/').to_string())
    });
    m.finish(cx, HSM_KEYS);
    Some(Hsm {
        container: data_container?,
        logging_container,
        import_prefixes,
        storage_account,
    })
}

/// A blob container URL (either target: the local target can stage against Azurite or a
/// real account), or on the local target a directory that plays one.
fn container(cx: &mut Cx, node: &Node, target: Target, base: &Path) -> Option<String> {
    let s = cx.nonempty_string(node, "container")?;
    if !crate::store::is_url(&s) {
        if target == Target::Local {
            return Some(base.join(s).display().to_string());
        }
        cx.problems.hint(
            node.span,
            "an azure container must be an https URL",
            "e.g. https://ACCOUNT.blob.core.windows.net/CONTAINER (plain http only for a local emulator)",
        );
        return None;
    }
    if !crate::azure::is_allowed_endpoint(&s) {
        cx.problems.hint(
            node.span,
            "a container URL must be https",
            "e.g. https://ACCOUNT.blob.core.windows.net/CONTAINER (plain http only for a local emulator)",
        );
        return None;
    }
    if s.contains('?') {
        cx.problems.hint(
            node.span,
            "the container URL carries a query string (a SAS token?)",
            "secrets never go in pipeline files: set AZURE_STORAGE_SAS_TOKEN in the environment",
        );
        return None;
    }
    if let Err(e) = crate::store::azure::Location::parse(&s) {
        cx.problems.hint(
            node.span,
            format!("not a usable container URL: {e}"),
            "e.g. https://ACCOUNT.blob.core.windows.net/CONTAINER",
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

fn scale_set(
    cx: &mut Cx,
    node: &Node,
    base: &Path,
    target: Target,
    pipeline: Option<&str>,
) -> Option<ScaleSet> {
    if target != Target::Azure {
        cx.problems.hint(
            node.span,
            "`scale_set` needs `target: azure`",
            "on the local target, list the machines under `hosts`",
        );
        return None;
    }
    let mut m = cx.map(node, "`scale_set`")?;
    let name = match m.get("name") {
        Some(n) => resource_name(cx, n, "scale set name"),
        None => Some(format!("{}-pool", pipeline.unwrap_or("stage"))),
    };
    let size = m
        .required(
            cx,
            "size",
            "give the VM size, e.g. `size: Standard_HB120rs_v3`",
        )
        .and_then(|n| cx.nonempty_string(n, "size"));
    let image = match m.get("image") {
        None => Some(DEFAULT_HPC_IMAGE.to_string()),
        Some(n) => cx.nonempty_string(n, "image").and_then(|s| {
            if s.split(':').filter(|p| !p.is_empty()).count() == 4 {
                Some(s)
            } else {
                cx.problems.hint(
                    n.span,
                    format!("`{s}` is not a marketplace image"),
                    format!("write publisher:offer:sku:version, e.g. `{DEFAULT_HPC_IMAGE}`"),
                );
                None
            }
        }),
    }
    .map(|s| {
        let mut parts = s.splitn(4, ':').map(str::to_string);
        std::array::from_fn(|_| parts.next().unwrap_or_default())
    });
    let instances = m
        .required(cx, "instances", "say how many VMs, e.g. `instances: 4`")
        .and_then(|n| cx.integer(n, "instances", 1, 1000).map(|i| i as u32));
    let subnet = m
        .get("subnet")
        .and_then(|n| cx.nonempty_string(n, "subnet"));
    let admin_user = m
        .get("admin_user")
        .map(|n| cx.nonempty_string(n, "admin_user"))
        .unwrap_or_else(|| Some("azureuser".into()));
    let ssh_public_key = m.get("ssh_public_key").and_then(|n| {
        cx.nonempty_string(n, "ssh_public_key")
            .map(|s| base.join(s))
    });
    let scale_to_zero = match m.get("scale_to_zero") {
        Some(n) => cx
            .choice(n, "scale_to_zero", &["true", "false"])
            .map(|c| c == "true"),
        None => Some(false),
    };
    m.finish(cx, SCALE_SET_KEYS);
    Some(ScaleSet {
        name: name?,
        size: size?,
        image: image?,
        instances: instances?,
        subnet,
        admin_user: admin_user?,
        ssh_public_key,
        scale_to_zero: scale_to_zero?,
    })
}

fn pool(
    cx: &mut Cx,
    node: &Node,
    base: &Path,
    target: Target,
    pipeline: Option<&str>,
) -> Option<Pool> {
    let mut m = cx.map(node, "`pool`")?;
    let hosts = match m.get("hosts") {
        None => Some(vec![hostlist::Host {
            user: None,
            name: "localhost".into(),
            port: None,
        }]),
        Some(n) => {
            let text = match &n.value {
                Value::Seq(items) => {
                    let parts: Vec<String> =
                        items.iter().filter_map(|i| cx.string(i, "host")).collect();
                    Some(parts.join(","))
                }
                _ => cx.string(n, "hosts"),
            };
            text.and_then(|t| match hostlist::parse(&t) {
                Ok(h) => Some(h),
                Err(e) => {
                    cx.problems.hint(
                        sub_span(n, &t, e.offset),
                        format!("bad host list: {}", e.message),
                        "write hosts in Slurm syntax, e.g. `node[01-16],login1` or `user@host:2222`",
                    );
                    None
                }
            })
        }
    };
    let ssh_config = m
        .get("ssh_config")
        .and_then(|n| cx.nonempty_string(n, "ssh_config").map(|s| base.join(s)));
    let host_key_checking = match m.get("host_key_checking") {
        Some(n) => match cx.choice(n, "host key checking", &["accept-new", "yes", "no"]) {
            Some("yes") => Some(HostKeyChecking::Yes),
            Some("no") => Some(HostKeyChecking::No),
            Some(_) => Some(HostKeyChecking::AcceptNew),
            None => None,
        },
        None => Some(HostKeyChecking::AcceptNew),
    };
    let slots = m
        .get("slots")
        .and_then(|n| cx.integer(n, "slots", 1, 4096).map(|s| s as u32))
        .or(Some(default_slots()));
    let slurm = match m.get("slurm") {
        None => Some(None),
        Some(n) => cx.map(n, "`slurm`").map(|mut s| {
            let partition = s
                .get("partition")
                .and_then(|n| cx.nonempty_string(n, "partition"));
            let account = s
                .get("account")
                .and_then(|n| cx.nonempty_string(n, "account"));
            s.finish(cx, SLURM_KEYS);
            Some(SlurmPool { partition, account })
        }),
    };
    let scale_set = match m.get("scale_set") {
        None => Some(None),
        Some(n) => {
            let clash = ["hosts", "slurm"].into_iter().find(|k| m.get(k).is_some());
            if let Some(k) = clash {
                cx.problems.hint(
                    n.span,
                    format!("a pool takes its hosts from `scale_set` or `{k}`, not both"),
                    format!("remove `{k}`: the scale set's instances are the hosts"),
                );
            }
            scale_set(cx, n, base, target, pipeline).map(Some)
        }
    };
    m.finish(cx, POOL_KEYS);
    Some(Pool {
        hosts: hosts?,
        slots: slots?,
        ssh_config,
        host_key_checking: host_key_checking?,
        slurm: slurm?,
        scale_set: scale_set?,
    })
}

/// The part of a path pattern no template or glob can change.
fn fixed_prefix(pattern: &str) -> &str {
    &pattern[..pattern.find(['{', '*', '?', '[']).unwrap_or(pattern.len())]
}

/// The first final output (step, pattern) that no earlier export step covers. An output is
/// final unless a later process step reads it (`inputs`/`foreach` overlapping its fixed prefix);
/// it is covered when an export names its step in `outputs_of` or has a path holding it.
fn unexported_output(steps: &[Step]) -> Option<(String, String)> {
    let exports: Vec<&ExportStep> = steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Export(e) => Some(e),
            _ => None,
        })
        .collect();
    for (i, step) in steps.iter().enumerate() {
        let Action::Process(p) = &step.action else {
            continue;
        };
        for output in &p.outputs {
            let pattern = output.source.as_str();
            let fixed = fixed_prefix(pattern);
            let read_later = steps[i + 1..].iter().any(|later| match &later.action {
                Action::Process(l) => l.inputs.iter().chain(&l.foreach).any(|glob| {
                    let g = fixed_prefix(glob);
                    g.starts_with(fixed) || fixed.starts_with(g)
                }),
                _ => false,
            });
            let exported = exports.iter().any(|e| {
                e.outputs_of.contains(&step.name)
                    || e.paths.iter().any(|path| {
                        let path = path.trim_end_matches('/');
                        path.is_empty()
                            || path == "."
                            || fixed == path
                            || fixed.starts_with(&format!("{path}/"))
                    })
            });
            if !read_later && !exported {
                return Some((step.name.clone(), pattern.to_string()));
            }
        }
    }
    None
}

fn steps(cx: &mut Cx, node: &Node) -> Vec<Step> {
    let Value::Seq(items) = &node.value else {
        cx.problems.hint(
            node.span,
            format!("`steps` must be a list, found {}", node.kind_name()),
            "write each step as a list item: `- import: { prefixes: [data/] }`",
        );
        return Vec::new();
    };
    if items.is_empty() {
        cx.problems
            .add(node.span, "`steps` is empty: nothing to run");
    }
    let mut out: Vec<Step> = Vec::new();
    let mut spans: Vec<Span> = Vec::new();
    for item in items {
        let Some(mut m) = cx.map(item, "a step") else {
            continue;
        };
        let kinds: Vec<(String, &Node, &Node)> = m
            .keys()
            .map(|(k, kn, vn)| (k.to_string(), kn, vn))
            .collect();
        m.mark_all_used();
        let Some((kind, knode, body)) = kinds.first().cloned() else {
            cx.problems.hint(
                item.span,
                "empty step",
                format!("a step is one of: {}", STEP_KINDS.join(", ")),
            );
            continue;
        };
        if kinds.len() > 1 {
            cx.problems.hint(
                kinds[1].1.span,
                format!(
                    "a step has one kind, but this one also says `{}`",
                    kinds[1].0
                ),
                "put settings inside the step: `- process: { name: qc, command: ... }`",
            );
        }
        let Some(kind) = STEP_KINDS.iter().find(|k| **k == kind) else {
            let hint = match suggest(&kind, STEP_KINDS.iter().copied()) {
                Some(n) => format!("did you mean `{n}`?"),
                None => format!("a step is one of: {}", STEP_KINDS.join(", ")),
            };
            cx.problems
                .hint(knode.span, format!("unknown step kind `{kind}`"), hint);
            continue;
        };
        let what = format!("the `{kind}` step");
        let Some(mut body_map) = cx.map(body, &what) else {
            continue;
        };
        let name = body_map
            .get("name")
            .and_then(|n| step_name(cx, n))
            .unwrap_or_else(|| kind.to_string());
        let action = match *kind {
            "ensure" => {
                body_map.finish(cx, ENSURE_KEYS);
                Some(Action::Ensure)
            }
            "teardown" => {
                body_map.finish(cx, TEARDOWN_KEYS);
                if !out.iter().any(|s| matches!(s.action, Action::Export(_))) {
                    cx.problems.hint(
                        knode.span,
                        "teardown deletes the file system, but no export step comes before it",
                        "add an export step: teardown only happens after a verified export",
                    );
                } else if let Some((step, output)) = unexported_output(&out) {
                    cx.problems.hint(
                        knode.span,
                        format!(
                            "teardown would delete `{output}`, an output of step `{step}` that no export step before it exports"
                        ),
                        format!(
                            "add `{step}` to an export step's `outputs_of`, or a path that holds it to its `paths`"
                        ),
                    );
                }
                Some(Action::Teardown)
            }
            "import" => import(cx, body_map).map(Action::Import),
            "export" => export(cx, body_map, &out).map(Action::Export),
            _ => process(cx, body_map).map(Action::Process),
        };
        if let Some(i) = out.iter().position(|s| s.name == name) {
            cx.problems.hint(
                knode.span,
                format!("two steps are named `{name}`"),
                format!(
                    "step names must be unique; give this one `name:` (the other is at byte {})",
                    spans[i].start
                ),
            );
        }
        if let Some(action) = action {
            out.push(Step { name, action });
            spans.push(knode.span);
        }
    }
    out
}

/// Step names key the journal and appear in job names: letters, digits, `-`, `_`.
fn step_name(cx: &mut Cx, node: &Node) -> Option<String> {
    let s = cx.nonempty_string(node, "step name")?;
    if s.len() > 64 || !valid_ident(&s) {
        cx.problems.hint(
            node.span,
            format!("`{s}` is not a valid step name"),
            "use up to 64 letters, digits, `-` or `_`",
        );
        return None;
    }
    Some(s)
}

fn mover(cx: &mut Cx, m: &mut MapReader) -> Option<MoverKind> {
    match m.get("mover") {
        Some(n) => cx
            .choice(n, "mover", &MoverKind::NAMES)
            .and_then(MoverKind::from_name),
        None => Some(MoverKind::Hsm),
    }
}

fn import(cx: &mut Cx, mut m: MapReader) -> Option<ImportStep> {
    let mover = mover(cx, &mut m);
    let prefixes = m
        .get("prefixes")
        .map(|n| prefixes(cx, n, "prefix"))
        .unwrap_or_else(|| vec![String::new()]);
    let conflict = match m.get("conflict") {
        Some(n) => cx
            .choice(n, "conflict mode", &ConflictMode::NAMES)
            .and_then(ConflictMode::from_name),
        None => Some(ConflictMode::Fail),
    };
    let max_errors = match m.get("max_errors") {
        Some(n) => cx.integer(n, "max_errors", -1, i32::MAX as i64),
        None => Some(0),
    };
    m.finish(cx, IMPORT_KEYS);
    Some(ImportStep {
        mover: mover?,
        prefixes,
        conflict: conflict?,
        max_errors: max_errors?,
    })
}

fn export(cx: &mut Cx, mut m: MapReader, earlier: &[Step]) -> Option<ExportStep> {
    let span = m.span;
    let mover = mover(cx, &mut m);
    let paths = m
        .get("paths")
        .map(|n| prefixes(cx, n, "export path"))
        .unwrap_or_default();
    let mut outputs_of = Vec::new();
    let named_steps = m.get("outputs_of");
    if let Some(n) = named_steps {
        let names = cx.strings(n, "step name");
        let process_steps: Vec<&str> = earlier
            .iter()
            .filter(|s| matches!(s.action, Action::Process(_)))
            .map(|s| s.name.as_str())
            .collect();
        for (name, span) in names {
            if process_steps.contains(&name.as_str()) {
                outputs_of.push(name);
                continue;
            }
            let hint = match suggest(&name, process_steps.iter().copied()) {
                Some(n) => format!("did you mean `{n}`?"),
                None if process_steps.is_empty() => {
                    "no process step comes before this export".to_string()
                }
                None => format!(
                    "process steps before this one: {}",
                    process_steps.join(", ")
                ),
            };
            cx.problems.hint(
                span,
                format!("`{name}` is not a process step before this export"),
                hint,
            );
        }
    }
    let auto = match m.get("auto") {
        Some(n) => match cx.choice(n, "auto", &["true", "false"]) {
            Some("true") if mover == Some(MoverKind::Direct) => {
                cx.problems.hint(
                    n.span,
                    "`auto` export is an AMLFS auto-export job, which `mover: direct` cannot run",
                    "drop `mover: direct`, or `auto`",
                );
                None
            }
            c => c.map(|c| c == "true"),
        },
        None => Some(false),
    };
    m.finish(cx, EXPORT_KEYS);
    if paths.is_empty() && named_steps.is_none() {
        cx.problems.hint(
            span,
            "the export step exports nothing",
            "give `paths: [results/]` or `outputs_of: [STEP]`",
        );
        return None;
    }
    Some(ExportStep {
        mover: mover?,
        paths,
        outputs_of,
        auto: auto?,
    })
}

fn process(cx: &mut Cx, mut m: MapReader) -> Option<ProcessStep> {
    let foreach_node = m.get("foreach");
    let foreach: Vec<String> = foreach_node
        .map(|n| globs(cx, n, "foreach glob"))
        .unwrap_or_default();
    let inputs: Vec<String> = m
        .get("inputs")
        .map(|n| globs(cx, n, "input glob"))
        .unwrap_or_default();
    let is_foreach = foreach_node.is_some();

    let outputs_node = m.get("outputs");
    let mut outputs = Vec::new();
    if let Some(n) = outputs_node {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        for item in items {
            let Some(t) = cx.template(item, "output") else {
                continue;
            };
            let mut allowed: Vec<&str> = OUTPUT_VARS.to_vec();
            if !is_foreach {
                allowed.retain(|v| !FOREACH_VARS.contains(v));
            }
            check_template_vars(cx, item, &t, &allowed, is_foreach, false);
            if relative_path(cx, &t.source, item.span, "output").is_none() {
                continue;
            }
            if is_foreach && t.is_literal() {
                cx.problems.hint(
                    item.span,
                    "every task of a foreach step would write this same output",
                    "make the output name depend on the input, e.g. `results/{{stem}}.txt`",
                );
            }
            outputs.push(t);
        }
    }

    let command = m
        .required(
            cx,
            "command",
            "the shell command each task runs, e.g. `command: wc -l {{input}}`",
        )
        .and_then(|n| {
            let t = cx.template(n, "command")?;
            let mut allowed: Vec<&str> = TASK_VARS.iter().map(|(v, _)| *v).collect();
            if !is_foreach {
                allowed.retain(|v| !FOREACH_VARS.contains(v));
            }
            if outputs.is_empty() {
                allowed.retain(|v| *v != "output" && *v != "outputs");
            }
            check_template_vars(cx, n, &t, &allowed, is_foreach, true);
            for (_, offset) in t.vars() {
                let before = t.source[..offset].chars().last();
                let after = t.source[offset..]
                    .find("}}")
                    .and_then(|e| t.source[offset + e + 2..].chars().next());
                if let (Some(b @ ('\'' | '"')), Some(a)) = (before, after)
                    && a == b
                {
                    cx.problems.hint(
                        sub_span(n, &t.source, offset),
                        "a template variable inside quotes",
                        "stage quotes substituted values itself: write {{input}}, not '{{input}}'",
                    );
                }
            }
            Some(t)
        });
    let retries = match m.get("retries") {
        Some(n) => cx.integer(n, "retries", 0, 100).map(|r| r as u32),
        None => Some(0),
    };
    let timeout = m.get("timeout").and_then(|n| cx.duration(n, "timeout"));
    let retry_delay = m
        .get("retry_delay")
        .and_then(|n| cx.duration(n, "retry_delay"));
    let mut env = BTreeMap::new();
    if let Some(n) = m.get("env")
        && let Some(mut em) = cx.map(n, "`env`")
    {
        let entries: Vec<(String, &Node, &Node)> = em
            .keys()
            .map(|(k, kn, vn)| (k.to_string(), kn, vn))
            .collect();
        em.mark_all_used();
        for (k, kn, vn) in entries {
            if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || k.starts_with(|c: char| c.is_ascii_digit())
            {
                cx.problems.add(
                    kn.span,
                    format!("`{k}` is not a valid environment variable name"),
                );
                continue;
            }
            if let Some(v) = cx.string(vn, "environment value") {
                env.insert(k, v);
            }
        }
    }
    m.finish(cx, PROCESS_KEYS);
    Some(ProcessStep {
        foreach,
        inputs,
        command: command?,
        outputs,
        retries: retries?,
        retry_delay,
        timeout,
        env,
    })
}

fn globs(cx: &mut Cx, node: &Node, what: &str) -> Vec<String> {
    let items = cx.strings(node, what);
    let mut out = Vec::new();
    for (g, span) in items {
        let Some(rel) = relative_path(cx, &g, span, what) else {
            continue;
        };
        if let Err(e) = glob::Pattern::new(&rel) {
            cx.problems
                .add(span, format!("bad {what} `{g}`: {}", e.msg));
            continue;
        }
        out.push(rel);
    }
    out
}

fn check_template_vars(
    cx: &mut Cx,
    node: &Node,
    t: &Template,
    allowed: &[&str],
    is_foreach: bool,
    is_command: bool,
) {
    for (name, offset) in t.vars() {
        let span = sub_span(node, &t.source, offset);
        if let Some(var) = name.strip_prefix("vars.") {
            if is_command && cx.from_env.contains(var) {
                cx.problems.hint(
                    span,
                    format!("`{{{{vars.{var}}}}}` in a command takes its value from the environment"),
                    "tasks inherit the environment: use the variable as \"$NAME\" in the command, so its value (maybe a secret) is not written into the journal",
                );
            } else {
                cx.global(name, span);
            }
            continue;
        }
        if let Some(var) = name.strip_prefix("env.") {
            if is_command {
                cx.problems.hint(
                    span,
                    format!("`{{{{env.{var}}}}}` in a command"),
                    format!(
                        "tasks inherit the environment: write \"${var}\" so its value (maybe a secret) is not written into the journal"
                    ),
                );
            } else {
                cx.global(name, span);
            }
            continue;
        }
        if allowed.contains(&name) {
            continue;
        }
        let hint = if FOREACH_VARS.contains(&name) && !is_foreach {
            format!("`{{{{{name}}}}}` exists only in steps with `foreach`")
        } else if (name == "output" || name == "outputs") && is_command {
            "declare the task's files under `outputs:` to use `{{output}}`".to_string()
        } else {
            match suggest(name, allowed.iter().copied()) {
                Some(n) => format!("did you mean `{{{{{n}}}}}`?"),
                None => format!("available here: {}", allowed.join(", ")),
            }
        };
        cx.problems.hint(
            span,
            format!("`{{{{{name}}}}}` names an unknown variable"),
            hint,
        );
    }
}
