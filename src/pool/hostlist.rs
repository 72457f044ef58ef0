//! Host lists in Slurm syntax: `node[01-04,07],gpu1`, `admin@login[1-2]:2222`.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub user: Option<String>,
    pub name: String,
    pub port: Option<u16>,
}

impl Host {
    pub fn is_local(&self) -> bool {
        self.user.is_none()
            && self.port.is_none()
            && matches!(self.name.as_str(), "localhost" | "local" | "127.0.0.1")
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.name)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Expansion stops here: a typo like `n[1-10000000]` must not eat the machine.
pub const MAX_HOSTS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostListError {
    /// Byte offset in the host list text.
    pub offset: usize,
    pub message: String,
}

pub fn parse(text: &str) -> Result<Vec<Host>, HostListError> {
    let mut hosts = Vec::new();
    for (offset, item) in split_top_level(text)? {
        let item_trim = item.trim();
        if item_trim.is_empty() {
            return Err(err(offset, "empty host name in the list"));
        }
        let lead = item.len() - item.trim_start().len();
        for h in parse_item(item_trim, offset + lead)? {
            hosts.push(h);
            if hosts.len() > MAX_HOSTS {
                return Err(err(
                    offset,
                    format!("expands to more than {MAX_HOSTS} hosts"),
                ));
            }
        }
    }
    if hosts.is_empty() {
        return Err(err(0, "the host list is empty"));
    }
    Ok(hosts)
}

fn err(offset: usize, message: impl Into<String>) -> HostListError {
    HostListError {
        offset,
        message: message.into(),
    }
}

/// Splits on commas outside brackets, keeping each piece's offset.
fn split_top_level(text: &str) -> Result<Vec<(usize, &str)>, HostListError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '[' => {
                depth += 1;
                if depth > 1 {
                    return Err(err(i, "brackets cannot nest"));
                }
            }
            ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(err(i, "`]` without `[`"));
                }
            }
            ',' if depth == 0 => {
                out.push((start, &text[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(err(text.rfind('[').unwrap_or(0), "`[` is never closed"));
    }
    out.push((start, &text[start..]));
    Ok(out)
}

fn parse_item(item: &str, offset: usize) -> Result<Vec<Host>, HostListError> {
    let (user, rest, rest_off) = match item.split_once('@') {
        Some((u, r)) => {
            if u.is_empty()
                || !u
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(err(offset, format!("`{u}` is not a valid user name")));
            }
            (Some(u.to_string()), r, offset + u.len() + 1)
        }
        None => (None, item, offset),
    };
    let (pattern, port) = match rest.rsplit_once(':') {
        Some((p, port)) if !port.contains(']') => {
            let n: u16 =
                port.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    err(rest_off + p.len() + 1, format!("`{port}` is not a port"))
                })?;
            (p, Some(n))
        }
        _ => (rest, None),
    };
    let names = expand(pattern, rest_off)?;
    // ssh would read `-oProxyCommand=…` as an option: never a host (stage passes `--`
    // before the name as well).
    if let Some(bad) = names.iter().find(|n| n.starts_with('-')) {
        return Err(err(
            rest_off,
            format!("`{bad}` begins with `-`, which ssh would read as an option"),
        ));
    }
    Ok(names
        .into_iter()
        .map(|name| Host {
            user: user.clone(),
            name,
            port,
        })
        .collect())
}

/// Expands every `[..]` group (cartesian product, zero padding kept).
fn expand(pattern: &str, offset: usize) -> Result<Vec<String>, HostListError> {
    let mut results = vec![String::new()];
    let mut rest = pattern;
    let mut pos = offset;
    while !rest.is_empty() {
        match rest.find('[') {
            None => {
                check_name_chars(rest, pos)?;
                results.iter_mut().for_each(|r| r.push_str(rest));
                break;
            }
            Some(open) => {
                let lit = &rest[..open];
                check_name_chars(lit, pos)?;
                let close = rest[open..]
                    .find(']')
                    .map(|c| open + c)
                    .ok_or_else(|| err(pos + open, "`[` is never closed"))?;
                let body = &rest[open + 1..close];
                let values = range_values(body, pos + open + 1)?;
                let mut next = Vec::with_capacity(results.len() * values.len());
                for r in &results {
                    for v in &values {
                        next.push(format!("{r}{lit}{v}"));
                        if next.len() > MAX_HOSTS {
                            return Err(err(
                                pos,
                                format!("expands to more than {MAX_HOSTS} hosts"),
                            ));
                        }
                    }
                }
                results = next;
                pos += close + 1;
                rest = &rest[close + 1..];
            }
        }
    }
    if results.iter().any(|r| r.is_empty()) {
        return Err(err(offset, "empty host name"));
    }
    Ok(results)
}

fn check_name_chars(s: &str, offset: usize) -> Result<(), HostListError> {
    match s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || *c == '_'))
    {
        Some((i, c)) => Err(err(
            offset + i,
            format!("`{c}` cannot appear in a host name"),
        )),
        None => Ok(()),
    }
}

fn range_values(body: &str, offset: usize) -> Result<Vec<String>, HostListError> {
    let mut out = Vec::new();
    let mut at = offset;
    for piece in body.split(',') {
        let bad = || err(at, format!("`{piece}` is not a number or range like 01-16"));
        match piece.split_once('-') {
            Some((a, b)) => {
                if a.is_empty()
                    || b.is_empty()
                    || !a.chars().chain(b.chars()).all(|c| c.is_ascii_digit())
                {
                    return Err(bad());
                }
                let lo: u64 = a.parse().map_err(|_| bad())?;
                let hi: u64 = b.parse().map_err(|_| bad())?;
                if hi < lo {
                    return Err(err(at, format!("range {a}-{b} runs backwards")));
                }
                if hi - lo >= MAX_HOSTS as u64 {
                    return Err(err(at, format!("expands to more than {MAX_HOSTS} hosts")));
                }
                let width = a.len();
                for n in lo..=hi {
                    out.push(format!("{n:0width$}"));
                }
            }
            None => {
                if piece.is_empty() || !piece.chars().all(|c| c.is_ascii_digit()) {
                    return Err(bad());
                }
                out.push(piece.to_string());
            }
        }
        at += piece.len() + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        parse(s).unwrap().iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn expands_slurm_syntax() {
        assert_eq!(names("node[01-03]"), ["node01", "node02", "node03"]);
        assert_eq!(names("n[1,3-4],gpu"), ["n1", "n3", "n4", "gpu"]);
        assert_eq!(names("root@r[1-2]c[1-2]:2222").len(), 4);
        assert_eq!(names("root@r[1-2]c[1-2]:2222")[1], "root@r1c2:2222");
        assert_eq!(names("localhost"), ["localhost"]);
    }

    #[test]
    fn rejects_bad_lists() {
        for bad in [
            "-oProxyCommand=x",
            "node1,-n2",
            "root@-x",
            "[-1-2]x",
            "n[1-",
            "n[3-1]",
            "n[a-b]",
            "n]",
            "a,,b",
            "n[1-2]:x",
            "n[1-1000000]",
            "n[[1]]",
            "a b",
            "@h",
            "h:0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
