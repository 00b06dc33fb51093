//! `Dict<K, V>`: Python's `Manager().dict()` without a manager: a hash map of plain keys
//! and values in one named segment, changed in place by any process.
//!
//! # Layout
//!
//! A header (the hash key, the shard count and size), then `SHARDS` shards, each a
//! control block (a robust lock, a sequence counter, the length, a redo record) and its
//! own open-addressing table of slots (`state`, key, value). A key's hash picks its shard
//! and its first slot; probing is linear and bounded by the shard's size.
//!
//! Keys compare by their bytes (`K: Pod`, so there is no padding to differ in): for floats
//! that means `0.0` and `-0.0` are different keys and a NaN finds itself. The hash is
//! SipHash-1-3 with a random 128-bit key chosen at creation and stored in the segment:
//! the same in every process and binary, and not floodable by chosen keys.
//!
//! # Writers and readers
//!
//! Writers take their shard's lock, so writers of keys in different shards do not wait
//! for each other. Readers take no lock: they read the shard's sequence counter (even:
//! stable), probe, copy the value out with volatile reads, and read the counter again;
//! a writer makes it odd for the length of its change, and a reader that saw a change
//! retries. A reader that keeps finding it odd (its writer died) takes the lock, which
//! finishes the dead writer's change.
//!
//! # Crash consistency
//!
//! | `op` | the change | after a death |
//! |---|---|---|
//! | `NONE` | none in flight | nothing |
//! | `INSERT` | a free slot gets key and value, then `FULL`, then `len + 1` | undone: the slot's old state and `len` are restored |
//! | `UPDATE` | a slot's value is overwritten (the record holds the old one) | undone: the old value is written back |
//! | `REMOVE` | a slot becomes a tombstone, then `len - 1` | undone: the slot is `FULL` again, `len` restored |
//! | `CLEAR` | every slot emptied, `len = 0` | finished |
//!
//! The next process to take the lock (it gets `OwnerDied`) applies the table, makes the
//! sequence counter even again and marks the lock consistent: users never see
//! `OwnerDied`.

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::{CapacityError, Corrupted, LockError};
use crate::layout::ObjectKind;
use crate::loom::{AtomicU32, AtomicU64, Ordering, OwnerAdd, fence};
use crate::raw::{LockGuard, RawLock};
use crate::segment::constructors::constructors;
use crate::segment::{Element, Expected, Segment, SegmentInfo, Spec};
use crate::{OpenError, ShmSafe};

const EMPTY: u32 = 0;
const FULL: u32 = 1;
const TOMB: u32 = 2;

const NONE: u32 = 0;
const INSERT: u32 = 1;
const UPDATE: u32 = 2;
const REMOVE: u32 = 3;
const CLEAR: u32 = 4;

/// Shards of a dict: writers of different shards never wait for each other.
const SHARDS: usize = 16;
/// Reads a reader retries before it takes the lock.
const OPTIMISTIC_TRIES: usize = 64;

#[repr(C)]
struct Header {
    sip: [AtomicU64; 2],
    shards: AtomicU64,
    shard_slots: AtomicU64,
}

/// A shard's control block: 128 bytes (aligned so, the shards can be indexed as an
/// array both in a segment and in a loom model's heap).
#[repr(C, align(128))]
#[cfg_attr(loom, derive(Default))]
struct Shard {
    lock: RawLock,
    seq: AtomicU64,
    len: AtomicU64,
    op: AtomicU32,
    slot: AtomicU32,
    old_state: AtomicU32,
    _reserved: AtomicU32,
    old_len: AtomicU64,
}

const HEADER_LEN: usize = 128;
const SHARD_LEN: usize = 128;
#[cfg(not(loom))]
const _: () = assert!(size_of::<Header>() <= HEADER_LEN && size_of::<Shard>() == SHARD_LEN);

/// One slot: its state word, then the key and the value.
#[cfg(not(loom))]
#[repr(C)]
struct Slot<K, V> {
    state: AtomicU32,
    key: K,
    value: V,
}

/// The loom model's slot: the key and the value in atomic words, so loom interleaves a
/// reader's copy with a writer's word by word (and can show a torn value, were the
/// sequence counter not there to catch it). Plain memory would be invisible to it.
#[cfg(loom)]
struct Slot<K, V> {
    state: AtomicU32,
    key: loom_words::Words<K>,
    value: loom_words::Words<V>,
}

#[cfg(loom)]
impl<K, V> Default for Slot<K, V> {
    fn default() -> Self {
        Self { state: AtomicU32::new(EMPTY), key: Default::default(), value: Default::default() }
    }
}

