//! The `pool:` section: a host list, a Slurm partition or a VM scale set, and slots.

use super::*;

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

pub(super) fn pool(
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
