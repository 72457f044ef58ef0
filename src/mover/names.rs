//! Blob and file names that are safe to turn into paths.
//!
//! A blob name is attacker-controlled text: `../../etc/cron.d/x`, `/abs`, `a/./b` or a NUL must
//! never become a path outside the target directory.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing name {name:?}: {why}")]
pub struct UnsafeName {
    pub name: String,
    pub why: &'static str,
}

/// A name as messages show it: escaped (`"a\nb"`) when it holds a control character, so one
/// error is one line and the character can be seen; as it is otherwise.
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().any(char::is_control) {
        format!("{name:?}").into()
    } else {
        name.into()
    }
}

/// Checks that `name` is a relative path of normal components.
pub fn check(name: &str) -> Result<(), UnsafeName> {
    let bad = |why| {
        Err(UnsafeName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty name");
    }
    if name.contains('\0') {
        return bad("contains NUL");
    }
    if name.starts_with('/') {
        return bad("absolute path");
    }
    if name.len() > 4096 {
        return bad("longer than 4096 bytes");
    }
    if name.split('/').next() == Some(crate::beneath::TMP_DIR) {
        return bad("reserved for stage's own temporary files");
    }
    for c in name.split('/') {
        match c {
            "" => return bad("empty path component"),
            "." | ".." => return bad("`.` or `..` component"),
            c if c.len() > 255 => return bad("component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(super::shown("a\nb\r\tc"), r#""a\nb\r\tc""#);
        assert_eq!(super::shown("plain name ✓"), "plain name ✓");
        let e = crate::store::StoreError::item("x\ny", "boom");
        assert_eq!(e.to_string(), r#""x\ny": boom"#);
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\0b",
            "x/..",
            ".stage-tmp",
            ".stage-tmp/0/x",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for ok in [
            "a",
            "a b/c'd",
            "dir/..x",
            "ünï/\n/x",
            ".hidden",
            "big.stage-tmp",
            "d/.stage-tmp",
        ] {
            assert!(check(ok).is_ok(), "{ok:?}");
        }
    }
}