/// A hash map of plain keys and values in a named segment, with a fixed capacity.
///
/// Python's `Manager().dict()`, with no server: every process that opens the dict by
/// name reads and changes it in place. Writers lock one of 16 shards; readers take no
/// lock. A process killed in the middle of any operation leaves every entry either as
/// before or as after it, `len` right and no key twice; [`check`](Self::check) verifies.
/// See the module documentation for the layout, the hash and how keys compare.
///
/// # Examples
///
/// ```
/// use shmsync::{Dict, FixedStr, Options};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-dict-{}", std::process::id());
/// let scores = Dict::<FixedStr<16>, u64>::create_with(&name, 1024, &opts)?;
/// let alice = FixedStr::new("alice").unwrap();
/// assert_eq!(scores.insert(alice, 10).unwrap(), None);
/// assert!(scores.update(&alice, |v| *v += 5));
/// assert_eq!(scores.get(&alice), Some(15));
/// assert_eq!(scores.get_or_insert_with(FixedStr::new("bob").unwrap(), || 1).unwrap(), 1);
/// assert_eq!(scores.len(), 2);
/// assert_eq!(scores.remove(&alice), Some(15));
/// assert!(scores.check().is_ok());
/// # Dict::<FixedStr<16>, u64>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub struct Dict<K: bytemuck::Pod + ShmSafe + Eq, V: bytemuck::Pod + ShmSafe> {
    /// The mapping the pointers below point into (none for a dict on the heap, which
    /// only the loom model builds).
    segment: Option<Segment>,
    shards: NonNull<Shard>,
    records: NonNull<Slot<K, V>>,
    tables: NonNull<Slot<K, V>>,
    capacity: usize,
    shard_slots: usize,
    sip: (u64, u64),
    _holds: PhantomData<(K, V)>,
}

// SAFETY: entries are changed only under their shard's lock and read with the sequence
// protocol; the handle is a mapping, like `Arc<RwLock<HashMap<K, V>>>`.
unsafe impl<K: bytemuck::Pod + ShmSafe + Eq + Send, V: bytemuck::Pod + ShmSafe + Send> Send
    for Dict<K, V>
{
}
// SAFETY: as above.
unsafe impl<K: bytemuck::Pod + ShmSafe + Eq + Send, V: bytemuck::Pod + ShmSafe + Send> Sync
    for Dict<K, V>
{
}

/// Where a key is, or where it would go (a free slot, with the state it had).
enum Probe {
    Found(usize),
    Vacant(usize, u32),
    Full,
}

impl<K: bytemuck::Pod + ShmSafe + Eq, V: bytemuck::Pod + ShmSafe> Dict<K, V> {
    const ALIGN_FITS: () = assert!(
        align_of::<Slot<K, V>>() <= 128,
        "Dict supports key and value alignments up to 128"
    );
    /// The record's old key and value, after the shards' control blocks.
    const RECORD_AT: usize =
        (HEADER_LEN + SHARDS * SHARD_LEN).next_multiple_of(align_of::<Slot<K, V>>());
    /// The tables, after the record of each shard.
    const TABLES_AT: usize = (Self::RECORD_AT + SHARDS * size_of::<Slot<K, V>>())
        .next_multiple_of(align_of::<Slot<K, V>>());

    fn expected() -> Expected {
        Expected {
            kind: ObjectKind::Dict,
            element: Element {
                size: size_of::<Slot<K, V>>() as u64,
                align: align_of::<Slot<K, V>>().max(128) as u32,
                type_tag: crate::layout::Structure::new("Dict", 0)
                    .field("key", 0, K::type_tag())
                    .field("value", 0, V::type_tag())
                    .finish(),
            },
        }
    }

    /// Slots per shard for `capacity` entries: twice the share, so probes stay short.
    fn shard_slots_for(capacity: usize) -> usize {
        (capacity * 2).div_ceil(SHARDS).next_power_of_two().max(8)
    }

    fn payload_len(shard_slots: u64) -> Option<u64> {
        (size_of::<Slot<K, V>>() as u64)
            .checked_mul(shard_slots)?
            .checked_mul(SHARDS as u64)?
            .checked_add(Self::TABLES_AT as u64)
    }

    fn spec(capacity: usize) -> Result<Spec, OpenError> {
        let () = Self::ALIGN_FITS;
        if capacity == 0 || capacity as u64 > 1 << 36 {
            return Err(crate::error::invalid_capacity(
                capacity as u64,
                "a dict's capacity must be 1..=2^36".to_owned(),
            ));
        }
        let slots = Self::shard_slots_for(capacity) as u64;
        let payload_len = Self::payload_len(slots).ok_or(OpenError::NoSpace)?;
        Ok(Spec { expected: Self::expected(), capacity: capacity as u64, payload_len })
    }

