//! Helpers to decode the YAML tree into typed values while collecting every problem.
//!
//! Each helper reports what is wrong at the node's span and returns `None`, so decoding goes on
//! and the user sees all mistakes in one pass instead of fixing them one run at a time.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::diagnostic::{Problems, suggest};
use super::template::Template;
use super::yaml::{Node, Span, Value};

pub struct Cx<'e> {
    pub problems: Problems,
    /// Pipeline `vars`, available as `{{vars.NAME}}`.
    pub vars: BTreeMap<String, String>,
    /// Vars whose value comes from `{{env.X}}`: kept out of commands (and so the journal).
    pub from_env: std::collections::BTreeSet<String>,
    env: &'e dyn Fn(&str) -> Option<String>,
}

impl<'e> Cx<'e> {
    pub fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Cx {
            problems: Problems::default(),
            vars: BTreeMap::new(),
            from_env: Default::default(),
            env,
        }
    }

    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<MapReader<'n>> {
        match &node.value {
            Value::Map(pairs) => {
                let mut entries: Vec<(String, &'n Node, &'n Node)> = Vec::new();
                // By name, so a mapping of 100,000 `vars` is read in linear time.
                let mut index: HashMap<String, usize> = HashMap::with_capacity(pairs.len());
                for (k, v) in pairs {
                    match &k.value {
                        Value::Scalar { text, .. } => {
                            if index.contains_key(text) {
                                self.problems
                                    .add(k.span, format!("`{text}` is given twice in {what}"));
                            } else {
                                index.insert(text.clone(), entries.len());
                                entries.push((text.clone(), k, v));
                            }
                        }
                        _ => self.problems.add(k.span, "keys must be plain words"),
                    }
                }
                Some(MapReader {
                    span: node.span,
                    what: what.to_string(),
                    used: vec![false; entries.len()],
                    entries,
                    index,
                })
            }
            Value::Null => Some(MapReader {
                span: node.span,
                what: what.to_string(),
                used: Vec::new(),
                entries: Vec::new(),
                index: HashMap::new(),
            }),
            _ => {
                self.problems.add(
                    node.span,
                    format!("{what} must be a mapping, found {}", node.kind_name()),
                );
                None
            }
        }
    }

    /// A string scalar with `{{vars.X}}` and `{{env.X}}` substituted.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        let raw = self.raw_string(node, what)?;
        self.interpolate(&raw, node.span)
    }

    /// A string scalar exactly as written.
    pub fn raw_string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.problems.add(
                    node.span,
                    format!("{what} must be a string, found {}", node.kind_name()),
                );
                None
            }
        }
    }

    pub fn nonempty_string(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what)?;
        if s.trim().is_empty() {
            self.problems
                .add(node.span, format!("{what} must not be empty"));
            return None;
        }
        Some(s)
    }

    /// A string, or a list of strings (`foreach: a/*` and `foreach: [a/*, b/*]` both work).
    /// Each string keeps its own span, for errors about one item of a list.
    pub fn strings(&mut self, node: &Node, what: &str) -> Vec<(String, Span)> {
        match &node.value {
            Value::Null => Vec::new(),
            Value::Seq(items) => items
                .iter()
                .filter_map(|n| self.nonempty_string(n, what).map(|s| (s, n.span)))
                .collect(),
            _ => self
                .nonempty_string(node, what)
                .map(|s| (s, node.span))
                .into_iter()
                .collect(),
        }
    }

    pub fn integer(&mut self, node: &Node, what: &str, min: i64, max: i64) -> Option<i64> {
        let parsed = match &node.value {
            Value::Scalar {
                text,
                quoted: false,
            } => text.parse::<i64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.problems.add(
                    node.span,
                    format!("{what} must be between {min} and {max}, found {n}"),
                );
                None
            }
            None => {
                self.problems.add(
                    node.span,
                    format!("{what} must be a whole number, found {}", describe(node)),
                );
                None
            }
        }
    }

    /// One of a fixed set of words; suggests the nearest on a typo.
    pub fn choice<'c>(&mut self, node: &Node, what: &str, choices: &[&'c str]) -> Option<&'c str> {
        let s = self.raw_string(node, what)?;
        if let Some(c) = choices.iter().find(|c| **c == s) {
            return Some(c);
        }
        let list = choices.join(", ");
        match suggest(&s, choices.iter().copied()) {
            Some(near) => self.problems.hint(
                node.span,
                format!("`{s}` is not a valid {what}"),
                format!("did you mean `{near}`? (one of: {list})"),
            ),
            None => self.problems.hint(
                node.span,
                format!("`{s}` is not a valid {what}"),
                format!("use one of: {list}"),
            ),
        }
        None
    }

    pub fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let s = self.raw_string(node, what)?;
        match parse_duration(&s) {
            Some(d) => Some(d),
            None => {
                self.problems.hint(
                    node.span,
                    format!("`{s}` is not a valid {what}"),
                    "write a duration such as 90s, 30m, 2h or 1h30m",
                );
                None
            }
        }
    }

    pub fn template(&mut self, node: &Node, what: &str) -> Option<Template> {
        let raw = self.raw_string(node, what)?;
        match Template::parse(&raw) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problems.add(sub_span(node, &raw, e.offset), e.message);
                None
            }
        }
    }

    /// Replaces `{{vars.X}}` and `{{env.X}}`; anything else in braces is a mistake here.
    pub fn interpolate(&mut self, raw: &str, span: Span) -> Option<String> {
        if !raw.contains("{{") {
            return Some(raw.to_string());
        }
        let t = match Template::parse(raw) {
            Ok(t) => t,
            Err(e) => {
                self.problems.add(span, e.message);
                return None;
            }
        };
        let mut out = String::new();
        let mut ok = true;
        for part in &t.parts {
            match part {
                super::template::Part::Text(s) => out.push_str(s),
                super::template::Part::Var { name, .. } => match self.global(name, span) {
                    Some(v) => out.push_str(&v),
                    None => ok = false,
                },
            }
        }
        ok.then_some(out)
    }

    /// Resolves `vars.X` or `env.X`, reporting why not.
    pub fn global(&mut self, name: &str, span: Span) -> Option<String> {
        if let Some(var) = name.strip_prefix("vars.") {
            if let Some(v) = self.vars.get(var) {
                return Some(v.clone());
            }
            let hint = match suggest(var, self.vars.keys().map(String::as_str)) {
                Some(near) => format!("did you mean `vars.{near}`?"),
                None => "define it under `vars:` at the top of the pipeline file".to_string(),
            };
            self.problems.hint(
                span,
                format!("`{{{{{name}}}}}` names an unknown variable"),
                hint,
            );
            return None;
        }
        if let Some(var) = name.strip_prefix("env.") {
            if let Some(v) = (self.env)(var) {
                return Some(v);
            }
            self.problems.hint(
                span,
                format!("environment variable `{var}` is not set"),
                format!("set {var} before running, or use a pipeline variable instead"),
            );
            return None;
        }
        self.problems.hint(
            span,
            format!("`{{{{{name}}}}}` names an unknown variable"),
            "here only `{{vars.NAME}}` and `{{env.NAME}}` can be used",
        );
        None
    }
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Scalar { text, .. } => format!("`{text}`"),
        _ => node.kind_name().to_string(),
    }
}

