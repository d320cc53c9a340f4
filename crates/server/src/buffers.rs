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
//!
//! Kept buffers are memory the server holds, so they are charged to the memory budget
//! (`budget.rs`): a buffer is kept only if the budget has room for it then, it goes out with its
//! charge to the message it is taken for, and a charge that finds the budget spent has the pool
//! emptied before it waits. The budget bounds messages and kept buffers together.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::budget::{Charge, MemoryBudget};

/// Buffers smaller than this are not kept: the allocator reuses small blocks by itself.
pub(crate) const POOLED_MIN_BYTES: usize = 1 << 20;

/// How long an unused buffer is kept.
pub(crate) const POOLED_IDLE: Duration = Duration::from_secs(10);

/// Large buffers waiting for reuse.
#[derive(Debug)]
pub(crate) struct BufferPool {
    /// The most capacity kept in all.
    max_bytes: usize,
    /// The budget kept buffers are charged to.
    budget: MemoryBudget,
    /// The kept buffers (empty, with their capacity), each with when it was put back and its
    /// charge. A `std` mutex: held for a push, a pop or a scan of a few entries.
    kept: Mutex<Vec<Kept>>,
}

/// A buffer waiting for reuse.
#[derive(Debug)]
struct Kept {
    buffer: Vec<u8>,
    used: Instant,
    charge: Charge,
}

impl BufferPool {
    /// A pool that keeps at most `max_bytes` of capacity, charged to `budget`, which empties it
    /// when a charge finds the budget spent.
    pub(crate) fn new(max_bytes: usize, budget: MemoryBudget) -> Arc<Self> {
        let pool = Arc::new(Self {
            max_bytes,
            budget,
            kept: Mutex::new(Vec::new()),
        });
        pool.budget.keep_spare(&pool);
        pool
    }

    /// An empty buffer for a frame of `len` bytes and the charge that pays for its capacity: the
    /// smallest kept one that holds it, else the largest kept one, else a new empty one (which
    /// grows as bytes arrive) with a charge of nothing.
    pub(crate) fn take(&self, len: usize) -> (Vec<u8>, Charge) {
        let taken = (len >= POOLED_MIN_BYTES)
            .then(|| {
                let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
                let fits = kept
                    .iter()
                    .enumerate()
                    .filter(|(_, kept)| kept.buffer.capacity() >= len)
                    .min_by_key(|(_, kept)| kept.buffer.capacity())
                    .map(|(i, _)| i);
                let pick = fits.or_else(|| {
                    kept.iter()
                        .enumerate()
                        .max_by_key(|(_, kept)| kept.buffer.capacity())
                        .map(|(i, _)| i)
                });
                pick.map(|i| kept.swap_remove(i))
            })
            .flatten();
        match taken {
            Some(Kept { buffer, charge, .. }) => (buffer, charge),
            None => (Vec::new(), self.budget.empty()),
        }
    }