    /// The creator's initialiser: the hash key and the shape.
    fn initialise(capacity: usize) -> impl FnOnce(NonNull<u8>) {
        move |payload| {
            // SAFETY: the payload starts with a zeroed Header (atomics), ours alone until
            // the segment is published.
            let header = unsafe { &*payload.as_ptr().cast::<Header>() };
            let mut key = [0u8; 16];
            let _ = rustix::rand::getrandom(&mut key, rustix::rand::GetRandomFlags::empty());
            let k0 = u64::from_le_bytes(key[..8].try_into().unwrap_or([1; 8]));
            let k1 = u64::from_le_bytes(key[8..].try_into().unwrap_or([2; 8]));
            header.sip[0].store(k0, Ordering::Relaxed);
            header.sip[1].store(k1, Ordering::Relaxed);
            header.shards.store(SHARDS as u64, Ordering::Relaxed);
            header.shard_slots.store(Self::shard_slots_for(capacity) as u64, Ordering::Relaxed);
        }
    }

    fn adopt(segment: Segment) -> Result<Self, OpenError> {
        let capacity = usize::try_from(segment.capacity()).map_err(|_| OpenError::Corrupted)?;
        // SAFETY: the payload is at least TABLES_AT long (checked next, before any use
        // beyond the header, which is first and 128 bytes).
        let header = unsafe { &*segment.payload().as_ptr().cast::<Header>() };
        let shard_slots = header.shard_slots.load(Ordering::Relaxed);
        let shape_ok = header.shards.load(Ordering::Relaxed) == SHARDS as u64
            && shard_slots == Self::shard_slots_for(capacity) as u64
            && Self::payload_len(shard_slots) == Some(segment.payload_len() as u64);
        if !shape_ok {
            return Err(OpenError::Corrupted);
        }
        let sip = (header.sip[0].load(Ordering::Relaxed), header.sip[1].load(Ordering::Relaxed));
        let base = segment.payload();
        // SAFETY: the shards, the records and the tables lie inside the payload (its
        // length was just checked), which lives as long as `segment`.
        let (shards, records, tables) = unsafe {
            (
                base.add(HEADER_LEN).cast::<Shard>(),
                base.add(Self::RECORD_AT).cast::<Slot<K, V>>(),
                base.add(Self::TABLES_AT).cast::<Slot<K, V>>(),
            )
        };
        Ok(Self {
            segment: Some(segment),
            shards,
            records,
            tables,
            capacity,
            shard_slots: shard_slots as usize,
            sip,
            _holds: PhantomData,
        })
    }

    constructors! {
        returns Self, what "dict";
        /// Creates the empty dict `name` in `/dev/shm` with room for `capacity` entries
        /// (its table has twice as many slots; an insert into a crowded shard can fail a
        /// little before `capacity`).
        ///
        /// # Errors
        ///
        /// `InvalidCapacity` for 0 or more than 2^36; otherwise as
        /// [`Lock::create`](crate::Lock::create).
        create / create_with (capacity: usize) = |name, capacity, opts| {
            Segment::create(name, &Self::spec(capacity)?, opts, Self::initialise(capacity))
                .and_then(Self::adopt)
        };
        /// Opens the existing dict `name` in `/dev/shm`.
        ///
        /// # Errors
        ///
        /// As [`Lock::open`](crate::Lock::open); `LayoutMismatch` for other key or value
        /// types.
        open / open_with () = |name, opts| Segment::open(name, &Self::expected(), opts).and_then(Self::adopt);
        /// Opens the dict `name`, or creates it empty with `capacity` if absent.
        ///
        /// # Errors
        ///
        /// Those of [`create`](Self::create) and [`open`](Self::open).
        open_or_create / open_or_create_with (capacity: usize) = |name, capacity, opts| {
            Segment::open_or_create(name, &Self::spec(capacity)?, opts, Self::initialise(capacity))
                .and_then(Self::adopt)
        };
    }

    /// Facts about the segment.
    pub fn info(&self) -> &SegmentInfo {
        match &self.segment {
            Some(segment) => segment.info(),
            None => unreachable!("only the loom model builds a dict without a segment"),
        }
    }

