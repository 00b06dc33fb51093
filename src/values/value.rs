//! `Value<T>` and `Array<T>`: plain data with its own lock, like Python's
//! `multiprocessing.Value` and `multiprocessing.Array`.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::error::LayoutProperty;
use crate::error::{LockError, LockResult, OpenError};
use crate::layout::ObjectKind;
use crate::raw::{LockGuard, Mutex, MutexGuard, RawLock};
use crate::segment::constructors::constructors;
use crate::segment::object::Object;
use crate::segment::{Element, Expected, Options, Segment, SegmentInfo, Spec};

/// A single plain value with its own lock, shared by name.
///
/// # Examples
///
/// ```
/// use shmsync::{Options, Value};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-value-{}", std::process::id());
/// let counter = Value::<i64>::create_with(&name, 40, &opts)?;
/// *counter.lock().unwrap() += 2; // read-modify-write under the lock
/// assert_eq!(counter.load(), 42);
/// counter.store(7);
/// Value::<i64>::unlink_with(&name, &opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Value<T: bytemuck::Pod + crate::ShmSafe> {
    inner: Object<Mutex<T>>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> Value<T> {
    constructors! {
        returns Self, what "value";
        /// Creates the value `name` in `/dev/shm`, holding `initial`.
        ///
        /// # Errors
        ///
        /// `AlreadyExists`, `InvalidName`, `NoSpace`, `PermissionDenied`, `Io`: see
        /// [`OpenError`].
        create / create_with (initial: T) = |name, initial, opts| {
            Object::create(name, ObjectKind::Value, opts, |m: &mut Mutex<T>| *m = Mutex::new(initial))
                .map(|inner| Self { inner })
        };
        /// Opens the existing value `name` in `/dev/shm`.
        ///
        /// # Errors
        ///
        /// As [`Lock::open`](crate::Lock::open); `LayoutMismatch` for another element type.
        open / open_with () = |name, opts| {
            Object::open(name, ObjectKind::Value, opts).map(|inner| Self { inner })
        };
        /// Opens the value `name`, or creates it holding `initial` if absent (an existing
        /// value keeps its own contents).
        ///
        /// # Errors
        ///
        /// Those of [`create`](Self::create) and [`open`](Self::open).
        open_or_create / open_or_create_with (initial: T) = |name, initial, opts| {
            Object::open_or_create(name, ObjectKind::Value, opts, |m: &mut Mutex<T>| {
                *m = Mutex::new(initial)
            })
            .map(|inner| Self { inner })
        };
    }

    /// Facts about the segment: name, path, instance id, creator pid, length.
    pub fn info(&self) -> &SegmentInfo {
        self.inner.info()
    }

    /// Locks the value for reading and writing.
    ///
    /// # Errors
    ///
    /// `OwnerDied` (with the guard: the value may be half-written) and `NotRecoverable`,
    /// as [`Lock::lock`](crate::Lock::lock).
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.raw().lock()
    }

    /// A copy of the value, read under the lock.
    ///
    /// A previous owner's death is treated as repaired (the value may then be one that
    /// was half-written); use [`lock`](Self::lock) to handle it yourself.
    ///
    /// # Panics
    ///
    /// If the lock is not recoverable.
    pub fn load(&self) -> T {
        *self.locked()
    }

    /// Replaces the value, under the lock. Deaths are handled as in [`load`](Self::load).
    ///
    /// # Panics
    ///
    /// If the lock is not recoverable.
    pub fn store(&self, value: T) {
        *self.locked() = value;
    }

    /// The value's mutex.
    pub fn raw(&self) -> &Mutex<T> {
        self.inner.get()
    }

    fn locked(&self) -> MutexGuard<'_, T> {
        match self.lock() {
            Ok(guard) => guard,
            Err(LockError::OwnerDied(mut guard)) => {
                guard.mark_consistent();
                guard
            }
            Err(_) => panic!(
                "shmsync: the value's lock is not recoverable (an owner's death was never repaired)"
            ),
        }
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe + std::fmt::Debug> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value").field("name", &self.info().name()).finish_non_exhaustive()
    }
}

/// A fixed-length array of plain values with one lock, shared by name. Created zeroed.
///
/// # Examples
///
/// ```
/// use shmsync::{Array, Options};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-array-{}", std::process::id());
/// let grid = Array::<f64>::create_with(&name, 1024, &opts)?;
/// assert_eq!(grid.len(), 1024);
/// {
///     let mut cells = grid.lock().unwrap();
///     cells[3] = 1.5;
///     assert_eq!(cells.iter().sum::<f64>(), 1.5);
/// }
/// Array::<f64>::unlink_with(&name, &opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Array<T: bytemuck::Pod + crate::ShmSafe> {
    segment: Segment,
    len: usize,
    _holds: PhantomData<T>,
}

// SAFETY: like `Arc<raw::Mutex<[T]>>`: the elements are reached only under the lock.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe + Send> Send for Array<T> {}
// SAFETY: as above.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe + Send> Sync for Array<T> {}

impl<T: bytemuck::Pod + crate::ShmSafe> Array<T> {
    const ALIGN_FITS: () =
        assert!(align_of::<T>() <= 4096, "Array<T> supports alignments up to 4096");

    /// Where the elements start in the payload: after the lock, aligned for `T`.
    const ELEMENTS_AT: usize = size_of::<RawLock>().next_multiple_of(align_of::<T>());

    fn expected() -> Expected {
        Expected {
            kind: ObjectKind::Array,
            element: Element {
                size: size_of::<T>() as u64,
                align: align_of::<T>().max(align_of::<RawLock>()) as u32,
                type_tag: <T as crate::ShmSafe>::type_tag(),
            },
        }
    }

