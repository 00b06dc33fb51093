//! The header at offset 0 of every segment, and the publish protocol around it.
//!
//! | offset | size | field            | meaning                                                  |
//! |-------:|-----:|------------------|----------------------------------------------------------|
//! |      0 |    8 | `magic`          | `b"shmsync\0"` read as a little-endian `u64`              |
//! |      8 |    4 | `state`          | 0 = not yet initialised, [`STATE_READY`] = ready; else corrupt |
//! |     12 |    4 | `version`        | [`LAYOUT_VERSION`]                                       |
//! |     16 |    4 | `kind`           | [`ObjectKind`] as a number                               |
//! |     20 |    4 | `header_len`     | [`HEADER_LEN`] (128)                                     |
//! |     24 |    4 | `elem_align`     | alignment of one element, a power of two up to 4096      |
//! |     28 |    4 | `creator_pid`    | pid of the creating process (as seen in its namespace)   |
//! |     32 |    8 | `elem_size`      | size of one element in bytes                             |
//! |     40 |    8 | `type_tag`       | hash identifying the element type                        |
//! |     48 |    8 | `capacity`       | element count (queues) or 1; checked by the object       |
//! |     56 |    8 | `payload_offset` | start of the object's data, a multiple of `elem_align`    |
//! |     64 |    8 | `payload_len`    | length of the object's data                              |
//! |     72 |    8 | `segment_len`    | the whole file's length; must equal its size             |
//! |     80 |    8 | `instance_id`    | random, non-zero: tells a re-created name apart          |
//! |     88 |    8 | `created_at`     | creation time, nanoseconds since the Unix epoch          |
//! |     96 |    8 | `attach_offset`  | start of the attacher table, after the payload            |
//! |    104 |    4 | `attach_slots`   | records in the attacher table (`attach::SLOTS`)          |
//! |    108 |   20 | reserved         | zero                                                     |
//!
//! The attacher table (16 bytes a record, see `attach.rs`) follows the payload, so the
//! payload's offset is the same as before it existed.
//!
//! # Publish protocol
//!
//! The creator gets a zero-filled file of its final size in one step (`fallocate`), so an
//! opener sees either size 0 or the full size, and a `state` of 0 until the creator is
//! done. The creator writes every other field (Relaxed), initialises the payload, then
//! stores `STATE_READY` with Release ([`Header::publish`]). An opener loads `state` with
//! Acquire ([`Header::state`]); once it sees `STATE_READY`, everything written before the
//! publish is visible, and it validates the fields ([`Header::validate`]).
//!
//! Every field is an atomic, so a hostile peer rewriting the header while we read it is
//! a value we validate, not a data race.

use super::attach;
use crate::OpenError;
use crate::error::LayoutProperty;
use crate::layout::ObjectKind;
use crate::loom::{AtomicU32, AtomicU64, Ordering};

/// Size of the header; payloads start at or after it.
pub(crate) const HEADER_LEN: usize = 128;
/// `b"shmsync\0"`, little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"shmsync\0");
/// Bumped on every incompatible change to the header or to any object's layout.
pub(crate) const LAYOUT_VERSION: u32 = 3;
/// `state` before the creator publishes (a fresh file is all zeros).
pub(crate) const STATE_UNINIT: u32 = 0;
/// `state` once the segment is ready. An unlikely bit pattern, so random bytes are
/// reported as corrupt rather than waited on.
pub(crate) const STATE_READY: u32 = 0x5EAD_1E55;
/// The largest element alignment a segment supports: mappings are page-aligned.
pub(crate) const MAX_ALIGN: u32 = 4096;

/// The element type an object stores, as far as the header can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) size: u64,
    pub(crate) align: u32,
    pub(crate) type_tag: u64,
}

impl Element {
    /// The first property in which `found` differs from `self` (size, then alignment,
    /// then type tag), with this value and the found one.
    pub(crate) fn difference(&self, found: &Element) -> Option<(LayoutProperty, u64, u64)> {
        if self.size != found.size {
            Some((LayoutProperty::ElementSize, self.size, found.size))
        } else if self.align != found.align {
            Some((LayoutProperty::ElementAlign, self.align.into(), found.align.into()))
        } else if self.type_tag != found.type_tag {
            Some((LayoutProperty::TypeTag, self.type_tag, found.type_tag))
        } else {
            None
        }
    }
}