    /// The entries the dict was created for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn shard(&self, s: usize) -> &Shard {
        debug_assert!(s < SHARDS);
        // SAFETY: SHARDS control blocks follow the 128-byte header, inside the payload
        // (adopt checked its length), or the model's heap; a lock and atomics only.
        unsafe { self.shards.add(s).as_ref() }
    }

    fn slot(&self, s: usize, i: usize) -> NonNull<Slot<K, V>> {
        debug_assert!(s < SHARDS && i < self.shard_slots);
        // SAFETY: the tables hold SHARDS * shard_slots slots, inside the payload (adopt)
        // or the model's heap, aligned for the slot.
        unsafe { self.tables.add(s * self.shard_slots + i) }
    }

    fn state(&self, s: usize, i: usize) -> &AtomicU32 {
        // SAFETY: a slot starts with its state word, an atomic.
        unsafe { &(*self.slot(s, i).as_ptr()).state }
    }

    fn record(&self, s: usize) -> NonNull<Slot<K, V>> {
        // SAFETY: one record slot per shard, inside the payload or the model's heap.
        unsafe { self.records.add(s) }
    }

    /// Reads a slot's key (a writer may change it under a lock-free reader, who then
    /// retries).
    fn key(&self, s: usize, i: usize) -> K {
        read_key(self.slot(s, i))
    }

    /// Reads a slot's value, as [`key`](Self::key).
    fn value(&self, s: usize, i: usize) -> V {
        read_value(self.slot(s, i))
    }

    /// Writes a slot's key (if given) and value; the shard's lock is held.
    fn write_entry(&self, s: usize, i: usize, key: Option<K>, value: V) {
        let slot = self.slot(s, i);
        if let Some(key) = key {
            write_key(slot, key);
        }
        write_value(slot, value);
    }

    /// SipHash-1-3 of the key's bytes with the dict's key.
    fn hash(&self, key: &K) -> u64 {
        sip13(self.sip, bytemuck::bytes_of(key))
    }

    fn place(&self, key: &K) -> (usize, usize) {
        let h = self.hash(key);
        ((h as usize) % SHARDS, ((h >> 32) as usize) & (self.shard_slots - 1))
    }

    /// Probes shard `s` from `home` for `key` (readers and writers alike; bounded by the
    /// shard's size, whatever the states say).
    fn probe(&self, s: usize, home: usize, key: &K) -> Probe {
        let mut vacant = None;
        for step in 0..self.shard_slots {
            let i = (home + step) & (self.shard_slots - 1);
            match self.state(s, i).load(Ordering::Acquire) {
                EMPTY => {
                    let (at, state) = vacant.unwrap_or((i, EMPTY));
                    return Probe::Vacant(at, state);
                }
                FULL => {
                    if bytemuck::bytes_of(&self.key(s, i)) == bytemuck::bytes_of(key) {
                        return Probe::Found(i);
                    }
                }
                // A tombstone, or a state no writer writes: step over it.
                other => {
                    vacant.get_or_insert((i, other));
                }
            }
        }
        vacant.map_or(Probe::Full, |(at, state)| Probe::Vacant(at, state))
    }

    /// The shard's lock, with a dead writer's change undone or finished first.
    fn lock_shard(&self, s: usize) -> Option<LockGuard<'_>> {
        match self.shard(s).lock.lock() {
            Ok(g) => Some(g),
            Err(LockError::OwnerDied(mut g)) => {
                self.repair(s);
                g.mark_consistent();
                Some(g)
            }
            Err(_) => None,
        }
    }

    fn repair(&self, s: usize) {
        let sh = self.shard(s);
        let i = sh.slot.load(Ordering::Acquire) as usize;
        let old_len = sh.old_len.load(Ordering::Relaxed);
        match sh.op.load(Ordering::Acquire) {
            INSERT if i < self.shard_slots => {
                let old = sh.old_state.load(Ordering::Relaxed);
                self.state(s, i).store(if old == TOMB { TOMB } else { EMPTY }, Ordering::Release);
                sh.len.store(old_len, Ordering::Release);
            }
            UPDATE if i < self.shard_slots => {
                // The record slot holds the old value (written before `op`).
                self.write_entry(s, i, None, read_value(self.record(s)));
            }
            REMOVE if i < self.shard_slots => {
                self.state(s, i).store(FULL, Ordering::Release);
                sh.len.store(old_len, Ordering::Release);
            }
            CLEAR => {
                for j in 0..self.shard_slots {
                    self.state(s, j).store(EMPTY, Ordering::Release);
                }
                sh.len.store(0, Ordering::Release);
            }
            _ => {}
        }
        sh.op.store(NONE, Ordering::Release);
        // A writer that died left the counter odd: make it even (and new) again.
        let seq = sh.seq.load(Ordering::Relaxed);
        if seq & 1 == 1 {
            sh.seq.store(seq.wrapping_add(1), Ordering::Release);
        }
    }

    /// Starts a change of shard `s`: the record, then the odd sequence number. `old_len`
    /// is what undoing an INSERT or REMOVE restores (the other changes ignore it).
    fn begin(
        &self,
        s: usize,
        op: u32,
        slot: usize,
        old_state: u32,
        old_len: u64,
        old_value: Option<V>,
    ) {
        let sh = self.shard(s);
        if let Some(v) = old_value {
            write_value(self.record(s), v);
        }
        sh.slot.store(slot as u32, Ordering::Relaxed);
        sh.old_state.store(old_state, Ordering::Relaxed);
        sh.old_len.store(old_len, Ordering::Relaxed);
        sh.op.store(op, Ordering::Release);
        // Odd: readers retry. Only the lock's holder writes the counter, so a plain
        // store does; the fence keeps the entry's writes after it.
        if sh.seq.owner_add(1, Ordering::Relaxed) & 1 == 0 {
            // It was odd with the lock cleanly ours: only hostile memory does that.
            sh.seq.owner_add(1, Ordering::Relaxed);
        }
        fence(Ordering::Release);
    }

    fn end(&self, s: usize) {
        let sh = self.shard(s);
        sh.seq.owner_add(1, Ordering::Release); // even: stable
        sh.op.store(NONE, Ordering::Release);
    }

    /// Shard `s`'s length (its lock held), read once per change.
    fn len_of(&self, s: usize) -> u64 {
        self.shard(s).len.load(Ordering::Relaxed)
    }

    /// Whether a shard of length `len` may take another entry: a quarter of it stays
    /// free, so probes end early.
    fn has_room(&self, len: u64) -> bool {
        (len as usize) < self.shard_slots * 3 / 4
    }

    /// Puts a new entry in the free slot `i` of shard `s` (in `old_state`, as the probe
    /// found it), now of length `len` (its lock held).
    fn insert_at(&self, s: usize, i: usize, old_state: u32, len: u64, key: K, value: V) {
        let sh = self.shard(s);
        self.begin(s, INSERT, i, old_state, len, None);
        self.write_entry(s, i, Some(key), value);
        self.state(s, i).store(FULL, Ordering::Release);
        sh.len.store(len + 1, Ordering::Release);
        self.end(s);
    }

    /// Inserts `value` under `key`; returns the value it replaced, if any.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] carrying the pair back if the key's shard has no free slot.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, CapacityError<(K, V)>> {
        let (s, home) = self.place(&key);
        let full = || CapacityError { value: (key, value), capacity: self.capacity };
        let Some(_g) = self.lock_shard(s) else { return Err(full()) };
        match self.probe(s, home, &key) {
            Probe::Found(i) => {
                let old = self.value(s, i);
                self.begin(s, UPDATE, i, FULL, 0, Some(old));
                self.write_entry(s, i, None, value);
                self.end(s);
                Ok(Some(old))
            }
            Probe::Vacant(i, old_state) => {
                let len = self.len_of(s);
                if !self.has_room(len) {
                    return Err(full());
                }
                self.insert_at(s, i, old_state, len, key, value);
                Ok(None)
            }
            Probe::Full => Err(full()),
        }
    }

    /// The value under `key`, read without a lock.
    pub fn get(&self, key: &K) -> Option<V> {
        let (s, home) = self.place(key);
        let sh = self.shard(s);
        for _ in 0..OPTIMISTIC_TRIES {
            let before = sh.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                crate::loom::spin_loop();
                continue;
            }
            let found = match self.probe(s, home, key) {
                Probe::Found(i) => Some(self.value(s, i)),
                _ => None,
            };
            fence(Ordering::Acquire);
            if sh.seq.load(Ordering::Relaxed) == before {
                return found;
            }
        }
        // Writers keep changing the shard, or one died mid-change: read under the lock
        // (which finishes a dead writer's change).
        let _g = self.lock_shard(s)?;
        match self.probe(s, home, key) {
            Probe::Found(i) => Some(self.value(s, i)),
            _ => None,
        }
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Removes `key`; returns its value.
    pub fn remove(&self, key: &K) -> Option<V> {
        let (s, home) = self.place(key);
        let _g = self.lock_shard(s)?;
        let Probe::Found(i) = self.probe(s, home, key) else { return None };
        let value = self.value(s, i);
        let sh = self.shard(s);
        let len = self.len_of(s);
        self.begin(s, REMOVE, i, FULL, len, None);
        self.state(s, i).store(TOMB, Ordering::Release);
        sh.len.store(len.saturating_sub(1), Ordering::Release);
        self.end(s);
        Some(value)
    }

    /// Changes the value under `key` in place with `f`, under the shard's lock; returns
    /// whether the key was there.
    pub fn update(&self, key: &K, f: impl FnOnce(&mut V)) -> bool {
        let (s, home) = self.place(key);
        let Some(_g) = self.lock_shard(s) else { return false };
        let Probe::Found(i) = self.probe(s, home, key) else { return false };
        let old = self.value(s, i);
        let mut new = old;
        f(&mut new);
        self.begin(s, UPDATE, i, FULL, 0, Some(old));
        self.write_entry(s, i, None, new);
        self.end(s);
        true
    }

    /// The value under `key`, inserting `make()` first if there is none (atomically).
    ///
    /// # Errors
    ///
    /// [`CapacityError`] carrying the pair back if the key's shard has no free slot.
    pub fn get_or_insert_with(
        &self,
        key: K,
        make: impl FnOnce() -> V,
    ) -> Result<V, CapacityError<(K, V)>> {
        let (s, home) = self.place(&key);
        let Some(_g) = self.lock_shard(s) else {
            return Err(CapacityError { value: (key, make()), capacity: self.capacity });
        };
        match self.probe(s, home, &key) {
            Probe::Found(i) => Ok(self.value(s, i)),
            Probe::Vacant(i, old_state) => {
                let len = self.len_of(s);
                let value = make();
                if !self.has_room(len) {
                    return Err(CapacityError { value: (key, value), capacity: self.capacity });
                }
                self.insert_at(s, i, old_state, len, key, value);
                Ok(value)
            }
            Probe::Full => Err(CapacityError { value: (key, make()), capacity: self.capacity }),
        }
    }

    /// The number of entries now (a sum over the shards, a snapshot).
    pub fn len(&self) -> usize {
        (0..SHARDS)
            .map(|s| (self.shard(s).len.load(Ordering::Acquire) as usize).min(self.shard_slots))
            .sum()
    }

    /// Whether the dict is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry (shard by shard).
    pub fn clear(&self) {
        for s in 0..SHARDS {
            let Some(_g) = self.lock_shard(s) else { continue };
            self.begin(s, CLEAR, 0, EMPTY, 0, None);
            for i in 0..self.shard_slots {
                self.state(s, i).store(EMPTY, Ordering::Release);
            }
            self.shard(s).len.store(0, Ordering::Release);
            self.end(s);
        }
    }

    /// Every entry, shard by shard, each shard read under its lock.
    pub fn items(&self) -> Vec<(K, V)> {
        let mut out = Vec::new();
        for s in 0..SHARDS {
            let Some(_g) = self.lock_shard(s) else { continue };
            for i in 0..self.shard_slots {
                if self.state(s, i).load(Ordering::Acquire) == FULL {
                    out.push((self.key(s, i), self.value(s, i)));
                }
            }
        }
        out
    }

    /// Every key (a snapshot, as [`items`](Self::items)).
    pub fn keys(&self) -> Vec<K> {
        self.items().into_iter().map(|(k, _)| k).collect()
    }

    /// Every value (a snapshot, as [`items`](Self::items)).
    pub fn values(&self) -> Vec<V> {
        self.items().into_iter().map(|(_, v)| v).collect()
    }

    /// Verifies every invariant, shard by shard under its lock (after finishing a dead
    /// writer's change): no change left in a record, even sequence counters, every state
    /// known, `len` equal to the full slots, no key twice, and every key found by a
    /// lookup from its own hash.
    ///
    /// # Errors
    ///
    /// [`Corrupted`] naming the first broken invariant.
    pub fn check(&self) -> Result<(), Corrupted> {
        let bad = |what: String| Err(Corrupted { what });
        for s in 0..SHARDS {
            let Some(_g) = self.lock_shard(s) else {
                return bad(format!("shard {s}: the lock is not recoverable"));
            };
            let sh = self.shard(s);
            if sh.op.load(Ordering::Acquire) != NONE || sh.seq.load(Ordering::Relaxed) & 1 == 1 {
                return bad(format!("shard {s}: a change is left half-done"));
            }
            let mut keys = std::collections::HashSet::new();
            for i in 0..self.shard_slots {
                match self.state(s, i).load(Ordering::Acquire) {
                    EMPTY | TOMB => {}
                    FULL => {
                        let key = self.key(s, i);
                        if !keys.insert(bytemuck::bytes_of(&key).to_vec()) {
                            return bad(format!("shard {s}: a key is there twice"));
                        }
                        let (ks, home) = self.place(&key);
                        if ks != s
                            || !matches!(self.probe(s, home, &key), Probe::Found(j) if j == i)
                        {
                            return bad(format!(
                                "shard {s}: slot {i}'s key is not found by its hash"
                            ));
                        }
                    }
                    other => return bad(format!("shard {s}: slot {i} has state {other}")),
                }
            }
            let len = sh.len.load(Ordering::Relaxed);
            if len != keys.len() as u64 {
                return bad(format!("shard {s}: len {len} but {} entries", keys.len()));
            }
        }
        Ok(())
    }
}

