//! `{{name}}` templates used in commands and paths.
//!
//! One syntax everywhere, deliberately unlike the shell's `$VAR`: commands are shell text, and a
//! pipeline must be able to use `$1` in awk or `${x}` in a loop without fighting our interpolation.
//! Values substituted into a command are shell-quoted by [`Template::render_shell`], so file names
//! with spaces, quotes or newlines can never change what the command does.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// A variable reference; `offset` is its byte offset in the template text (for diagnostics).
    Var {
        name: String,
        offset: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub source: String,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// A value bound to a template variable: one word, or several (like `inputs`).
#[derive(Debug, Clone)]
pub enum Binding {
    One(String),
    Many(Vec<String>),
}

pub type Bindings = BTreeMap<String, Binding>;

/// Where a template finds its variables.
pub trait Lookup {
    fn lookup(&self, name: &str) -> Option<&Binding>;
}

impl Lookup for Bindings {
    fn lookup(&self, name: &str) -> Option<&Binding> {
        self.get(name)
    }
}

/// A task's own variables over the step's shared ones, so rendering a task copies nothing
/// of the shared set.
pub struct Layered<'a> {
    pub top: &'a [(&'static str, Binding)],
    pub base: &'a Bindings,
}

impl Lookup for Layered<'_> {
    fn lookup(&self, name: &str) -> Option<&Binding> {
        self.top
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .or_else(|| self.base.get(name))
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut base = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError {
                    offset: base + open,
                    message: "unclosed `{{`: a template variable ends with `}}`".into(),
                });
            };
            let raw = &after[..close];
            let name = raw.trim();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
            if !valid {
                return Err(TemplateError {
                    offset: base + open,
                    message: format!("`{{{{{raw}}}}}` is not a variable name"),
                });
            }
            parts.push(Part::Var {
                name: name.to_string(),
                offset: base + open,
            });
            let consumed = open + 2 + close + 2;
            base += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    pub fn vars(&self) -> impl Iterator<Item = (&str, usize)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var { name, offset } => Some((name.as_str(), *offset)),
            Part::Text(_) => None,
        })
    }

    pub fn is_literal(&self) -> bool {
        self.vars().next().is_none()
    }

    /// Substitutes raw values: for paths, where the result is never parsed by a shell.
    pub fn render_raw(&self, b: &impl Lookup) -> Result<String, String> {
        self.render(b, |v| v.to_string(), " ")
    }

    /// Substitutes shell-quoted values: for commands run by `sh -c`.
    pub fn render_shell(&self, b: &impl Lookup) -> Result<String, String> {
        self.render(b, shell_quote, " ")
    }

    fn render(
        &self,
        b: &impl Lookup,
        quote: impl Fn(&str) -> String,
        sep: &str,
    ) -> Result<String, String> {
        let mut out = String::with_capacity(self.source.len() + 64);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var { name, .. } => match b.lookup(name) {
                    Some(Binding::One(v)) => out.push_str(&quote(v)),
                    Some(Binding::Many(vs)) => {
                        let words: Vec<String> = vs.iter().map(|v| quote(v)).collect();
                        out.push_str(&words.join(sep));
                    }
                    None => return Err(name.clone()),
                },
            }
        }
        Ok(out)
    }
}

/// POSIX single-quote quoting: the only quoting with no special characters inside.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./,:=+@%".contains(&c))
        && !s.starts_with('-')
    {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        if c == '\'' {
            q.push_str("'\\''");
        } else {
            q.push(c);
        }
    }
    q.push('\'');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let t = Template::parse("wc -l {{input}} > {{ output }}").unwrap();
        let mut b = Bindings::new();
        b.insert("input".into(), Binding::One("a b'c".into()));
        b.insert("output".into(), Binding::One("out.txt".into()));
        assert_eq!(t.render_shell(&b).unwrap(), "wc -l 'a b'\\''c' > out.txt");
        assert_eq!(t.render_raw(&b).unwrap(), "wc -l a b'c > out.txt");
    }

    #[test]
    fn reports_unclosed_and_bad_names() {
        assert_eq!(Template::parse("x {{input").unwrap_err().offset, 2);
        assert!(Template::parse("{{ a b }}").is_err());
        assert!(Template::parse("awk '{print $1}'").unwrap().is_literal());
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        let hostile = "-n $(touch /tmp/pwned) `x` \"q\" 'single'\nnewline ; rm -rf";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(hostile)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), hostile);
    }
}