/// What an opener requires of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) kind: ObjectKind,
    pub(crate) element: Element,
}

/// Everything a creator records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    pub(crate) expected: Expected,
    pub(crate) capacity: u64,
    pub(crate) payload_len: u64,
}

/// Where the payload goes and how long the file is, derived from a [`Spec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) payload_offset: u64,
    pub(crate) attach_offset: u64,
    pub(crate) segment_len: u64,
}

impl Spec {
    /// Places the payload after the header, aligned to its element and to 128 bytes (two
    /// cache lines, so the header never shares a line with hot payload fields).
    ///
    /// # Errors
    /// `LayoutMismatch` for an alignment that is not a power of two up to 4096 and
    /// `NoSpace` for a length that does not fit in the address space.
    pub(crate) fn placement(&self) -> Result<Placement, OpenError> {
        let align = self.expected.element.align;
        if !align.is_power_of_two() || align > MAX_ALIGN {
            let supported = u64::from(align.next_power_of_two().min(MAX_ALIGN));
            return Err(OpenError::layout_mismatch(
                LayoutProperty::ElementAlign,
                supported,
                u64::from(align),
            ));
        }
        let step = u64::from(align.max(128));
        let payload_offset = (HEADER_LEN as u64).div_ceil(step) * step;
        let attach_offset = payload_offset
            .checked_add(self.payload_len)
            .and_then(|end| end.checked_next_multiple_of(64))
            .ok_or(OpenError::NoSpace)?;
        let segment_len = attach_offset
            .checked_add(u64::from(attach::SLOTS) * attach::RECORD_LEN)
            .filter(|&len| len <= MAX_SEGMENT_LEN)
            .ok_or(OpenError::NoSpace)?;
        Ok(Placement { payload_offset, attach_offset, segment_len })
    }
}

/// Largest segment we create or map: 64 TiB, far beyond any tmpfs, small enough that
/// every offset fits in `usize` and `isize` with room to spare.
pub(crate) const MAX_SEGMENT_LEN: u64 = 1 << 46;

/// What [`Header::validate`] found in a ready, consistent header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Validated {
    pub(crate) capacity: u64,
    pub(crate) payload_offset: usize,
    pub(crate) payload_len: usize,
    pub(crate) instance_id: u64,
    pub(crate) creator_pid: u32,
    pub(crate) kind: ObjectKind,
    pub(crate) element: Element,
    pub(crate) created_at: u64,
    pub(crate) attach_offset: usize,
    pub(crate) attach_slots: usize,
}

/// The state word, as an opener reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// The creator has not published yet (or died before it did).
    Uninit,
    /// Published: the other fields may be validated.
    Ready,
    /// Neither: not a segment, or damaged.
    Invalid,
}

/// The segment header. See the module docs for the layout table.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Header {
    magic: AtomicU64,
    state: AtomicU32,
    version: AtomicU32,
    kind: AtomicU32,
    header_len: AtomicU32,
    elem_align: AtomicU32,
    creator_pid: AtomicU32,
    elem_size: AtomicU64,
    type_tag: AtomicU64,
    capacity: AtomicU64,
    payload_offset: AtomicU64,
    payload_len: AtomicU64,
    segment_len: AtomicU64,
    instance_id: AtomicU64,
    created_at: AtomicU64,
    attach_offset: AtomicU64,
    attach_slots: AtomicU32,
    reserved: [u8; 20],
}

// Pin the layout documented above. Loom's atomics are larger, so only the real build
// checks (loom models never map a header from memory).
#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Header>() == HEADER_LEN);
    assert!(align_of::<Header>() == 8);
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, state) == 8);
    assert!(offset_of!(Header, version) == 12);
    assert!(offset_of!(Header, kind) == 16);
    assert!(offset_of!(Header, header_len) == 20);
    assert!(offset_of!(Header, elem_align) == 24);
    assert!(offset_of!(Header, creator_pid) == 28);
    assert!(offset_of!(Header, elem_size) == 32);
    assert!(offset_of!(Header, type_tag) == 40);
    assert!(offset_of!(Header, capacity) == 48);
    assert!(offset_of!(Header, payload_offset) == 56);
    assert!(offset_of!(Header, payload_len) == 64);
    assert!(offset_of!(Header, segment_len) == 72);
    assert!(offset_of!(Header, instance_id) == 80);
    assert!(offset_of!(Header, created_at) == 88);
    assert!(offset_of!(Header, attach_offset) == 96);
    assert!(offset_of!(Header, attach_slots) == 104);
    assert!(offset_of!(Header, reserved) == 108);
};