    /// Gives a buffer back once its message is done with. Small ones are dropped; a large one is
    /// kept if it fits the pool's total (the oldest ones make room for it) and the memory budget
    /// has room for it now.
    pub(crate) fn put(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() < POOLED_MIN_BYTES || buffer.capacity() > self.max_bytes {
            return;
        }
        buffer.clear();
        let now = Instant::now();
        let mut evicted = Vec::new();
        let refused = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            // Oldest first out: the most recently used buffers are the likeliest to be needed
            // again.
            kept.sort_by_key(|kept| kept.used);
            let mut total: usize = kept.iter().map(|kept| kept.buffer.capacity()).sum();
            while !kept.is_empty()
                && (total + buffer.capacity() > self.max_bytes
                    || now.duration_since(kept[0].used) >= POOLED_IDLE)
            {
                let Kept { buffer, charge, .. } = kept.remove(0);
                total -= buffer.capacity();
                // Its charge comes back now, to make room in the budget; its memory, below.
                drop(charge);
                evicted.push(buffer);
            }
            match self.budget.try_charge(buffer.capacity()) {
                Some(charge) => {
                    kept.push(Kept {
                        buffer,
                        used: now,
                        charge,
                    });
                    None
                }
                None => Some(buffer),
            }
        };
        // Unmapping happens here, outside the lock.
        drop((evicted, refused));
    }

    /// Drops every kept buffer, and returns the bytes given back: the budget calls this when
    /// a charge finds it spent.
    pub(crate) fn release(&self) -> usize {
        let all = std::mem::take(&mut *self.kept.lock().unwrap_or_else(PoisonError::into_inner));
        // Unmapping happens here, outside the lock.
        all.iter().map(|kept| kept.buffer.capacity()).sum()
    }

    /// Drops the buffers unused for [`POOLED_IDLE`]; the listener calls this every few seconds,
    /// so that memory is returned even when no more large messages come.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let stale: Vec<_> = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let (stale, fresh) = std::mem::take(&mut *kept)
                .into_iter()
                .partition(|kept| now.duration_since(kept.used) >= POOLED_IDLE);
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
        kept.iter().map(|kept| kept.buffer.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A pool of `max_bytes` on a budget of 1 GiB.
    fn pool(max_bytes: usize) -> Arc<BufferPool> {
        BufferPool::new(max_bytes, MemoryBudget::new(1 << 30))
    }

    #[test]
    fn small_frames_and_buffers_are_not_pooled() {
        let pool = pool(64 * MIB);
        pool.put(Vec::with_capacity(1024));
        assert_eq!(pool.kept_bytes(), 0);
        pool.put(Vec::with_capacity(2 * MIB));
        assert_eq!(
            pool.take(1024).0.capacity(),
            0,
            "a small frame gets a fresh buffer"
        );
    }

    #[test]
    fn a_large_buffer_is_reused_and_the_best_fit_is_taken() {
        let pool = pool(64 * MIB);
        pool.put(vec![7; 8 * MIB]);
        pool.put(Vec::with_capacity(3 * MIB));
        let (buffer, charge) = pool.take(2 * MIB);
        assert!(buffer.is_empty());
        assert!(buffer.capacity() >= 3 * MIB && buffer.capacity() < 8 * MIB);
        assert_eq!(
            charge.bytes(),
            buffer.capacity(),
            "it comes with its charge"
        );
        // Nothing holds 16 MiB: the largest is taken, to grow from.
        assert!(pool.take(16 * MIB).0.capacity() >= 8 * MIB);
        assert_eq!(pool.kept_bytes(), 0);
        let (fresh, charge) = pool.take(16 * MIB);
        assert_eq!((fresh.capacity(), charge.bytes()), (0, 0));
    }

    #[test]
    fn the_total_is_bounded_by_dropping_the_oldest() {
        let pool = pool(10 * MIB);
        pool.put(Vec::with_capacity(4 * MIB));
        pool.put(Vec::with_capacity(5 * MIB));
        pool.put(Vec::with_capacity(6 * MIB));
        let kept = pool.kept_bytes();
        assert!(kept <= 10 * MIB, "{kept}");
        assert!(
            pool.take(6 * MIB).0.capacity() >= 6 * MIB,
            "the newest is kept"
        );
        pool.put(Vec::with_capacity(11 * MIB));
        assert_eq!(pool.kept_bytes(), 0, "larger than the pool: not kept");
    }

    #[test]
    fn sweep_keeps_recent_buffers() {
        let pool = pool(10 * MIB);
        pool.put(Vec::with_capacity(2 * MIB));
        pool.sweep();
        assert!(pool.kept_bytes() >= 2 * MIB);
    }

    #[test]
    fn kept_buffers_are_charged_and_only_kept_while_the_budget_has_room() {
        let budget = MemoryBudget::new(5 * MIB);
        let pool = BufferPool::new(64 * MIB, budget.clone());
        pool.put(Vec::with_capacity(3 * MIB));
        let kept = pool.kept_bytes();
        assert!(kept >= 3 * MIB);
        assert_eq!(budget.available(), 5 * MIB - kept, "kept memory is charged");
        // No room for another 3 MiB beside it: not kept.
        pool.put(Vec::with_capacity(3 * MIB));
        assert_eq!(pool.kept_bytes(), kept);
        drop(pool);
        assert_eq!(
            budget.available(),
            5 * MIB,
            "a dropped pool gives its bytes back"
        );
    }

    #[tokio::test]
    async fn a_charge_that_finds_the_budget_spent_empties_the_pool_first() {
        let budget = MemoryBudget::new(5 * MIB);
        let pool = BufferPool::new(64 * MIB, budget.clone());
        pool.put(Vec::with_capacity(4 * MIB));
        assert!(pool.kept_bytes() >= 4 * MIB);
        // No waiting: the kept buffer gives way at once.
        let mut charge = budget.empty();
        charge
            .grow(4 * MIB, tokio::time::Instant::now())
            .await
            .expect("the kept buffer makes room");
        assert_eq!(pool.kept_bytes(), 0);
    }
}
