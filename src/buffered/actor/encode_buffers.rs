//! Buffers of encoded events, kept for the next encodings once their send ended: a busy
//! partition then encodes without allocating. Allocating and freeing each event's encoding
//! on whichever worker thread ran the actor left glibc's per-thread arenas holding memory
//! that the other threads could not reuse (`examples/memory.rs`: resident memory far above
//! the live heap after a stalled service recovered). At most about one batch is kept per
//! partition, and nothing once the partition has nothing left to send; what is kept counts
//! in `max_buffered_bytes` (the actor charges it, see `keep_buffers`).

/// A buffer larger than this is not kept: large events are few per batch, and keeping one
/// for a small event would hold memory `max_buffered_bytes` does not count.
const MAX_KEPT_CAPACITY: usize = 64 * 1024;

/// Kept buffers, the most recently kept first to be used.
#[derive(Debug, Default)]
pub(super) struct SpareBuffers {
    buffers: Vec<Vec<u8>>,
    /// The capacity of `buffers`, in bytes.
    bytes: usize,
}

impl SpareBuffers {
    /// A buffer for an encoding expected to need `capacity` bytes: the last one kept when
    /// its capacity is at least that and not a quarter more (room a larger buffer wastes is
    /// not counted once it holds an event), else a new one.
    pub(super) fn take(&mut self, capacity: usize) -> Vec<u8> {
        let fits = |kept: usize| kept >= capacity && kept <= capacity + capacity / 4 + 64;
        if self.buffers.last().is_some_and(|b| fits(b.capacity())) {
            if let Some(buffer) = self.buffers.pop() {
                self.bytes -= buffer.capacity();
                return buffer;
            }
        }
        Vec::with_capacity(capacity)
    }

    /// Keeps `buffers` while their capacity in all stays within `limit` bytes; the rest are
    /// freed.
    pub(super) fn keep(&mut self, buffers: Vec<Vec<u8>>, limit: usize) {
        for buffer in buffers {
            let capacity = buffer.capacity();
            if capacity == 0 || capacity > MAX_KEPT_CAPACITY || self.bytes + capacity > limit {
                continue;
            }
            self.bytes += capacity;
            self.buffers.push(buffer);
        }
    }

    /// Frees every kept buffer.
    pub(super) fn clear(&mut self) {
        self.buffers = Vec::new();
        self.bytes = 0;
    }

    /// The capacity kept, in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffers(capacities: &[usize]) -> Vec<Vec<u8>> {
        capacities.iter().map(|&c| Vec::with_capacity(c)).collect()
    }

    #[test]
    fn a_kept_buffer_of_the_right_size_is_used_again() {
        let mut spare = SpareBuffers::default();
        spare.keep(buffers(&[1100, 1100]), 1 << 20);
        assert_eq!(spare.bytes(), 2200);
        let reused = spare.take(1100);
        assert_eq!(reused.capacity(), 1100);
        assert_eq!(spare.bytes(), 1100);
        // Somewhat smaller encodings still use it; much smaller or larger ones do not.
        assert_eq!(spare.take(1000).capacity(), 1100);
        spare.keep(buffers(&[1100]), 1 << 20);
        assert_eq!(spare.take(100).capacity(), 100);
        assert_eq!(spare.take(2000).capacity(), 2000);
        assert_eq!(spare.bytes(), 1100, "the kept buffer is still there");
    }

    #[test]
    fn what_is_kept_stays_within_the_limit_and_large_buffers_are_freed() {
        let mut spare = SpareBuffers::default();
        spare.keep(buffers(&[1000, 1000, 1000]), 2500);
        assert_eq!(spare.bytes(), 2000);
        spare.keep(buffers(&[MAX_KEPT_CAPACITY + 1, 0]), 1 << 30);
        assert_eq!(spare.bytes(), 2000);
        spare.clear();
        assert_eq!(spare.bytes(), 0);
        assert_eq!(spare.take(1000).capacity(), 1000);
    }
}
