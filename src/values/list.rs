//! `List<T>`: Python's `Manager().list()` without a manager: a list of plain values with a
//! fixed capacity in one named segment, changed in place by any process, never left
//! half-changed by a process that dies mid-operation.
//!
//! # Crash consistency
//!
//! Every operation runs under the list's robust lock. Those that change more than the
//! length in one store first write a *redo record* (`op`, `index`, `len_before`,
//! `progress` and, for `insert` and `set`, a value), then make the change, then clear
//! `op`. The next process to take the lock after a death (it gets `OwnerDied`) finishes
//! the recorded operation, which every step is written to allow, and marks the lock
//! consistent: users never see `OwnerDied`.
//!
//! | `op` | the change | finishing it |
//! |---|---|---|
//! | `NONE` | none in flight (`push`, `pop`, `clear`, `extend_from_slice` change only `len` last) | nothing |
//! | `SET` | `slots[index] = new` (the record holds the *old* value) | write the old value back (undo) |
//! | `INSERT` | shift `slots[index..len_before]` up one, from the top; `progress` is the next slot to fill; then `slots[index] = value`, `len = len_before + 1` | continue the shift from `progress`, write the value, set `len` |
//! | `REMOVE` | shift `slots[index + 1..len_before]` down one; `progress` is the next slot to fill; then `len = len_before - 1` | continue from `progress`, set `len` |
//! | `SWAP_REMOVE` | `slots[index] = slots[len_before - 1]`, `len = len_before - 1` | do both again |
//!
//! Each step copies from a slot the operation has not written yet, so doing a step twice
//! is harmless.

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::{CapacityError, Corrupted, IndexError, InsertError, LockError};
use crate::layout::ObjectKind;
use crate::loom::{AtomicU32, AtomicU64, Ordering};
use crate::raw::{LockGuard, RawLock};
use crate::segment::constructors::constructors;
use crate::segment::{Element, Expected, Segment, SegmentInfo, Spec};
use crate::{OpenError, ShmSafe};

const NONE: u32 = 0;
const SET: u32 = 1;
const INSERT: u32 = 2;
const REMOVE: u32 = 3;
const SWAP_REMOVE: u32 = 4;

/// The list's control block; the record's value and the slots follow.
#[repr(C)]
#[derive(Default)]
pub(crate) struct Control {
    lock: RawLock,
    len: AtomicU64,
    op: AtomicU32,
    _reserved: AtomicU32,
    index: AtomicU64,
    len_before: AtomicU64,
    progress: AtomicU64,
}

const CONTROL_LEN: usize = 128;

impl Control {
    /// The lock's word and the length, for `shmsync inspect`.
    #[cfg(not(loom))]
    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        let mut out = self.lock.describe();
        out.push(("len", self.len.load(Ordering::Relaxed).to_string()));
        out
    }
}
const _: () = assert!(size_of::<Control>() <= CONTROL_LEN);

/// A list of plain values in a named segment, with a fixed capacity.
///
/// Python's `Manager().list()`, with no server: every process that opens the list by name
/// reads and changes it in place, under one robust lock. A process killed in the middle
/// of any operation leaves every value there either as before or as after the operation,
/// and the length right (see the module's crash-consistency table); [`check`](Self::check)
/// verifies it.
///
/// # Examples
///
/// ```
/// use shmsync::{List, Options};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-list-{}", std::process::id());
/// let log = List::<u64>::create_with(&name, 4, &opts)?;
/// log.push(10).unwrap();
/// log.extend_from_slice(&[20, 30]).unwrap();
/// log.insert(0, 5).unwrap();
/// assert_eq!(log.to_vec(), [5, 10, 20, 30]);
/// assert_eq!(log.push(40).unwrap_err().into_inner(), 40); // full: the value comes back
/// assert_eq!(log.remove(1), Some(10));
/// {
///     let mut all = log.lock(); // a batch under one lock
///     all.push(50).unwrap();
///     assert_eq!(&all[..], [5, 20, 30, 50]);
/// }
/// assert!(log.check().is_ok());
/// # List::<u64>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub struct List<T: bytemuck::Pod + ShmSafe> {
    /// The mapping the pointers below point into (none for a list on the heap, which
    /// only the loom model builds).
    segment: Option<Segment>,
    control: NonNull<Control>,
    record: NonNull<T>,
    slots: NonNull<T>,
    capacity: usize,
    _holds: PhantomData<T>,
}

