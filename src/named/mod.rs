//! The named synchronisation objects: each is one [`raw`](crate::raw) primitive alone in
//! its own segment, with the constructor family every named object has.

mod barrier;
mod condition;
mod event;
mod lock;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::Condition;
pub use event::Event;
pub use lock::Lock;
pub use rlock::RLock;
pub use semaphore::Semaphore;

/// A wait-set entry on an event or a semaphore: one futex word, whose `WAITERS` flag makes
/// the waking side (`set`, `release`) wake, with the mapping kept alive.
#[cfg(not(loom))]
struct WordSource<T: crate::ShmSafe + Sync> {
    _segment: std::sync::Arc<crate::segment::Segment>,
    raw: std::ptr::NonNull<T>,
    ready: fn(&T) -> bool,
    announce: fn(&T) -> (&crate::loom::AtomicU32, u32),
}

// SAFETY: `raw` leads into the mapping that `_segment` keeps alive; `T` is a raw
// primitive used through `&T` from any thread (Sync).
#[cfg(not(loom))]
unsafe impl<T: crate::ShmSafe + Sync> Send for WordSource<T> {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl<T: crate::ShmSafe + Sync> Sync for WordSource<T> {}

#[cfg(not(loom))]
impl<T: crate::ShmSafe + Sync + 'static> WordSource<T> {
    /// The entry on the primitive in `object`: ready when `ready` says so; sleeps on the
    /// word `announce` flags.
    fn boxed(
        object: &crate::segment::object::Object<T>,
        ready: fn(&T) -> bool,
        announce: fn(&T) -> (&crate::loom::AtomicU32, u32),
    ) -> Box<dyn crate::wake::many::Source> {
        let (segment, raw) = object.shared();
        Box::new(Self { _segment: segment, raw, ready, announce })
    }

    fn raw(&self) -> &T {
        // SAFETY: into the mapping `_segment` keeps alive.
        unsafe { self.raw.as_ref() }
    }
}

#[cfg(not(loom))]
impl<T: crate::ShmSafe + Sync + 'static> crate::wake::many::Source for WordSource<T> {
    fn is_ready(&self) -> bool {
        (self.ready)(self.raw())
    }

    fn announce(&self) -> crate::wake::many::Announced<'_> {
        crate::wake::many::Announced { wake: (self.announce)(self.raw()), death: None }
    }
}
