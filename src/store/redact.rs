//! Keeps secrets out of every message: a SAS signature or key can ride in a URL that an HTTP
//! error quotes, and error messages reach logs, reports and the journal.

/// Replaces the values of secret-bearing query parameters and key fields with `REDACTED`.
pub fn secrets(text: &str) -> String {
    const KEYS: [&str; 4] = [
        "sig=",
        "AccountKey=",
        "SharedAccessSignature=",
        "access_token=",
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for key in KEYS {
            if rest.len() >= key.len()
                && rest.is_char_boundary(key.len())
                && rest[..key.len()].eq_ignore_ascii_case(key)
            {
                out.push_str(&rest[..key.len()]);
                out.push_str("REDACTED");
                let end = rest[key.len()..]
                    .find(['&', ';', ' ', '"', '\'', ')', '\n', '>'])
                    .map_or(rest.len(), |i| i + key.len());
                rest = &rest[end..];
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_and_keys_are_removed() {
        let s = super::secrets(
            "error sending request for url (http://127.0.0.1:1/a/c?sv=2022&SIG=abc%2Bdef&sp=r): x; AccountKey=Zm9v;EndpointSuffix=y",
        );
        assert!(!s.contains("abc"), "{s}");
        assert!(!s.contains("Zm9v"), "{s}");
        assert!(s.contains("sp=r"), "{s}");
        assert!(s.contains("EndpointSuffix=y"), "{s}");
        assert_eq!(super::secrets("héllo sig="), "héllo sig=REDACTED");
    }
}