// SAFETY: the values are reached only under the lock, like `Arc<Mutex<Vec<T>>>`.
unsafe impl<T: bytemuck::Pod + ShmSafe + Send> Send for List<T> {}
// SAFETY: as above.
unsafe impl<T: bytemuck::Pod + ShmSafe + Send> Sync for List<T> {}

impl<T: bytemuck::Pod + ShmSafe> List<T> {
    const ALIGN_FITS: () = assert!(align_of::<T>() <= 128, "List<T> supports alignments up to 128");
    /// The redo record's value, after the control block.
    const RECORD_AT: usize = CONTROL_LEN.next_multiple_of(align_of::<T>());
    /// The slots, after the record's value.
    const SLOTS_AT: usize = (Self::RECORD_AT + size_of::<T>()).next_multiple_of(align_of::<T>());

    fn expected() -> Expected {
        Expected {
            kind: ObjectKind::List,
            element: Element {
                size: size_of::<T>() as u64,
                align: align_of::<T>().max(align_of::<Control>()) as u32,
                type_tag: T::type_tag(),
            },
        }
    }

    fn payload_len(capacity: u64) -> Option<u64> {
        (size_of::<T>() as u64).checked_mul(capacity)?.checked_add(Self::SLOTS_AT as u64)
    }

    fn spec(capacity: usize) -> Result<Spec, OpenError> {
        let () = Self::ALIGN_FITS;
        if capacity == 0 || capacity as u64 > 1 << 40 {
            return Err(crate::error::invalid_capacity(
                capacity as u64,
                "a list's capacity must be 1..=2^40".to_owned(),
            ));
        }
        let payload_len = Self::payload_len(capacity as u64).ok_or(OpenError::NoSpace)?;
        Ok(Spec { expected: Self::expected(), capacity: capacity as u64, payload_len })
    }

    fn adopt(segment: Segment) -> Result<Self, OpenError> {
        let capacity = usize::try_from(segment.capacity()).map_err(|_| OpenError::Corrupted)?;
        if Self::payload_len(segment.capacity()) != Some(segment.payload_len() as u64) {
            return Err(OpenError::Corrupted);
        }
        let base = segment.payload();
        // SAFETY: the control block, the record and `capacity` slots lie inside the
        // payload (its length was just checked), which lives as long as `segment`.
        let (record, slots) = unsafe {
            (base.add(Self::RECORD_AT).cast::<T>(), base.add(Self::SLOTS_AT).cast::<T>())
        };
        let control = base.cast::<Control>();
        Ok(Self { segment: Some(segment), control, record, slots, capacity, _holds: PhantomData })
    }

    constructors! {
        returns Self, what "list";
        /// Creates the empty list `name` in `/dev/shm`, with room for `capacity` values.
        ///
        /// # Errors
        ///
        /// `InvalidCapacity` for 0 or more than 2^40; otherwise as
        /// [`Lock::create`](crate::Lock::create).
        create / create_with (capacity: usize) = |name, capacity, opts| {
            Segment::create(name, &Self::spec(capacity)?, opts, |_| {}).and_then(Self::adopt)
        };
        /// Opens the existing list `name` in `/dev/shm`.
        ///
        /// # Errors
        ///
        /// As [`Lock::open`](crate::Lock::open); `LayoutMismatch` for another element type.
        open / open_with () = |name, opts| Segment::open(name, &Self::expected(), opts).and_then(Self::adopt);
        /// Opens the list `name`, or creates it empty with `capacity` if absent (an existing
        /// list keeps its own capacity).
        ///
        /// # Errors
        ///
        /// Those of [`create`](Self::create) and [`open`](Self::open).
        open_or_create / open_or_create_with (capacity: usize) = |name, capacity, opts| {
            Segment::open_or_create(name, &Self::spec(capacity)?, opts, |_| {}).and_then(Self::adopt)
        };
    }

