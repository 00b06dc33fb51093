//! The ring queues and what they share: the segment layout rule (here), the one wait
//! loop ([`wait`]), the one doorbell ([`doorbell`]), the two-party side of SPSC queues and
//! pipes ([`side`]), the keeper thread that holds roles ([`keeper`]), and the queues
//! themselves ([`spsc`], [`mpmc`]), each a handle module over a loom-checked ring.
// Loom builds leave out the named queues, the only users outside the models.
#![cfg_attr(loom, allow(dead_code))]

pub(crate) mod doorbell;
#[cfg(not(loom))]
pub(crate) mod keeper;
pub mod mpmc;
#[cfg(not(loom))]
pub(crate) mod side;
pub mod spsc;
#[cfg(not(loom))]
pub(crate) mod wait;

/// Largest queue capacity, in values.
#[cfg(not(loom))]
pub(crate) const MAX_CAPACITY: u64 = 1 << 40;

/// How a queue's segment is laid out: a control block of `slots_at` bytes, then
/// `capacity` slots of `slot_size` bytes.
#[cfg(not(loom))]
pub(crate) struct RingLayout {
    pub(crate) expected: crate::segment::Expected,
    pub(crate) slots_at: usize,
    pub(crate) slot_size: usize,
    /// The smallest capacity the ring works with: 2 for the MPMC ring, whose stamps
    /// cannot tell "published at `pos`" from "free for `pos + 1`" in a ring of one slot.
    pub(crate) min_capacity: u64,
}

#[cfg(not(loom))]
impl RingLayout {
    fn payload_len(&self, capacity: u64) -> Option<u64> {
        (self.slot_size as u64).checked_mul(capacity)?.checked_add(self.slots_at as u64)
    }

    /// The segment to create for `capacity` values, rounded up to a power of two (and to
    /// `min_capacity`).
    ///
    /// # Errors
    /// `InvalidCapacity` for 0 or more than [`MAX_CAPACITY`]; `NoSpace` if the payload
    /// does not fit in a segment.
    pub(crate) fn spec(&self, capacity: usize) -> Result<crate::segment::Spec, crate::OpenError> {
        if capacity == 0 || capacity as u64 > MAX_CAPACITY {
            return Err(crate::error::invalid_capacity(
                capacity as u64,
                format!("a queue's capacity must be 1..={MAX_CAPACITY}"),
            ));
        }
        let capacity = (capacity as u64).next_power_of_two().max(self.min_capacity);
        let payload_len = self.payload_len(capacity).ok_or(crate::OpenError::NoSpace)?;
        Ok(crate::segment::Spec { expected: self.expected, capacity, payload_len })
    }

    /// The capacity of an opened segment, checked against what the segment layer leaves
    /// to the object: a power of two, at least `min_capacity`, whose slots exactly fill
    /// the payload.
    ///
    /// # Errors
    /// `Corrupted` otherwise.
    pub(crate) fn capacity_of(
        &self,
        segment: &crate::segment::Segment,
    ) -> Result<u64, crate::OpenError> {
        let capacity = segment.capacity();
        let fits = capacity.is_power_of_two()
            && (self.min_capacity..=MAX_CAPACITY).contains(&capacity)
            && self.payload_len(capacity) == Some(segment.payload_len() as u64);
        if fits { Ok(capacity) } else { Err(crate::OpenError::Corrupted) }
    }
}
