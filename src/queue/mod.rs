//! Ring-buffer algorithms for the queues, over memory the caller provides, and what the
//! named queues (`spsc`, `mpmc`) share: the segment layout rule and the spin before a
//! sleep. The algorithms are checked by their unit tests, Miri and loom.
// Loom builds leave out the named queues, the only users outside the models.
#![cfg_attr(loom, allow(dead_code))]

pub(crate) mod byte_ring;
pub(crate) mod doorbell;
pub(crate) mod mpmc_ring;
pub(crate) mod spsc_ring;

/// Spins while `ready()` is false, for about 20 us in all (the cost of a sleep and
/// wake-up on this machine class); returns whether it became true. Queues and pipes spin
/// before they sleep, so a stream that keeps up never sleeps.
///
/// It looks after every hint for the first 64 (~1.5 us: an answer crosses the cache in a
/// few hundred nanoseconds, and a longer gap between looks would add to every round
/// trip), then backs off, doubling the gap up to 512 hints.
#[cfg(not(loom))]
pub(crate) fn spin_until(ready: &mut dyn FnMut() -> bool) -> bool {
    for _ in 0..64 {
        if ready() {
            return true;
        }
        crate::loom::spin_loop();
    }
    for round in 1..10 {
        if ready() {
            return true;
        }
        for _ in 0..1u32 << round {
            crate::loom::spin_loop();
        }
    }
    ready()
}

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
}

#[cfg(not(loom))]
impl RingLayout {
    fn payload_len(&self, capacity: u64) -> Option<u64> {
        (self.slot_size as u64).checked_mul(capacity)?.checked_add(self.slots_at as u64)
    }

    /// The segment to create for `capacity` values, rounded up to a power of two.
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
        let capacity = (capacity as u64).next_power_of_two();
        let payload_len = self.payload_len(capacity).ok_or(crate::OpenError::NoSpace)?;
        Ok(crate::segment::Spec { expected: self.expected, capacity, payload_len })
    }

    /// The capacity of an opened segment, checked against what the segment layer leaves
    /// to the object: a power of two whose slots exactly fill the payload.
    ///
    /// # Errors
    /// `Corrupted` otherwise.
    pub(crate) fn capacity_of(
        &self,
        segment: &crate::segment::Segment,
    ) -> Result<u64, crate::OpenError> {
        let capacity = segment.capacity();
        let fits = capacity.is_power_of_two()
            && capacity <= MAX_CAPACITY
            && self.payload_len(capacity) == Some(segment.payload_len() as u64);
        if fits { Ok(capacity) } else { Err(crate::OpenError::Corrupted) }
    }
}