    fn payload_len(len: u64) -> Option<u64> {
        (size_of::<T>() as u64).checked_mul(len)?.checked_add(Self::ELEMENTS_AT as u64)
    }

    fn spec(len: usize) -> Result<Spec, OpenError> {
        let () = Self::ALIGN_FITS;
        let capacity = len as u64;
        let payload_len = Self::payload_len(capacity).ok_or(OpenError::NoSpace)?;
        Ok(Spec { expected: Self::expected(), capacity, payload_len })
    }

    constructors! {
        returns Self, what "array";
        /// Creates the array `name` in `/dev/shm` with `len` zeroed elements.
        ///
        /// # Errors
        ///
        /// `NoSpace` also for a length too large to address; otherwise as
        /// [`Lock::create`](crate::Lock::create).
        create / create_with (len: usize) = |name, len, opts| {
            Segment::create(name, &Self::spec(len)?, opts, |_| {}).and_then(Self::adopt)
        };
        /// Opens the existing array `name` in `/dev/shm`, whatever its length.
        ///
        /// # Errors
        ///
        /// As [`Lock::open`](crate::Lock::open); `LayoutMismatch` for another element type.
        open / open_with () = |name, opts| Segment::open(name, &Self::expected(), opts).and_then(Self::adopt);
        /// Opens the array `name`, or creates it with `len` zeroed elements if absent.
        ///
        /// # Errors
        ///
        /// `LayoutMismatch` if it exists with another length; otherwise those of
        /// [`create`](Self::create) and [`open`](Self::open).
        open_or_create / open_or_create_with (len: usize) = |name, len, opts| Self::open_or_create_len(name, len, opts);
    }
    /// `open_or_create`, checking that an existing array has the length asked for.
    fn open_or_create_len(name: &str, len: usize, opts: &Options) -> Result<Self, OpenError> {
        let array =
            Segment::open_or_create(name, &Self::spec(len)?, opts, |_| {}).and_then(Self::adopt)?;
        if array.len != len {
            return Err(OpenError::layout_mismatch(
                LayoutProperty::Capacity,
                len as u64,
                array.len as u64,
            )
            .named(name));
        }
        Ok(array)
    }

    /// The length checked against the segment at open.
    fn adopt(segment: Segment) -> Result<Self, OpenError> {
        let len = usize::try_from(segment.capacity()).map_err(|_| OpenError::Corrupted)?;
        let want = Self::payload_len(segment.capacity()).ok_or(OpenError::Corrupted)?;
        if segment.payload_len() as u64 != want {
            return Err(OpenError::Corrupted);
        }
        Ok(Self { segment, len, _holds: PhantomData })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Facts about the segment.
    pub fn info(&self) -> &SegmentInfo {
        self.segment.info()
    }

    /// Locks the array; the guard dereferences to `[T]`.
    ///
    /// # Errors
    ///
    /// `OwnerDied` (with the guard) and `NotRecoverable`, as
    /// [`Lock::lock`](crate::Lock::lock).
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        let wrap = |guard| ArrayGuard { guard, array: self };
        self.raw_lock().lock().map(wrap).map_err(|e| e.map(wrap))
    }

    /// The array's lock.
    pub fn raw_lock(&self) -> &RawLock {
        // SAFETY: the payload starts with a RawLock (placed by `spec`, size checked by
        // `adopt`), aligned (payloads are 128-byte aligned), valid for every bit pattern.
        unsafe { &*self.segment.payload().as_ptr().cast::<RawLock>() }
    }

    fn elements(&self) -> NonNull<T> {
        // SAFETY: ELEMENTS_AT + len * size_of::<T>() == payload_len (checked by `adopt`).
        unsafe { self.segment.payload().add(Self::ELEMENTS_AT).cast::<T>() }
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array").field("name", &self.info().name()).field("len", &self.len).finish()
    }
}

/// The elements of a locked [`Array`]; unlocks when dropped.
/// # Examples
///
/// ```
/// use shmsync::Array;
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "arrayguard", std::process::id());
/// let grid = Array::<f64>::create_with(&name, 4, &opts)?;
/// {
///     let mut cells = grid.lock().unwrap(); // derefs to [f64]
///     cells[1] = 2.5;
///     cells[3] = cells[1] * 2.0;
/// }
/// assert_eq!(*grid.lock().unwrap(), [0.0, 2.5, 0.0, 5.0]);
/// # Array::<f64>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: bytemuck::Pod + crate::ShmSafe> {
    guard: LockGuard<'a>,
    array: &'a Array<T>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> ArrayGuard<'_, T> {
    /// Declares the elements repaired after an owner's death; see
    /// [`LockGuard::mark_consistent`].
    pub fn mark_consistent(&mut self) {
        self.guard.mark_consistent();
    }

    /// False for a guard obtained through `OwnerDied` until `mark_consistent`.
    pub fn is_consistent(&self) -> bool {
        self.guard.is_consistent()
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> Deref for ArrayGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `len` elements of T, aligned, inside the mapping (checked at open),
        // valid for every bit pattern; the guard holds the lock.
        unsafe { std::slice::from_raw_parts(self.array.elements().as_ptr(), self.array.len) }
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes this the only access through the guard.
        unsafe { std::slice::from_raw_parts_mut(self.array.elements().as_ptr(), self.array.len) }
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> std::fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("len", &self.array.len)
            .field("consistent", &self.is_consistent())
            .finish()
    }
}
