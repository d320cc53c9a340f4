//! Large message buffers, kept for a few seconds after use so that the next large message does
//! not pay for fresh memory.
//!
//! A 100 MB insert needs a 100 MB buffer. Memory fresh from the kernel costs a page fault and the
//! zeroing of a page for every 4 KiB written (measured: half the time of receiving a 100 MB insert
//! over loopback), and the system allocator hands any block over 32 MiB straight back to the
//! kernel when it is freed, so every large message paid that again.
//!
//! The pool keeps buffers of at least [`POOLED_MIN_BYTES`] when their message is done with, up to
//! a total capacity (the largest message allowed, so the pool never holds more than one maximal
//! message's worth), and drops each one [`POOLED_IDLE`] after its last use:
//! a burst of large inserts reuses memory, a server that saw one large message an hour ago holds
//! none of it.
//!
//! A buffer is taken only for a frame whose header claims at least [`POOLED_MIN_BYTES`], and it
//! is memory the server already holds: a client that claims a large message and sends nothing
//! makes the server allocate nothing.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Buffers smaller than this are not kept: the allocator reuses small blocks by itself.
pub(crate) const POOLED_MIN_BYTES: usize = 1 << 20;

/// How long an unused buffer is kept.
pub(crate) const POOLED_IDLE: Duration = Duration::from_secs(10);

/// Large buffers waiting for reuse.
#[derive(Debug)]
pub(crate) struct BufferPool {
    /// The most capacity kept in all.
    max_bytes: usize,
    /// The kept buffers (empty, with their capacity), each with when it was put back.
    /// A `std` mutex: held for a push, a pop or a scan of a few entries.
    kept: Mutex<Vec<(Vec<u8>, Instant)>>,
}

impl Default for BufferPool {
    /// A pool bounded by the default largest message.
    fn default() -> Self {
        Self::new(qgate_ipc::Limits::default().max_message_bytes)
    }
}

impl BufferPool {
    /// A pool that keeps at most `max_bytes` of capacity.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            kept: Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer for a frame of `len` bytes: the smallest kept one that holds it, else the
    /// largest kept one, else a new empty one (which grows as bytes arrive).
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if len < POOLED_MIN_BYTES {
            return Vec::new();
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let fits = kept
            .iter()
            .enumerate()
            .filter(|(_, (buffer, _))| buffer.capacity() >= len)
            .min_by_key(|(_, (buffer, _))| buffer.capacity())
            .map(|(i, _)| i);
        let pick = fits.or_else(|| {
            kept.iter()
                .enumerate()
                .max_by_key(|(_, (buffer, _))| buffer.capacity())
                .map(|(i, _)| i)
        });
        pick.map_or_else(Vec::new, |i| kept.swap_remove(i).0)
    }

    /// Gives a buffer back once its message is done with. Small ones are dropped; a large one is
    /// kept if it fits the pool's total, and the oldest ones make room for it otherwise.
    pub(crate) fn put(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() < POOLED_MIN_BYTES || buffer.capacity() > self.max_bytes {
            return;
        }
        buffer.clear();
        let now = Instant::now();
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|(_, used)| now.duration_since(*used) < POOLED_IDLE);
        // Oldest first out: the most recently used buffers are the likeliest to be needed again.
        kept.sort_by_key(|(_, used)| *used);
        let mut total: usize = kept.iter().map(|(b, _)| b.capacity()).sum();
        while total + buffer.capacity() > self.max_bytes && !kept.is_empty() {
            total -= kept.remove(0).0.capacity();
        }
        kept.push((buffer, now));
    }

    /// Drops the buffers unused for [`POOLED_IDLE`]; the listener calls this every few seconds,
    /// so that memory is returned even when no more large messages come.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let stale: Vec<_> = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let (stale, fresh) = std::mem::take(&mut *kept)
                .into_iter()
                .partition(|(_, used)| now.duration_since(*used) >= POOLED_IDLE);
            *kept = fresh;
            stale
        };
        // Unmapping happens here, outside the lock.
        drop(stale);
    }

    /// The capacity kept, in bytes.
    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.iter().map(|(b, _)| b.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn small_frames_and_buffers_are_not_pooled() {
        let pool = BufferPool::new(64 * MIB);
        pool.put(Vec::with_capacity(1024));
        assert_eq!(pool.kept_bytes(), 0);
        pool.put(Vec::with_capacity(2 * MIB));
        assert_eq!(
            pool.take(1024).capacity(),
            0,
            "a small frame gets a fresh buffer"
        );
    }

    #[test]
    fn a_large_buffer_is_reused_and_the_best_fit_is_taken() {
        let pool = BufferPool::new(64 * MIB);
        pool.put(vec![7; 8 * MIB]);
        pool.put(Vec::with_capacity(3 * MIB));
        let buffer = pool.take(2 * MIB);
        assert!(buffer.is_empty());
        assert!(buffer.capacity() >= 3 * MIB && buffer.capacity() < 8 * MIB);
        // Nothing holds 16 MiB: the largest is taken, to grow from.
        assert!(pool.take(16 * MIB).capacity() >= 8 * MIB);
        assert_eq!(pool.kept_bytes(), 0);
        assert_eq!(pool.take(16 * MIB).capacity(), 0);
    }

    #[test]
    fn the_total_is_bounded_by_dropping_the_oldest() {
        let pool = BufferPool::new(10 * MIB);
        pool.put(Vec::with_capacity(4 * MIB));
        pool.put(Vec::with_capacity(5 * MIB));
        pool.put(Vec::with_capacity(6 * MIB));
        let kept = pool.kept_bytes();
        assert!(kept <= 10 * MIB, "{kept}");
        assert!(
            pool.take(6 * MIB).capacity() >= 6 * MIB,
            "the newest is kept"
        );
        pool.put(Vec::with_capacity(11 * MIB));
        assert_eq!(pool.kept_bytes(), 0, "larger than the pool: not kept");
    }

    #[test]
    fn sweep_keeps_recent_buffers() {
        let pool = BufferPool::new(10 * MIB);
        pool.put(Vec::with_capacity(2 * MIB));
        pool.sweep();
        assert!(pool.kept_bytes() >= 2 * MIB);
    }
}