impl Header {
    /// An all-zero header, as a fresh file holds: for heap-backed segments and loom.
    #[cfg(test)]
    pub(crate) fn zeroed() -> Self {
        Self {
            magic: AtomicU64::new(0),
            state: AtomicU32::new(0),
            version: AtomicU32::new(0),
            kind: AtomicU32::new(0),
            header_len: AtomicU32::new(0),
            elem_align: AtomicU32::new(0),
            creator_pid: AtomicU32::new(0),
            elem_size: AtomicU64::new(0),
            type_tag: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
            payload_offset: AtomicU64::new(0),
            payload_len: AtomicU64::new(0),
            segment_len: AtomicU64::new(0),
            instance_id: AtomicU64::new(0),
            created_at: AtomicU64::new(0),
            attach_offset: AtomicU64::new(0),
            attach_slots: AtomicU32::new(0),
            reserved: [0; 20],
        }
    }

    /// Writes every field but `state`. Only the creator calls this, before `publish`.
    pub(crate) fn initialise(
        &self,
        spec: &Spec,
        placement: &Placement,
        creator_pid: u32,
        instance_id: u64,
    ) {
        let element = &spec.expected.element;
        // Relaxed: the Release store in `publish` orders all of these for openers.
        self.magic.store(MAGIC, Ordering::Relaxed);
        self.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        self.kind.store(spec.expected.kind.code(), Ordering::Relaxed);
        self.header_len.store(HEADER_LEN as u32, Ordering::Relaxed);
        self.elem_align.store(element.align, Ordering::Relaxed);
        self.creator_pid.store(creator_pid, Ordering::Relaxed);
        self.elem_size.store(element.size, Ordering::Relaxed);
        self.type_tag.store(element.type_tag, Ordering::Relaxed);
        self.capacity.store(spec.capacity, Ordering::Relaxed);
        self.payload_offset.store(placement.payload_offset, Ordering::Relaxed);
        self.payload_len.store(spec.payload_len, Ordering::Relaxed);
        self.segment_len.store(placement.segment_len, Ordering::Relaxed);
        self.instance_id.store(instance_id, Ordering::Relaxed);
        // Miri's isolation has no wall clock: its heap segments were made at the epoch.
        let now = if cfg!(miri) {
            0
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        self.created_at.store(now, Ordering::Relaxed);
        self.attach_offset.store(placement.attach_offset, Ordering::Relaxed);
        self.attach_slots.store(attach::SLOTS, Ordering::Relaxed);
    }

    /// Marks the segment ready. Pairs with the Acquire load in [`Header::state`]: header
    /// fields and payload written before this are visible to any opener that sees READY.
    pub(crate) fn publish(&self) {
        self.state.store(STATE_READY, Ordering::Release);
    }

    /// Reads the state word. Acquire pairs with the Release store in [`Header::publish`].
    pub(crate) fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            STATE_UNINIT => State::Uninit,
            STATE_READY => State::Ready,
            _ => State::Invalid,
        }
    }

    /// Checks a published header against the mapping it sits in and what the opener
    /// expects. Each field is read once; a header rewritten meanwhile can only make the
    /// values we act on inconsistent, and those are refused here.
    ///
    /// # Errors
    /// `Corrupted` for anything structurally wrong, `VersionMismatch`, `KindMismatch`,
    /// and `LayoutMismatch` when the element differs.
    pub(crate) fn validate(
        &self,
        mapped_len: u64,
        want: &Expected,
    ) -> Result<Validated, OpenError> {
        let v = self.describe(mapped_len)?;
        if v.kind != want.kind {
            return Err(OpenError::KindMismatch {
                name: String::new(),
                expected: want.kind,
                found: v.kind,
            });
        }
        if let Some((property, expected, found)) = want.element.difference(&v.element) {
            return Err(OpenError::layout_mismatch(property, expected, found));
        }
        Ok(v)
    }

    /// The structural half of [`validate`](Self::validate), for a reader that expects no
    /// kind in particular (`segments`): everything but the comparison with an
    /// expectation.
    ///
    /// # Errors
    /// `Corrupted` and `VersionMismatch`, as `validate`.
    pub(crate) fn describe(&self, mapped_len: u64) -> Result<Validated, OpenError> {
        let corrupted = Err(OpenError::Corrupted);
        if self.magic.load(Ordering::Relaxed) != MAGIC {
            return corrupted;
        }
        if self.version.load(Ordering::Relaxed) != LAYOUT_VERSION {
            return Err(OpenError::VersionMismatch);
        }
        if self.header_len.load(Ordering::Relaxed) != HEADER_LEN as u32 {
            return corrupted;
        }
        let Some(kind) = ObjectKind::from_code(self.kind.load(Ordering::Relaxed)) else {
            return corrupted;
        };

        let segment_len = self.segment_len.load(Ordering::Relaxed);
        let payload_offset = self.payload_offset.load(Ordering::Relaxed);
        let payload_len = self.payload_len.load(Ordering::Relaxed);
        let align = self.elem_align.load(Ordering::Relaxed);
        let fits = segment_len == mapped_len
            && segment_len <= MAX_SEGMENT_LEN
            && payload_offset >= HEADER_LEN as u64
            && payload_offset.checked_add(payload_len).is_some_and(|end| end <= segment_len);
        if !fits || !align.is_power_of_two() || align > MAX_ALIGN {
            return corrupted;
        }
        if payload_offset % u64::from(align) != 0 {
            return corrupted;
        }
        let attach_offset = self.attach_offset.load(Ordering::Relaxed);
        let attach_slots = self.attach_slots.load(Ordering::Relaxed);
        let table_fits = attach_offset % 16 == 0
            && attach_offset >= payload_offset + payload_len
            && attach_slots <= 1024
            && attach_offset
                .checked_add(u64::from(attach_slots) * attach::RECORD_LEN)
                .is_some_and(|end| end <= segment_len);
        if !table_fits {
            return corrupted;
        }

        let element = Element {
            size: self.elem_size.load(Ordering::Relaxed),
            align,
            type_tag: self.type_tag.load(Ordering::Relaxed),
        };

        // Both fit in usize: they are at most MAX_SEGMENT_LEN (2^46) on a 64-bit target.
        let (Ok(payload_offset), Ok(payload_len), Ok(attach_offset)) = (
            usize::try_from(payload_offset),
            usize::try_from(payload_len),
            usize::try_from(attach_offset),
        ) else {
            return corrupted;
        };
        Ok(Validated {
            capacity: self.capacity.load(Ordering::Relaxed),
            payload_offset,
            payload_len,
            instance_id: self.instance_id.load(Ordering::Relaxed),
            creator_pid: self.creator_pid.load(Ordering::Relaxed),
            kind,
            element,
            created_at: self.created_at.load(Ordering::Relaxed),
            attach_offset,
            attach_slots: attach_slots as usize,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            expected: Expected {
                kind: ObjectKind::Shared,
                element: Element { size: 24, align: 8, type_tag: 0xABCD },
            },
            capacity: 1,
            payload_len: 24,
        }
    }

    fn ready_header() -> (Header, Placement) {
        let h = Header::zeroed();
        let p = spec().placement().unwrap();
        h.initialise(&spec(), &p, 42, 7);
        h.publish();
        (h, p)
    }

    #[test]
    fn placement_aligns_the_payload() {
        assert_eq!(
            spec().placement().unwrap(),
            // The payload ends at 152; the attacher table starts at the next 64.
            Placement { payload_offset: 128, attach_offset: 192, segment_len: 192 + 32 * 16 }
        );
        let mut big = spec();
        big.expected.element.align = 4096;
        assert_eq!(big.placement().unwrap().payload_offset, 4096);
        big.expected.element.align = 8192;
        assert!(matches!(big.placement(), Err(OpenError::LayoutMismatch { .. })));
        big.expected.element.align = 3;
        assert!(matches!(big.placement(), Err(OpenError::LayoutMismatch { .. })));
        let mut huge = spec();
        huge.payload_len = u64::MAX - 64;
        assert!(matches!(huge.placement(), Err(OpenError::NoSpace)));
    }

    #[test]
    fn a_published_header_validates() {
        let (h, p) = ready_header();
        assert_eq!(h.state(), State::Ready);
        let v = h.validate(p.segment_len, &spec().expected).unwrap();
        assert_eq!(
            (v.capacity, v.payload_offset, v.payload_len, v.instance_id, v.creator_pid),
            (1, 128, 24, 7, 42)
        );
        assert_eq!((v.element.size, v.attach_offset, v.attach_slots), (24, 192, 32));
        if !cfg!(miri) {
            let a_minute_ago = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .saturating_sub(std::time::Duration::from_secs(60));
            assert!(u128::from(v.created_at) > a_minute_ago.as_nanos(), "{}", v.created_at);
        }
    }

    #[test]
    fn state_words_are_classified() {
        let h = Header::zeroed();
        assert_eq!(h.state(), State::Uninit);
        h.state.store(1, Ordering::Relaxed);
        assert_eq!(h.state(), State::Invalid);
    }

    /// Damages one field of a valid header and returns what validation says.
    fn damaged(damage: impl FnOnce(&Header)) -> OpenError {
        let (h, p) = ready_header();
        damage(&h);
        h.validate(p.segment_len, &spec().expected).unwrap_err()
    }

    #[test]
    fn each_damaged_field_is_refused_with_its_error() {
        use OpenError as E;
        let r = Ordering::Relaxed;
        assert!(matches!(damaged(|h| h.magic.store(1, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.version.store(LAYOUT_VERSION + 1, r)), E::VersionMismatch));
        assert!(matches!(damaged(|h| h.header_len.store(64, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.kind.store(99, r)), E::Corrupted));
        assert!(matches!(
            damaged(|h| h.kind.store(ObjectKind::Lock.code(), r)),
            E::KindMismatch { expected: ObjectKind::Shared, found: ObjectKind::Lock, .. }
        ));
        assert!(matches!(damaged(|h| h.segment_len.store(705, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.payload_offset.store(64, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.payload_offset.store(u64::MAX, r)), E::Corrupted));
        // Into the attacher table.
        assert!(matches!(damaged(|h| h.payload_len.store(65, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.attach_offset.store(128, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.attach_offset.store(200, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.attach_offset.store(u64::MAX - 8, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.attach_slots.store(33, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.attach_slots.store(u32::MAX, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.payload_len.store(u64::MAX, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.elem_align.store(0, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.elem_align.store(6, r)), E::Corrupted));
        assert!(matches!(damaged(|h| h.elem_align.store(256, r)), E::Corrupted));
        use crate::error::LayoutProperty as P;
        let align = damaged(|h| h.elem_align.store(4, r));
        assert!(matches!(align, E::LayoutMismatch { property: P::ElementAlign, found: 4, .. }));
        let size = damaged(|h| h.elem_size.store(16, r));
        assert!(matches!(size, E::LayoutMismatch { property: P::ElementSize, found: 16, .. }));
        let tag = damaged(|h| h.type_tag.store(1, r));
        assert!(matches!(tag, E::LayoutMismatch { property: P::TypeTag, found: 1, .. }));
    }

    #[test]
    fn a_header_bigger_than_its_mapping_is_refused() {
        let (h, p) = ready_header();
        let e = h.validate(p.segment_len - 1, &spec().expected).unwrap_err();
        assert!(matches!(e, OpenError::Corrupted));
    }
}

/// Loom model of the publish protocol: an opener that sees READY sees the whole header
/// and the payload the creator wrote before publishing.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::{UnsafeCell, thread};
    use std::sync::Arc;

    #[test]
    fn ready_publishes_header_and_payload() {
        ::loom::model(|| {
            let spec = Spec {
                expected: Expected {
                    kind: ObjectKind::Shared,
                    element: Element { size: 8, align: 8, type_tag: 5 },
                },
                capacity: 1,
                payload_len: 8,
            };
            let placement = spec.placement().unwrap();
            let shared = Arc::new((Header::zeroed(), UnsafeCell::new(0u64)));

            let creator = {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    let (header, payload) = &*shared;
                    header.initialise(&spec, &placement, 1, 99);
                    // SAFETY: no opener touches the payload before it sees READY below.
                    payload.with_mut(|p| unsafe { *p = 0xFEED });
                    header.publish();
                })
            };

            let (header, payload) = &*shared;
            loop {
                match header.state() {
                    State::Ready => break,
                    State::Uninit => thread::yield_now(),
                    State::Invalid => panic!("the state word never holds other values"),
                }
            }
            let v = header.validate(placement.segment_len, &spec.expected).unwrap();
            assert_eq!(v.instance_id, 99);
            // SAFETY: READY was seen with Acquire, so the creator's write happened before.
            assert_eq!(payload.with(|p| unsafe { *p }), 0xFEED);
            creator.join().unwrap();
        });
    }
}