    /// Facts about the segment.
    pub fn info(&self) -> &SegmentInfo {
        match &self.segment {
            Some(segment) => segment.info(),
            None => unreachable!("only the loom model builds a list without a segment"),
        }
    }

    fn control(&self) -> &Control {
        // SAFETY: the payload (or the model's heap block) starts with a Control (placed
        // by `spec`, sizes checked by `adopt`), 128-byte aligned, every bit pattern valid
        // (a lock and atomics), alive as long as `self`.
        unsafe { self.control.as_ref() }
    }

    fn slots(&self) -> NonNull<T> {
        self.slots
    }

    fn record(&self) -> NonNull<T> {
        self.record
    }

    /// The most values the list holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of values now (a snapshot; changes may follow at once).
    pub fn len(&self) -> usize {
        (self.control().len.load(Ordering::Acquire) as usize).min(self.capacity)
    }

    /// Whether the list is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the lock for a batch of operations; the guard derefs to `&[T]` and has the
    /// list's changing operations.
    pub fn lock(&self) -> ListGuard<'_, T> {
        ListGuard { list: self, _guard: self.locked() }
    }

    /// The lock, with a dead owner's operation finished first. A lock made not
    /// recoverable (only a hostile process can do that: this code always repairs) is
    /// taken over by force: the repair runs and the word is reset.
    fn locked(&self) -> Option<LockGuard<'_>> {
        match self.control().lock.lock() {
            Ok(guard) => Some(guard),
            Err(LockError::OwnerDied(mut guard)) => {
                self.repair();
                guard.mark_consistent();
                Some(guard)
            }
            Err(_) => None,
        }
    }

    fn read(&self, i: usize) -> T {
        debug_assert!(i < self.capacity);
        // SAFETY: i < capacity; the slots lie inside the payload; every bit pattern is a
        // valid T; the caller holds the lock, so no other process writes the slot.
        unsafe { self.slots().add(i).read() }
    }

    fn write(&self, i: usize, value: T) {
        debug_assert!(i < self.capacity);
        // SAFETY: as in `read`; the lock makes this process the only writer.
        unsafe { self.slots().add(i).write(value) }
    }

    /// The length, validated against the capacity (a hostile length reads as full).
    fn len_locked(&self) -> usize {
        (self.control().len.load(Ordering::Relaxed) as usize).min(self.capacity)
    }

    fn set_len(&self, len: usize) {
        self.control().len.store(len as u64, Ordering::Release);
    }

    /// Finishes the operation a dead owner left in the record (the lock is held).
    fn repair(&self) {
        let c = self.control();
        let cap = self.capacity;
        let index = c.index.load(Ordering::Acquire) as usize;
        let len_before = c.len_before.load(Ordering::Relaxed) as usize;
        let mut progress = c.progress.load(Ordering::Relaxed) as usize;
        match c.op.load(Ordering::Acquire) {
            SET if index < cap => {
                // SAFETY: the record slot holds a T (written before `op`).
                let old = unsafe { self.record().read() };
                self.write(index, old);
            }
            INSERT if index <= len_before && len_before < cap => {
                progress = progress.min(len_before);
                while progress > index {
                    self.write(progress, self.read(progress - 1));
                    progress -= 1;
                }
                // SAFETY: as above.
                self.write(index, unsafe { self.record().read() });
                self.set_len(len_before + 1);
            }
            REMOVE if index < len_before && len_before <= cap => {
                progress = progress.max(index);
                while progress + 1 < len_before {
                    self.write(progress, self.read(progress + 1));
                    progress += 1;
                }
                self.set_len(len_before - 1);
            }
            SWAP_REMOVE if index < len_before && len_before <= cap => {
                self.write(index, self.read(len_before - 1));
                self.set_len(len_before - 1);
            }
            _ => {} // NONE, or a record a hostile writer damaged: nothing safe to redo
        }
        c.op.store(NONE, Ordering::Release);
        if c.len.load(Ordering::Relaxed) as usize > cap {
            self.set_len(cap);
        }
    }

    /// Writes the record's fields, then its `op` (Release: a repairer that sees the op
    /// sees the fields).
    fn begin(&self, op: u32, index: usize, len_before: usize, progress: usize, value: Option<T>) {
        let c = self.control();
        if let Some(value) = value {
            // SAFETY: the record slot is inside the payload; we hold the lock.
            unsafe { self.record().write(value) };
        }
        c.index.store(index as u64, Ordering::Relaxed);
        c.len_before.store(len_before as u64, Ordering::Relaxed);
        c.progress.store(progress as u64, Ordering::Relaxed);
        c.op.store(op, Ordering::Release);
    }

    fn end(&self) {
        self.control().op.store(NONE, Ordering::Release);
    }

    fn push_locked(&self, value: T) -> Result<(), CapacityError<T>> {
        let len = self.len_locked();
        if len == self.capacity {
            return Err(CapacityError { value, capacity: self.capacity });
        }
        self.write(len, value);
        self.set_len(len + 1); // the value counts only from here
        Ok(())
    }

    fn pop_locked(&self) -> Option<T> {
        let len = self.len_locked().checked_sub(1)?;
        let value = self.read(len);
        self.set_len(len);
        Some(value)
    }

    fn set_locked(&self, index: usize, value: T) -> Result<T, IndexError> {
        let len = self.len_locked();
        if index >= len {
            return Err(IndexError { index, len });
        }
        let old = self.read(index);
        self.begin(SET, index, len, 0, Some(old));
        self.write(index, value);
        self.end();
        Ok(old)
    }

    fn insert_locked(&self, index: usize, value: T) -> Result<(), InsertError<T>> {
        let len = self.len_locked();
        if index > len {
            return Err(InsertError::OutOfRange { value, index, len });
        }
        if len == self.capacity {
            return Err(InsertError::Full(value));
        }
        self.begin(INSERT, index, len, len, Some(value));
        let progress = &self.control().progress;
        for j in (index + 1..=len).rev() {
            self.write(j, self.read(j - 1));
            progress.store((j - 1) as u64, Ordering::Release);
        }
        self.write(index, value);
        self.set_len(len + 1);
        self.end();
        Ok(())
    }

    fn remove_locked(&self, index: usize) -> Option<T> {
        let len = self.len_locked();
        if index >= len {
            return None;
        }
        let value = self.read(index);
        self.begin(REMOVE, index, len, index, None);
        let progress = &self.control().progress;
        for j in index..len - 1 {
            self.write(j, self.read(j + 1));
            progress.store((j + 1) as u64, Ordering::Release);
        }
        self.set_len(len - 1);
        self.end();
        Some(value)
    }

    fn swap_remove_locked(&self, index: usize) -> Option<T> {
        let len = self.len_locked();
        if index >= len {
            return None;
        }
        let value = self.read(index);
        self.begin(SWAP_REMOVE, index, len, 0, None);
        self.write(index, self.read(len - 1));
        self.set_len(len - 1);
        self.end();
        Some(value)
    }

    fn extend_locked(&self, values: &[T]) -> Result<(), CapacityError<usize>> {
        let len = self.len_locked();
        if values.len() > self.capacity - len {
            return Err(CapacityError { value: values.len(), capacity: self.capacity });
        }
        for (k, &v) in values.iter().enumerate() {
            self.write(len + k, v);
        }
        self.set_len(len + values.len());
        Ok(())
    }

    /// Appends `value`.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] carrying `value` back if the list is full.
    pub fn push(&self, value: T) -> Result<(), CapacityError<T>> {
        match self.locked() {
            Some(_g) => self.push_locked(value),
            None => Err(CapacityError { value, capacity: self.capacity }),
        }
    }

    /// Removes and returns the last value, if any.
    pub fn pop(&self) -> Option<T> {
        let _g = self.locked()?;
        self.pop_locked()
    }

    /// The value at `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<T> {
        let _g = self.locked()?;
        (index < self.len_locked()).then(|| self.read(index))
    }

    /// Replaces the value at `index`; returns the old one.
    ///
    /// # Errors
    ///
    /// [`IndexError`] if `index` is not below the length.
    pub fn set(&self, index: usize, value: T) -> Result<T, IndexError> {
        let Some(_g) = self.locked() else { return Err(IndexError { index, len: 0 }) };
        self.set_locked(index, value)
    }

    /// Inserts `value` at `index`, shifting the later values up.
    ///
    /// # Errors
    ///
    /// `Full` or `OutOfRange` (`index > len`), with the value back.
    pub fn insert(&self, index: usize, value: T) -> Result<(), InsertError<T>> {
        let Some(_g) = self.locked() else { return Err(InsertError::Full(value)) };
        self.insert_locked(index, value)
    }

    /// Removes and returns the value at `index`, shifting the later ones down.
    pub fn remove(&self, index: usize) -> Option<T> {
        let _g = self.locked()?;
        self.remove_locked(index)
    }

    /// Removes and returns the value at `index`, moving the last value into its place.
    pub fn swap_remove(&self, index: usize) -> Option<T> {
        let _g = self.locked()?;
        self.swap_remove_locked(index)
    }

    /// Removes every value.
    pub fn clear(&self) {
        if let Some(_g) = self.locked() {
            self.set_len(0);
        }
    }

    /// Appends all of `values`, or none if they do not all fit.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] carrying how many values were offered.
    pub fn extend_from_slice(&self, values: &[T]) -> Result<(), CapacityError<usize>> {
        match self.locked() {
            Some(_g) => self.extend_locked(values),
            None => Err(CapacityError { value: values.len(), capacity: self.capacity }),
        }
    }

    /// A copy of every value, in order.
    pub fn to_vec(&self) -> Vec<T> {
        let Some(_g) = self.locked() else { return Vec::new() };
        (0..self.len_locked()).map(|i| self.read(i)).collect()
    }

    /// Verifies the list's invariants (after finishing a dead owner's operation): no
    /// operation left in the record, the length within the capacity, the lock usable.
    ///
    /// # Errors
    ///
    /// [`Corrupted`] naming the broken invariant.
    pub fn check(&self) -> Result<(), Corrupted> {
        let Some(_g) = self.locked() else {
            return Err(Corrupted { what: "the lock is not recoverable".into() });
        };
        let c = self.control();
        let op = c.op.load(Ordering::Acquire);
        if op != NONE {
            return Err(Corrupted { what: format!("an operation ({op}) is left in the record") });
        }
        let len = c.len.load(Ordering::Relaxed);
        if len > self.capacity as u64 {
            return Err(Corrupted {
                what: format!("length {len} past capacity {}", self.capacity),
            });
        }
        Ok(())
    }
}