impl<K: bytemuck::Pod + ShmSafe + Eq, V: bytemuck::Pod + ShmSafe> fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dict")
            .field("name", &self.info().name())
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

// How a slot's key and value are copied. In a segment: volatile copies of the whole key
// or value (a lock-free reader may copy bytes a writer is changing; the sequence counter
// tells it to retry, and volatile keeps the compiler from assuming the bytes stable). In
// the loom model: word by word through atomics loom can interleave.

#[cfg(not(loom))]
fn read_key<K: bytemuck::Pod, V>(slot: NonNull<Slot<K, V>>) -> K {
    // SAFETY: `slot` is a slot of the tables or records (inside the mapping, aligned);
    // every bit pattern is a valid K.
    unsafe { std::ptr::addr_of!((*slot.as_ptr()).key).read_volatile() }
}

#[cfg(not(loom))]
fn read_value<K, V: bytemuck::Pod>(slot: NonNull<Slot<K, V>>) -> V {
    // SAFETY: as in `read_key`, for V.
    unsafe { std::ptr::addr_of!((*slot.as_ptr()).value).read_volatile() }
}

#[cfg(not(loom))]
fn write_key<K: bytemuck::Pod, V>(slot: NonNull<Slot<K, V>>, key: K) {
    // SAFETY: as in `read_key`; the caller holds the shard's lock (the only writer).
    unsafe { std::ptr::addr_of_mut!((*slot.as_ptr()).key).write_volatile(key) }
}