/// The span of a position inside a scalar: exact for plain and block scalars, the whole scalar
/// when quoting or escapes make offsets unreliable.
pub fn sub_span(node: &Node, text: &str, offset: usize) -> Span {
    if let Value::Scalar { quoted: false, .. } = node.value
        && node.span.len() >= text.len()
    {
        let start = node.span.start + offset;
        return Span::new(start, start + 2);
    }
    node.span
}

/// Durations such as `90s`, `30m`, `2h`, `1h30m`, `1d`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        any = true;
    }
    (num.is_empty() && any && total > 0).then(|| Duration::from_secs(total))
}

/// Reads a mapping key by key; [`MapReader::finish`] reports the keys nobody asked for.
pub struct MapReader<'n> {
    pub span: Span,
    what: String,
    entries: Vec<(String, &'n Node, &'n Node)>,
    index: HashMap<String, usize>,
    used: Vec<bool>,
}

impl<'n> MapReader<'n> {
    pub fn get(&mut self, key: &str) -> Option<&'n Node> {
        let i = *self.index.get(key)?;
        self.used[i] = true;
        let node = self.entries[i].2;
        // An explicit `key:` with no value counts as absent.
        (!matches!(node.value, Value::Null)).then_some(node)
    }

    pub fn required(&mut self, cx: &mut Cx, key: &str, hint: &str) -> Option<&'n Node> {
        let found = self.get(key);
        if found.is_none() {
            // Point at the key if it is there with no value, else at the mapping's first key
            // (yaml-rust2 marks a block mapping's start after its first key).
            let at = self
                .key_span(key)
                .or_else(|| self.entries.first().map(|(_, k, _)| k.span))
                .unwrap_or(Span::new(self.span.start, self.span.start + 1));
            cx.problems
                .hint(at, format!("{} is missing `{key}`", self.what), hint);
        }
        found
    }

    fn key_span(&self, key: &str) -> Option<Span> {
        self.index.get(key).map(|&i| self.entries[i].1.span)
    }

    pub fn keys(&self) -> impl Iterator<Item = (&str, &'n Node, &'n Node)> {
        self.entries.iter().map(|(k, kn, v)| (k.as_str(), *kn, *v))
    }

    pub fn mark_all_used(&mut self) {
        self.used.iter_mut().for_each(|u| *u = true);
    }

    /// Reports every key not read, with the nearest allowed key as a hint.
    pub fn finish(self, cx: &mut Cx, allowed: &[&str]) {
        for ((key, knode, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let list = allowed.join(", ");
            match suggest(key, allowed.iter().copied()) {
                Some(near) => cx.problems.hint(
                    knode.span,
                    format!("unknown key `{key}` in {}", self.what),
                    format!("did you mean `{near}`?"),
                ),
                None => cx.problems.hint(
                    knode.span,
                    format!("unknown key `{key}` in {}", self.what),
                    format!("allowed here: {list}"),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172800)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("10m5"), None);
        assert_eq!(parse_duration("0s"), None);
    }
}
