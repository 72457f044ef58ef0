//! Container URLs as azcopy and the az CLI take them: `https://ACCOUNT.blob.core.windows.net/
//! CONTAINER/PREFIX`, or the emulator's path style `http://127.0.0.1:10000/ACCOUNT/CONTAINER/
//! PREFIX`.

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Scheme, host and port (and the account segment in path style), no trailing slash.
    pub service: String,
    pub account: String,
    pub container: String,
    /// Blob-name prefix within the container; empty for the whole container.
    pub prefix: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("not a URL: {0}")]
    Parse(String),
    #[error(
        "the URL names no container (expected https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX])"
    )]
    NoContainer,
    #[error(
        "the URL carries a query; pass a SAS token in AZURE_STORAGE_SAS_TOKEN instead, so it stays off command lines and out of logs"
    )]
    Query,
    #[error("cannot tell the storage account from host {0}")]
    NoAccount(String),
    #[error(
        "`{0}` is not a valid container name (3-63 lowercase letters, digits and single hyphens, starting with a letter or digit)"
    )]
    ContainerName(String),
}

/// Emulator hosts put the account in the path.
fn path_style(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
        Some(url::Host::Domain(d)) => d == "localhost" || !d.contains('.'),
        None => false,
    }
}

impl Location {
    pub fn parse(s: &str) -> Result<Location, LocationError> {
        let u = Url::parse(s).map_err(|e| LocationError::Parse(e.to_string()))?;
        if u.query().is_some() {
            return Err(LocationError::Query);
        }
        let host = u.host_str().unwrap_or_default().to_string();
        let mut origin = format!("{}://{host}", u.scheme());
        if let Some(port) = u.port() {
            origin += &format!(":{port}");
        }
        let segments: Vec<String> = u
            .path_segments()
            .map(|s| s.map(percent_decode).collect())
            .unwrap_or_default();
        let mut segs = segments.iter().map(String::as_str);
        let (account, service) = if path_style(&u) {
            let account = segs
                .next()
                .filter(|a| !a.is_empty())
                .ok_or(LocationError::NoContainer)?;
            (account.to_string(), format!("{origin}/{account}"))
        } else {
            let account = host
                .split('.')
                .next()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| LocationError::NoAccount(host.clone()))?;
            (account.to_string(), origin)
        };
        let container = segs
            .next()
            .filter(|c| !c.is_empty())
            .ok_or(LocationError::NoContainer)?
            .to_string();
        if !valid_container(&container) {
            return Err(LocationError::ContainerName(container));
        }
        let prefix = segs.collect::<Vec<_>>().join("/");
        Ok(Location {
            service,
            account,
            container,
            prefix,
        })
    }

    pub fn container_url(&self) -> String {
        format!("{}/{}", self.service, self.container)
    }

    /// For messages: the URL as given, without any query.
    pub fn display(&self) -> String {
        if self.prefix.is_empty() {
            self.container_url()
        } else {
            format!("{}/{}", self.container_url(), self.prefix)
        }
    }
}

/// Azure's rule for container names (plus the special `$root`).
fn valid_container(c: &str) -> bool {
    c == "$root"
        || ((3..=63).contains(&c.len())
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
            && !c.contains("--"))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_url_styles() {
        let l =
            Location::parse("https://acct.blob.core.windows.net/genomics/samples/2026").unwrap();
        assert_eq!(l.service, "https://acct.blob.core.windows.net");
        assert_eq!(l.account, "acct");
        assert_eq!(l.container, "genomics");
        assert_eq!(l.prefix, "samples/2026");
        let l = Location::parse("http://127.0.0.1:10000/devstoreaccount1/cc1/a%20b/").unwrap();
        assert_eq!(l.service, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(l.account, "devstoreaccount1");
        assert_eq!(l.container, "cc1");
        assert_eq!(l.prefix, "a b/");
        assert_eq!(
            l.container_url(),
            "http://127.0.0.1:10000/devstoreaccount1/cc1"
        );
        assert_eq!(
            Location::parse("https://acct.blob.core.windows.net/"),
            Err(LocationError::NoContainer)
        );
        assert_eq!(
            Location::parse("https://acct.blob.core.windows.net/cc1?sv=1&sig=x"),
            Err(LocationError::Query)
        );
        for bad in ["b1", "Upper", "a--b", "-ab", &"x".repeat(64)] {
            assert!(
                matches!(
                    Location::parse(&format!("https://acct.blob.core.windows.net/{bad}/p")),
                    Err(LocationError::ContainerName(_))
                ),
                "{bad}"
            );
        }
    }
}