#[cfg(not(loom))]
fn write_value<K, V: bytemuck::Pod>(slot: NonNull<Slot<K, V>>, value: V) {
    // SAFETY: as in `write_key`, for V.
    unsafe { std::ptr::addr_of_mut!((*slot.as_ptr()).value).write_volatile(value) }
}

#[cfg(loom)]
fn read_key<K: bytemuck::Pod, V>(slot: NonNull<Slot<K, V>>) -> K {
    // SAFETY: the model's heap slot, alive as long as the dict.
    unsafe { slot.as_ref() }.key.load()
}

#[cfg(loom)]
fn read_value<K, V: bytemuck::Pod>(slot: NonNull<Slot<K, V>>) -> V {
    // SAFETY: as in `read_key`.
    unsafe { slot.as_ref() }.value.load()
}

#[cfg(loom)]
fn write_key<K: bytemuck::Pod, V>(slot: NonNull<Slot<K, V>>, key: K) {
    // SAFETY: as in `read_key`.
    unsafe { slot.as_ref() }.key.store(key)
}

#[cfg(loom)]
fn write_value<K, V: bytemuck::Pod>(slot: NonNull<Slot<K, V>>, value: V) {
    // SAFETY: as in `read_key`.
    unsafe { slot.as_ref() }.value.store(value)
}

