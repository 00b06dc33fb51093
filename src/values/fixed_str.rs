//! `FixedStr<N>`: a UTF-8 string of at most `N` bytes, stored inline, plain data.

use std::fmt;

/// A UTF-8 string of at most `N` bytes (`N` up to 255) stored inline: plain data
/// ([`Pod`](crate::Pod)), so it can be a queue element, a [`Value`](crate::Value) or a
/// [`List`](crate::List) item.
///
/// Two `FixedStr`s are equal when their strings are (the unused bytes are always zero,
/// so the bytes compare equal too). A `FixedStr` read from shared memory is validated on
/// use: a length past `N` or bytes that are not UTF-8 (a hostile or damaged segment) read
/// as the longest valid prefix, never a panic.
///
/// # Examples
///
/// ```
/// use shmsync::FixedStr;
///
/// let name = FixedStr::<16>::new("alice")?;
/// assert_eq!(name.as_str(), "alice");
/// assert_eq!(name.to_string(), "alice");
/// assert!(FixedStr::<4>::new("too long").is_err());
/// let same: FixedStr<16> = "alice".try_into()?;
/// assert_eq!(name, same);
/// # Ok::<(), shmsync::FixedStrError>(())
/// ```
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FixedStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

const _: () = assert!(size_of::<FixedStr<32>>() == 33 && align_of::<FixedStr<32>>() == 1);

// SAFETY: repr(C) of bytes only (align 1, size N + 1, no padding); every bit pattern is a
// valid value (`as_str` validates what it reads).
unsafe impl<const N: usize> bytemuck::Zeroable for FixedStr<N> {}
// SAFETY: as above; Copy and 'static.
unsafe impl<const N: usize> bytemuck::Pod for FixedStr<N> {}
// SAFETY: Pod. The tag names the type and its capacity.
unsafe impl<const N: usize> crate::ShmSafe for FixedStr<N> {
    fn type_tag() -> u64 {
        crate::layout::Structure::new("FixedStr", N).finish()
    }
}

/// A string longer than a [`FixedStr`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedStrError {
    /// The string's length in bytes.
    pub len: usize,
    /// The most the `FixedStr` holds.
    pub capacity: usize,
}

impl fmt::Display for FixedStrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of {} bytes does not fit in a FixedStr<{}>", self.len, self.capacity)
    }
}

impl std::error::Error for FixedStrError {}

impl<const N: usize> FixedStr<N> {
    const FITS: () = assert!(N <= 255, "FixedStr<N> holds at most 255 bytes");

    /// `s`, if it fits in `N` bytes.
    ///
    /// # Errors
    ///
    /// [`FixedStrError`] if `s` is longer than `N` bytes.
    pub fn new(s: &str) -> Result<Self, FixedStrError> {
        let () = Self::FITS;
        if s.len() > N {
            return Err(FixedStrError { len: s.len(), capacity: N });
        }
        let mut bytes = [0; N];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Self { len: s.len() as u8, bytes })
    }

    /// The string (its longest valid prefix, if the bytes were damaged).
    pub fn as_str(&self) -> &str {
        let bytes = &self.bytes[..(self.len as usize).min(N)];
        match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    /// Whether it is the empty string.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<const N: usize> Default for FixedStr<N> {
    fn default() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

impl<const N: usize> TryFrom<&str> for FixedStr<N> {
    type Error = FixedStrError;

    fn try_from(s: &str) -> Result<Self, FixedStrError> {
        Self::new(s)
    }
}

impl<const N: usize> std::ops::Deref for FixedStr<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> fmt::Display for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> PartialEq for FixedStr<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<const N: usize> Eq for FixedStr<N> {}

impl<const N: usize> std::hash::Hash for FixedStr<N> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl<const N: usize> PartialOrd for FixedStr<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> Ord for FixedStr<N> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn damaged_bytes_read_as_their_valid_prefix() {
        let mut s = FixedStr::<8>::new("héllo").unwrap();
        assert_eq!(s.len(), 6);
        s.len = 200; // past N: read as N
        assert_eq!(s.as_str(), "héllo\0\0");
        s.bytes[1] = 0xff; // not UTF-8
        assert_eq!(s.as_str(), "h");
        assert_eq!(FixedStr::<3>::new("abcd"), Err(FixedStrError { len: 4, capacity: 3 }));
        assert!(FixedStr::<3>::default().is_empty());
        assert!(FixedStr::<8>::new("a").unwrap() < FixedStr::<8>::new("b").unwrap());
    }
}
