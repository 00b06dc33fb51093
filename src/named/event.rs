//! `Event`: a named event flag in its own segment.

use std::time::{Duration, Instant};

use crate::layout::ObjectKind;
use crate::raw::RawEvent;
use crate::segment::constructors::zeroed_object_constructors;
use crate::segment::object::Object;

/// A flag shared by name between processes, like Python's `multiprocessing.Event`.
///
/// It starts cleared. [`set`](Self::set) wakes every waiter and makes no syscall when
/// nobody waits.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{Event, Options};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-event-{}", std::process::id());
/// let ready = Event::create_with(&name, &opts)?;
/// assert!(!ready.wait_timeout(Duration::from_millis(1))); // false: timed out
/// ready.set();                                            // usually in another process
/// ready.wait();
/// Event::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub struct Event {
    inner: Object<RawEvent>,
}

impl Event {
    zeroed_object_constructors!(ObjectKind::Event, "event", "cleared");

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.raw().set();
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.raw().clear();
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.raw().is_set()
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        self.raw().wait();
    }

    /// Blocks until the flag is set or `timeout` passes; returns the flag (false: timed
    /// out).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.raw().wait_timeout(timeout)
    }

    /// Blocks until the flag is set or `deadline` passes; returns the flag.
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.raw().wait_deadline(deadline)
    }

    /// Awaits the flag (feature `async`, any executor): at once if it is set. Unlike
    /// [`wait`](Self::wait), a `set` undone by a `clear` before this future looks again
    /// is not seen: it returns when it finds the flag set.
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn wait_async(&self) {
        let mut waits = crate::waitset::reactor::Waits::new();
        while !self.is_set() {
            waits.next(self.wait_source()).await;
        }
    }

    /// A wait-set entry that is ready while the flag is set.
    #[cfg(not(loom))]
    pub(crate) fn wait_source(&self) -> Box<dyn crate::wake::many::Source> {
        super::WordSource::boxed(&self.inner, RawEvent::is_set, RawEvent::announce_waiter)
    }

    /// The event itself.
    pub fn raw(&self) -> &RawEvent {
        self.inner.get()
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.info().name())
            .field("set", &self.is_set())
            .finish()
    }
}