/// A key or value of the loom model, held in four atomic words (32 bytes at most).
#[cfg(loom)]
mod loom_words {
    use crate::loom::{AtomicU64, Ordering};
    use std::marker::PhantomData;

    pub(super) struct Words<T> {
        words: [AtomicU64; 4],
        _holds: PhantomData<T>,
    }

    impl<T> Default for Words<T> {
        fn default() -> Self {
            Self { words: std::array::from_fn(|_| AtomicU64::new(0)), _holds: PhantomData }
        }
    }

    impl<T: bytemuck::Pod> Words<T> {
        const WORDS: usize = {
            assert!(size_of::<T>() <= 32, "the loom model's keys and values fit 32 bytes");
            size_of::<T>().div_ceil(8)
        };

        /// Word by word, relaxed, as a volatile copy is: no order of its own.
        pub(super) fn load(&self) -> T {
            let mut bytes = [0u8; 32];
            for (w, chunk) in self.words[..Self::WORDS].iter().zip(bytes.chunks_exact_mut(8)) {
                chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
            }
            bytemuck::pod_read_unaligned(&bytes[..size_of::<T>()])
        }

        pub(super) fn store(&self, value: T) {
            let mut bytes = [0u8; 32];
            bytes[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&value));
            for (w, chunk) in self.words[..Self::WORDS].iter().zip(bytes.chunks_exact(8)) {
                w.store(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])), Ordering::Relaxed);
            }
        }
    }
}

/// SipHash-1-3 (one compression round, three finalisation rounds) of `bytes` with the
/// 128-bit key `(k0, k1)`. Always inlined: a key's length is a constant where it is
/// called, so the loops unroll and the tail copy is a few moves (out of line and generic
/// over the length, it was a third of a `get`).
#[inline(always)]
fn sip13((k0, k1): (u64, u64), bytes: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let m = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        v[3] ^= m;
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    last[7] = bytes.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..3 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::sip13;

    #[test]
    fn siphash_1_3_matches_std() {
        // std's DefaultHasher::new() is SipHash-1-3 with the key (0, 0), and `write`
        // hashes raw bytes: the same function.
        use std::hash::Hasher;
        for input in [&b""[..], b"a", b"alice", b"exactly8", b"more than eight bytes long"] {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(input);
            assert_eq!(sip13((0, 0), input), h.finish(), "{input:?}");
        }
        assert_ne!(sip13((1, 2), b"alice"), sip13((0, 0), b"alice"));
    }
}

