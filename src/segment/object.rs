//! The named-object plumbing shared by every type that owns one segment holding one
//! `ShmSafe` value: `Shared<T>`, `Lock`, `Event`, `Condition`, `Semaphore`, `Value<T>`.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::OpenError;
use crate::layout::ObjectKind;
use crate::layout::ShmSafe;
use crate::segment::{Element, Expected, Options, Segment, SegmentInfo, Spec};

/// A segment of kind `kind` whose payload is exactly one `T`.
pub(crate) struct Object<T: ShmSafe> {
    /// Shared with the wait-set entries of this object, which keep the mapping alive.
    segment: std::sync::Arc<Segment>,
    _holds: PhantomData<T>,
}

// SAFETY: the handle only gives out `&T`, like `Arc<T>`: sharing it across threads is
// sound when `T: Sync`.
unsafe impl<T: ShmSafe + Sync> Send for Object<T> {}
// SAFETY: as above.
unsafe impl<T: ShmSafe + Sync> Sync for Object<T> {}

impl<T: ShmSafe> Object<T> {
    const ALIGN_FITS: () = assert!(
        align_of::<T>() <= 4096,
        "shared-memory objects support alignments up to the page size (4096)"
    );

    fn expected(kind: ObjectKind) -> Expected {
        Expected {
            kind,
            element: Element {
                size: size_of::<T>() as u64,
                align: align_of::<T>() as u32,
                type_tag: T::type_tag(),
            },
        }
    }

    fn spec(kind: ObjectKind) -> Spec {
        let () = Self::ALIGN_FITS;
        Spec { expected: Self::expected(kind), capacity: 1, payload_len: size_of::<T>() as u64 }
    }

    /// Runs the caller's initialiser on the zeroed payload.
    fn initialiser(init: impl FnOnce(&mut T)) -> impl FnOnce(NonNull<u8>) {
        move |payload| {
            // SAFETY: the payload is size_of::<T>() zeroed bytes aligned for T (the
            // segment placed it), a valid T by the ShmSafe contract, and no other process
            // touches it before the segment is published after this returns.
            init(unsafe { &mut *payload.as_ptr().cast::<T>() })
        }
    }

    pub(crate) fn create(
        name: &str,
        kind: ObjectKind,
        opts: &Options,
        init: impl FnOnce(&mut T),
    ) -> Result<Self, OpenError> {
        Segment::create(name, &Self::spec(kind), opts, Self::initialiser(init))
            .and_then(Self::adopt)
    }

    pub(crate) fn open(name: &str, kind: ObjectKind, opts: &Options) -> Result<Self, OpenError> {
        Segment::open(name, &Self::expected(kind), opts).and_then(Self::adopt)
    }

    pub(crate) fn open_or_create(
        name: &str,
        kind: ObjectKind,
        opts: &Options,
        init: impl FnOnce(&mut T),
    ) -> Result<Self, OpenError> {
        Segment::open_or_create(name, &Self::spec(kind), opts, Self::initialiser(init))
            .and_then(Self::adopt)
    }

    /// Takes a segment whose element matched `T`, checking the parts of the header the
    /// segment layer leaves to each object: the payload must hold exactly one `T`.
    pub(crate) fn adopt(segment: Segment) -> Result<Self, OpenError> {
        if segment.payload_len() != size_of::<T>() || segment.capacity() != 1 {
            return Err(OpenError::Corrupted);
        }
        Ok(Self { segment: std::sync::Arc::new(segment), _holds: PhantomData })
    }

    /// The value in the segment.
    pub(crate) fn get(&self) -> &T {
        // SAFETY: the segment was validated for T's size, alignment and type tag, its
        // payload is exactly size_of::<T>() bytes inside the mapping (`adopt`) and placed
        // aligned for T; every bit pattern is a valid T (ShmSafe), and the mapping lives
        // as long as `self`.
        unsafe { &*self.segment.payload().as_ptr().cast::<T>() }
    }

    /// The value and the mapping that holds it, for a reference that must outlive this
    /// handle's borrow (a wait-set entry): the value stays valid while the `Arc` lives.
    #[cfg(not(loom))]
    pub(crate) fn shared(&self) -> (std::sync::Arc<Segment>, NonNull<T>) {
        (std::sync::Arc::clone(&self.segment), NonNull::from(self.get()))
    }

    pub(crate) fn info(&self) -> &SegmentInfo {
        self.segment.info()
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn heap(kind: ObjectKind, init: impl FnOnce(&mut T)) -> Result<Self, OpenError> {
        Segment::heap(&Self::spec(kind), Self::initialiser(init)).and_then(Self::adopt)
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn heap_with_spec(spec: impl FnOnce(&mut Spec)) -> Result<Self, OpenError> {
        let mut s = Self::spec(ObjectKind::Shared);
        spec(&mut s);
        Segment::heap(&s, |_| {}).and_then(Self::adopt)
    }
}