impl<T: bytemuck::Pod + ShmSafe> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("List")
            .field("name", &self.segment.as_ref().map(|s| s.info().name()))
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The list, locked: derefs to `&[T]` and changes it in a batch (see [`List::lock`]).
pub struct ListGuard<'a, T: bytemuck::Pod + ShmSafe> {
    list: &'a List<T>,
    _guard: Option<LockGuard<'a>>,
}

impl<T: bytemuck::Pod + ShmSafe> std::ops::Deref for ListGuard<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        if self._guard.is_none() {
            return &[];
        }
        let len = self.list.len_locked();
        // SAFETY: `len` slots (<= capacity) inside the payload, aligned; every bit
        // pattern valid; the lock (held by this guard) keeps other processes from
        // writing them while the slice lives, which borrows the guard.
        unsafe { std::slice::from_raw_parts(self.list.slots().as_ptr(), len) }
    }
}

impl<T: bytemuck::Pod + ShmSafe> ListGuard<'_, T> {
    fn held(&self) -> bool {
        self._guard.is_some()
    }

    /// [`List::push`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`List::push`].
    pub fn push(&mut self, value: T) -> Result<(), CapacityError<T>> {
        if !self.held() {
            return Err(CapacityError { value, capacity: self.list.capacity });
        }
        self.list.push_locked(value)
    }

    /// [`List::pop`] under this lock.
    pub fn pop(&mut self) -> Option<T> {
        if !self.held() {
            return None;
        }
        self.list.pop_locked()
    }

    /// [`List::set`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`List::set`].
    pub fn set(&mut self, index: usize, value: T) -> Result<T, IndexError> {
        if !self.held() {
            return Err(IndexError { index, len: 0 });
        }
        self.list.set_locked(index, value)
    }

    /// [`List::insert`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`List::insert`].
    pub fn insert(&mut self, index: usize, value: T) -> Result<(), InsertError<T>> {
        if !self.held() {
            return Err(InsertError::Full(value));
        }
        self.list.insert_locked(index, value)
    }

    /// [`List::remove`] under this lock.
    pub fn remove(&mut self, index: usize) -> Option<T> {
        if !self.held() {
            return None;
        }
        self.list.remove_locked(index)
    }

    /// [`List::swap_remove`] under this lock.
    pub fn swap_remove(&mut self, index: usize) -> Option<T> {
        if !self.held() {
            return None;
        }
        self.list.swap_remove_locked(index)
    }

    /// [`List::clear`] under this lock.
    pub fn clear(&mut self) {
        if self.held() {
            self.list.set_len(0);
        }
    }

    /// [`List::extend_from_slice`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`List::extend_from_slice`].
    pub fn extend_from_slice(&mut self, values: &[T]) -> Result<(), CapacityError<usize>> {
        if !self.held() {
            return Err(CapacityError { value: values.len(), capacity: self.list.capacity });
        }
        self.list.extend_locked(values)
    }
}