/// Loom models on a dict on the heap (16 shards of 8 slots): a lock-free reader never
/// returns a torn value, and writers of one shard keep it valid.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use std::sync::Arc;

    /// The heap memory of a model's dict, freed when the last thread lets go.
    struct Heap<K, V> {
        shards: Vec<Shard>,
        records: Vec<Slot<K, V>>,
        tables: Vec<Slot<K, V>>,
    }

    const SHARD_SLOTS: usize = 8;

    fn heap_dict<K, V>() -> (Dict<K, V>, Arc<Heap<K, V>>)
    where
        K: bytemuck::Pod + ShmSafe + Eq,
        V: bytemuck::Pod + ShmSafe,
    {
        let heap = Arc::new(Heap {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            records: (0..SHARDS).map(|_| Slot::default()).collect(),
            tables: (0..SHARDS * SHARD_SLOTS).map(|_| Slot::default()).collect(),
        });
        let dict = Dict {
            segment: None,
            shards: NonNull::from(&heap.shards[0]),
            records: NonNull::from(&heap.records[0]),
            tables: NonNull::from(&heap.tables[0]),
            capacity: SHARDS * SHARD_SLOTS / 2,
            shard_slots: SHARD_SLOTS,
            sip: (1, 2),
            _holds: PhantomData,
        };
        (dict, heap)
    }

    /// Runs `f` under loom (preemption bound 2); returns how many schedules it explored.
    fn model(f: impl Fn() + Sync + Send + 'static) -> usize {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        crate::loom::counted(builder, f)
    }

    /// A writer inserts `[1, 1]`, overwrites it with `[2, 2]` and removes it while a
    /// reader gets the key twice: each read is nothing or a whole value, and never goes
    /// back in time.
    #[test]
    fn a_lock_free_reader_never_sees_a_torn_value() {
        let runs = model(|| {
            let (dict, heap) = heap_dict::<u64, [u64; 2]>();
            let dict = Arc::new(dict);
            let writer = {
                let (dict, _heap) = (Arc::clone(&dict), Arc::clone(&heap));
                crate::loom::thread::spawn(move || {
                    let _keep = _heap;
                    assert_eq!(dict.insert(7, [1, 1]).unwrap(), None);
                    assert_eq!(dict.insert(7, [2, 2]).unwrap(), Some([1, 1]));
                    assert_eq!(dict.remove(&7), Some([2, 2]));
                })
            };
            let mut last = 0;
            for _ in 0..2 {
                match dict.get(&7) {
                    None => {}
                    Some([a, b]) => {
                        assert_eq!(a, b, "a torn value");
                        assert!(a >= last, "{a} read after {last}");
                        last = a;
                    }
                }
            }
            writer.join().unwrap();
            assert_eq!(dict.get(&7), None);
            assert!(dict.check().is_ok());
        });
        // 39,894 when written; the sequence counter's `load; store` hid the reader from
        // loom and left one (see `crate::loom::OwnerAdd`).
        assert!(runs > 10_000, "loom explored only {runs} schedules");
    }

    /// Two writers insert and update keys of one shard (`get_or_insert_with`, then
    /// `update`): the final contents are exact and every invariant holds.
    #[test]
    fn writers_of_one_shard_leave_it_exact() {
        let runs = model(|| {
            let (dict, heap) = heap_dict::<u64, u64>();
            // Two keys of one shard.
            let first = 1u64;
            let (s, _) = dict.place(&first);
            let second = (2..).find(|k| dict.place(k).0 == s).unwrap();
            let dict = Arc::new(dict);
            let writers: Vec<_> = [first, second]
                .into_iter()
                .map(|key| {
                    let (dict, _heap) = (Arc::clone(&dict), Arc::clone(&heap));
                    crate::loom::thread::spawn(move || {
                        let _keep = _heap;
                        assert_eq!(dict.get_or_insert_with(key, || 10).unwrap(), 10);
                        assert!(dict.update(&key, |v| *v += key));
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            assert_eq!(dict.remove(&first), Some(10 + first));
            let mut items = dict.items();
            items.sort_unstable();
            assert_eq!(items, [(second, 10 + second)]);
            assert_eq!(dict.len(), 1);
            assert!(dict.check().is_ok());
        });
        assert!(runs > 20, "loom explored only {runs} schedules");
    }
}
