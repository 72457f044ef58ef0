//! The `filesystem:` section: SKU, capacity, zone, subnet, maintenance window and the HSM
//! link, with the AMLFS rules each must follow.

use super::*;

pub(super) fn filesystem(
    cx: &mut Cx,
    node: &Node,
    target: Target,
    base: &Path,
) -> Option<Filesystem> {
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
