//! The one padding type for hot shared fields.

use std::ops::Deref;

/// Aligns and pads `T` to 128 bytes: two cache lines on x86-64, whose adjacent-line
/// prefetcher otherwise couples neighbouring lines. Fields that different processes write
/// (a producer's index, a consumer's index) each get their own.
#[repr(C, align(128))]
#[derive(Debug, Default)]
#[cfg_attr(loom, allow(dead_code))] // its users are left out of loom builds
pub(crate) struct CachePadded<T>(pub(crate) T);

#[cfg(not(loom))]
const _: () =
    assert!(size_of::<CachePadded<u64>>() == 128 && align_of::<CachePadded<u64>>() == 128);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
