//! The one place that names std's atomics and cells.
//!
//! Every algorithm imports `AtomicU32`, `AtomicU64`, `Ordering`, `fence`, [`UnsafeCell`],
//! `spin_loop` and `thread` from here. A build with `RUSTFLAGS="--cfg loom"` swaps them
//! all for loom's model-checked versions; `clippy.toml` forbids the std types elsewhere so
//! nothing slips past the model.
//!
//! Loom's atomics are larger than std's and must be constructed, never conjured from
//! zeroed memory, so code that casts mapped memory to shared structs only runs outside
//! loom; loom models construct those structs on the heap.
#![allow(clippy::disallowed_types)] // this module is the sanctioned exception
#![allow(missing_docs)] // crate-private

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use ::loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering, fence};
#[cfg(loom)]
#[allow(unused_imports)] // used by the loom models
pub(crate) use ::loom::thread;

#[cfg(not(loom))]
#[allow(unused_imports)] // fence serves the ring buffers
pub(crate) use std::sync::atomic::{Ordering, fence};
#[cfg(not(loom))]
#[allow(unused_imports)] // the non-loom build has no model that needs it yet
pub(crate) use std::thread;

/// Defines a `#[repr(transparent)]` wrapper of a std atomic with the subset of methods
/// that loom's atomics also have, so algorithms compile unchanged against either.
#[cfg(not(loom))]
macro_rules! atomic_wrapper {
    ($name:ident, $int:ty) => {
        #[doc = concat!("std's `", stringify!($name), "` with the layout of `", stringify!($int), "`, behind the loom shim.")]
        #[repr(transparent)]
        #[derive(Debug, Default)]
        pub(crate) struct $name(std::sync::atomic::$name);

        #[allow(dead_code)] // not every build uses every method
        impl $name {
            #[inline]
            pub(crate) const fn new(v: $int) -> Self {
                Self(std::sync::atomic::$name::new(v))
            }
            #[inline]
            pub(crate) fn load(&self, order: Ordering) -> $int {
                self.0.load(order)
            }
            #[inline]
            pub(crate) fn store(&self, v: $int, order: Ordering) {
                self.0.store(v, order)
            }
            #[inline]
            pub(crate) fn swap(&self, v: $int, order: Ordering) -> $int {
                self.0.swap(v, order)
            }
            #[inline]
            pub(crate) fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange(current, new, success, failure)
            }
            #[inline]
            pub(crate) fn compare_exchange_weak(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange_weak(current, new, success, failure)
            }
            #[inline]
            pub(crate) fn fetch_add(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_add(v, order)
            }
            #[inline]
            pub(crate) fn fetch_sub(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_sub(v, order)
            }
            #[inline]
            pub(crate) fn fetch_or(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_or(v, order)
            }
            #[inline]
            pub(crate) fn fetch_and(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_and(v, order)
            }
            /// The std atomic inside, for the futex syscalls (never under loom).
            #[inline]
            pub(crate) fn as_std(&self) -> &std::sync::atomic::$name {
                &self.0
            }
        }
    };
}

#[cfg(not(loom))]
atomic_wrapper!(AtomicU8, u8);
#[cfg(not(loom))]
atomic_wrapper!(AtomicU32, u32);
#[cfg(not(loom))]
atomic_wrapper!(AtomicU64, u64);

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use ::loom::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;

/// An `UnsafeCell` whose accesses go through closures, so that loom can see them.
///
/// Outside loom it is a `#[repr(transparent)]` wrapper with the layout of `T`, so it may
/// sit inside shared-memory structs.
#[cfg(not(loom))]
#[repr(transparent)]
#[derive(Debug, Default)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `value`.
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared raw pointer to the contents.
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with an exclusive raw pointer to the contents.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use ::loom::cell::UnsafeCell;

/// The sole writer's increment of a word only it writes (a seqlock's counter under its
/// lock): a load and a store, no locked instruction.
///
/// Under loom it is one `fetch_add` instead. Loom's search looks only at each thread's
/// *next* operation and remembers only the *last* access to each atomic: a thread's own
/// load just before its store hides the other threads' earlier loads, and loom then never
/// tries the orders in which they read the word after the store (a model of `load; store`
/// against one reader explores a single schedule; loom's `fetch_update` is a load and a
/// compare-exchange, and hides them the same way). With no other writer the two are the
/// same change.
pub(crate) trait OwnerAdd<T> {
    /// Adds `delta` (wrapping), the store with `order`; returns the new value.
    fn owner_add(&self, delta: T, order: Ordering) -> T;
}

macro_rules! owner_add {
    ($atomic:ty, $int:ty) => {
        impl OwnerAdd<$int> for $atomic {
            #[inline]
            fn owner_add(&self, delta: $int, order: Ordering) -> $int {
                #[cfg(not(loom))]
                {
                    let new = self.load(Ordering::Relaxed).wrapping_add(delta);
                    self.store(new, order);
                    new
                }
                #[cfg(loom)]
                {
                    self.fetch_add(delta, order).wrapping_add(delta)
                }
            }
        }
    };
}

owner_add!(AtomicU32, u32);
owner_add!(AtomicU64, u64);

/// Runs a loom model built with `builder` and returns how many schedules it explored.
/// Models assert a floor on it: loom's search can silently collapse to a handful of
/// schedules (see `OwnerAdd`), and a model that explores nothing tests nothing.
#[cfg(all(test, loom))]
pub(crate) fn counted(
    builder: ::loom::model::Builder,
    f: impl Fn() + Sync + Send + 'static,
) -> usize {
    let runs = std::sync::Arc::new(std::sync::Mutex::new(0usize));
    let counter = std::sync::Arc::clone(&runs);
    builder.check(move || {
        *counter.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        f();
    });
    *runs.lock().unwrap_or_else(|e| e.into_inner())
}
