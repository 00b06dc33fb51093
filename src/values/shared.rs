//! `Shared<T>`: a user-defined `#[repr(C)]` layout in one named segment.

use std::any::type_name;
use std::fmt;
use std::ops::Deref;

use crate::layout::{ObjectKind, ShmSafe};
use crate::segment::SegmentInfo;
use crate::segment::constructors::constructors;
use crate::segment::object::Object;

/// A value of a user-defined type `T` in its own named segment.
///
/// This is the building block for layouts of your own: a `#[repr(C)]` struct of raw
/// primitives, atomics and plain data, created once and opened by name from any process
/// of the same user. `Shared<T>` dereferences to `&T`; all mutation goes through `T`'s
/// own atomics or primitives.
///
/// The segment records `T`'s size, alignment and [`ShmSafe::type_tag`]; opening it as
/// another type fails with [`OpenError::LayoutMismatch`](crate::OpenError::LayoutMismatch).
///
/// Dropping a `Shared` unmaps it; the name stays until [`Shared::unlink`].
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use shmsync::{Options, Shared, ShmSafe};
///
/// #[repr(C)]
/// struct Tally {
///     total: AtomicU64,
/// }
/// // SAFETY: repr(C), every bit pattern is valid, no pointers, all shared state atomic.
/// unsafe impl ShmSafe for Tally {}
///
/// # let name = format!("doc-shared-{}", std::process::id());
/// # let opts = Options::new().dir(std::env::temp_dir());
/// let a = Shared::<Tally>::create_with(&name, |t| *t.total.get_mut() = 10, &opts)?;
/// let b = Shared::<Tally>::open_with(&name, &opts)?; // usually in another process
/// b.total.fetch_add(1, Ordering::SeqCst);
/// assert_eq!(a.total.load(Ordering::SeqCst), 11);
/// assert_eq!(a.info().instance_id(), b.info().instance_id());
///
/// // Another type, even of the same size, is refused.
/// let wrong = Shared::<u64>::open_with(&name, &opts);
/// assert!(matches!(wrong, Err(shmsync::OpenError::LayoutMismatch { .. })));
/// Shared::<Tally>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub struct Shared<T: ShmSafe> {
    inner: Object<T>,
}

impl<T: ShmSafe> Shared<T> {
    constructors! {
        returns Self, what "segment";
        /// Creates the segment `name` in `/dev/shm`, zero-filled, and runs `init` on it
        /// before any other process can open it.
        ///
        /// # Errors
        ///
        /// `AlreadyExists` if the name is taken, `InvalidName`, `NoSpace` when the file
        /// system is full, `PermissionDenied`, or `Io` for other OS failures. If `init`
        /// panics, the half-made segment is unlinked and the panic continues.
        create / create_with (init: impl FnOnce(&mut T)) = |name, init, opts| {
            Object::create(name, ObjectKind::Shared, opts, init).map(|inner| Self { inner })
        };
        /// Opens the existing segment called `name` in `/dev/shm`.
        ///
        /// # Errors
        ///
        /// `NotFound`, `InvalidName`, `NotInitialized` (its creator did not finish within the
        /// open timeout), `KindMismatch` (another kind of object), `LayoutMismatch`,
        /// `VersionMismatch`, `Corrupted`, `PermissionDenied`, `Io`: see
        /// [`OpenError`](crate::OpenError).
        open / open_with () = |name, opts| {
            Object::open(name, ObjectKind::Shared, opts).map(|inner| Self { inner })
        };
        /// Opens `name`, or creates it if absent. Race-free between processes: of many
        /// concurrent callers exactly one creates and runs `init`, and all of them end up
        /// mapping that one segment.
        ///
        /// # Errors
        ///
        /// Those of [`create`](Self::create) and [`open`](Self::open).
        open_or_create / open_or_create_with (init: impl FnOnce(&mut T)) = |name, init, opts| {
            Object::open_or_create(name, ObjectKind::Shared, opts, init).map(|inner| Self { inner })
        };
    }

    /// Facts about the segment: name, path, instance id, creator pid, length.
    pub fn info(&self) -> &SegmentInfo {
        self.inner.info()
    }
}

impl<T: ShmSafe> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.inner.get()
    }
}

impl<T: ShmSafe> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("type", &type_name::<T>())
            .field("info", self.info())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::OpenError;

    #[test]
    fn a_heap_segment_derefs_to_the_initialised_value() {
        let inner = Object::<[u64; 4]>::heap(ObjectKind::Shared, |v| {
            assert_eq!(*v, [0; 4]);
            v[2] = 7;
        })
        .unwrap();
        let shared = Shared { inner };
        assert_eq!(*shared, [0, 0, 7, 0]);
        assert!(format!("{shared:?}").contains("[u64; 4]"));
    }

    #[test]
    fn a_payload_of_another_length_is_refused() {
        // A header that claims less room than one u64, or several of them.
        let short = Object::<u64>::heap_with_spec(|s| s.payload_len = 4);
        assert!(matches!(short, Err(OpenError::Corrupted)));
        let many = Object::<u64>::heap_with_spec(|s| s.capacity = 2);
        assert!(matches!(many, Err(OpenError::Corrupted)));
    }
}