impl<T: bytemuck::Pod + ShmSafe + fmt::Debug> fmt::Debug for ListGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Loom model: on a list on the heap, two threads push and one pops; every value is
/// pushed once and either popped once or left, and the length agrees.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use std::sync::Arc;

    /// The heap memory of a model's list: a control block and `1 + capacity` values
    /// (the record's, then the slots), freed when the last thread lets go.
    struct Heap {
        control: Box<Control>,
        values: NonNull<[u32]>,
    }

    // SAFETY: plain heap memory, reached only through the list's protocol.
    unsafe impl Send for Heap {}
    // SAFETY: as above.
    unsafe impl Sync for Heap {}

    impl Drop for Heap {
        fn drop(&mut self) {
            // SAFETY: made by Box::into_raw in `heap_list`, freed once.
            drop(unsafe { Box::from_raw(self.values.as_ptr()) });
        }
    }

    fn heap_list(capacity: usize) -> (List<u32>, Arc<Heap>) {
        let values = vec![0u32; 1 + capacity].into_boxed_slice();
        let heap =
            Arc::new(Heap { control: Box::default(), values: NonNull::from(Box::leak(values)) });
        let first = heap.values.cast::<u32>();
        let list = List {
            segment: None,
            control: NonNull::from(&*heap.control),
            record: first,
            // SAFETY: the block holds 1 + capacity values.
            slots: unsafe { first.add(1) },
            capacity,
            _holds: PhantomData,
        };
        (list, heap)
    }

    #[test]
    fn pushes_and_pops_from_three_threads_account_for_every_value() {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        let runs = crate::loom::counted(builder, || {
            let (list, heap) = heap_list(4);
            let list = Arc::new(list);
            let pushers: Vec<_> = (0..2u32)
                .map(|t| {
                    let (list, _heap) = (Arc::clone(&list), Arc::clone(&heap));
                    crate::loom::thread::spawn(move || {
                        let _keep = _heap;
                        list.push(t * 10 + 1).unwrap();
                        list.insert(0, t * 10 + 2).unwrap();
                    })
                })
                .collect();
            let popper = {
                let (list, _heap) = (Arc::clone(&list), Arc::clone(&heap));
                crate::loom::thread::spawn(move || {
                    let _keep = _heap;
                    list.pop()
                })
            };
            for p in pushers {
                p.join().unwrap();
            }
            let popped = popper.join().unwrap();
            let mut all = list.to_vec();
            all.extend(popped);
            all.sort_unstable();
            assert_eq!(all, [1, 2, 11, 12]);
            assert_eq!(list.len(), 4 - usize::from(popped.is_some()));
            assert!(list.check().is_ok());
        });
        assert!(runs > 250, "loom explored only {runs} schedules"); // 1,138 when written
    }
}
