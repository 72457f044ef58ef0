//! The `steps:` section: each step kind, its templates and globs, and the checks across
//! steps (an output no export carries).

use super::*;

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
            let exported = exports.iter().any(|e| e.takes(fixed, &step.name));
            if !read_later && !exported {
                return Some((step.name.clone(), pattern.to_string()));
            }
        }
    }
    None
}

pub(super) fn steps(cx: &mut Cx, node: &Node) -> Vec<Step> {
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
    // Names seen, to their place in `out`: linear however many steps there are.
    let mut named: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
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
        if let Some(&i) = named.get(&name) {
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
            named.entry(name.clone()).or_insert(out.len());
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
