//! The naming rules for objects, checked before any file is touched.

use crate::OpenError;

/// The longest name accepted, in bytes (`NAME_MAX` is 255; this leaves room for a
/// suffix that later tools may add).
pub(crate) const MAX_NAME_LEN: usize = 200;

/// Checks `name` against the rules of API.md: 1 to 200 bytes of `[A-Za-z0-9._-]`, not
/// `.` or `..`. The charset excludes `/` and NUL, so a valid name is always exactly one
/// path component and can never climb out of the segment directory.
pub(crate) fn validate_name(name: &str) -> Result<(), OpenError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(allowed);
    if ok { Ok(()) } else { Err(OpenError::InvalidName) }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_charset() {
        for name in ["jobs", "a", "jobs.lock", "A-Z_0.9", "...", ".hidden", &"x".repeat(200)] {
            assert!(validate_name(name).is_ok(), "{name:?} should be valid");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "x".repeat(201);
        for name in ["", ".", "..", "/jobs", "a/b", "jobs/", "a b", "é", "a\0b", "a\nb", "*", &long]
        {
            assert!(
                matches!(validate_name(name), Err(OpenError::InvalidName)),
                "{name:?} should be rejected"
            );
        }
    }
}
