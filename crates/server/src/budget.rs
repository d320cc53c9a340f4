//! The server's memory budget: the bytes it holds for messages in flight, counted so that it
//! never holds more than `limits.memory_budget`, whatever its clients do.
//!
//! What counts, each as a [`Charge`] that travels with the buffer it pays for and gives its bytes
//! back when dropped:
//!
//! - a received message's buffer, charged as its body arrives (a client that claims 256 MiB and
//!   sends ten bytes has ten bytes charged, not 256 MiB), then the uncompressed copy of a
//!   compressed one, charged before it is allocated;
//! - what the hooks hold beside the server while they decide on a large message
//!   (`Hooks::deciding_bytes`: a plugin call's copies of it and of its reply), charged before
//!   they see it and given back once they have decided;
//! - a request's answer, from the moment the request's bytes go back for reuse until the answer
//!   is encoded: the request's charge pays for it (most answers are about the size of what was
//!   asked; an echo is exactly that);
//! - a reply, charged at twice its encoded length before it is encoded (the value and its
//!   encoding are both in memory meanwhile), then at its encoded length until it is written; the charge
//!   grows from the request's, so that a client waiting for its reply's bytes holds its answer
//!   counted, never beside the budget.
//!
//! Messages and replies under [`CHARGED_MIN_BYTES`] are not counted: each connection holds at
//! most one of each at a time, and counting them would cost every small query two semaphore
//! operations. Nor are the read-ahead buffers (a few KiB a connection).
//!
//! The large buffers kept for reuse (`buffers.rs`) are charged too, while the budget has room
//! for them: a buffer the budget cannot hold is not kept, and a charge that finds the budget
//! spent has every kept buffer dropped before it waits, so that memory kept for speed never
//! stands in the way of a message.
//!
//! When the budget is spent, a charge waits for bytes to come back for at most
//! [`MemoryBudget::WAIT`], then fails: the caller refuses that one message or reply with a q error that
//! names the limit, and the connection goes on. A client that stops reading holds its reply's
//! charge until `write_timeout` closes it; one that stops sending in the middle of a message,
//! until `body_timeout` does.
//!
//! The budget is a [`tokio::sync::Semaphore`] with one permit per byte, and a charge is an
//! owned permit, so that a charge can move with its buffer from task to task (a gateway's reply
//! stream will carry one per chunk).

use std::{
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::buffers::BufferPool;

/// Messages and replies smaller than this are not charged.
///
/// 64 KiB: a connection holds at most one message and one reply at a time, so uncounted ones
/// cost at most 128 KiB a connection, which `max_connections` bounds; larger ones are where
/// memory goes (inserts, query results), and they are rare enough that two semaphore operations
/// each cost nothing measurable.
pub(crate) const CHARGED_MIN_BYTES: usize = 64 * 1024;

/// The bytes the server may hold for messages in flight, shared by every connection.
///
/// Clone it to hand it to another connection or task: clones share the same budget.
#[derive(Clone, Debug)]
pub struct MemoryBudget(Arc<Budget>);

/// What every clone of a [`MemoryBudget`] shares: one `Arc`, so that the charge of nothing that
/// every message starts with costs one reference count.
#[derive(Debug)]
struct Budget {
    /// One permit per byte. Tokio's semaphores hold up to `usize::MAX >> 3` permits, far more
    /// than any machine's memory. In an `Arc` of its own: charges are owned permits.
    bytes: Arc<Semaphore>,
    /// The whole budget; a config reload changes it ([`MemoryBudget::resize`]).
    total: AtomicUsize,
    /// The pool of kept buffers, which the budget empties when a charge finds it spent. Weak:
    /// the pool holds a budget of its own, and its buffers hold charges.
    spare: OnceLock<Weak<BufferPool>>,
}

/// Bytes taken from a [`MemoryBudget`], given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: MemoryBudget,
    /// `None` for a charge of nothing.
    permit: Option<OwnedSemaphorePermit>,
}

/// The budget had not enough bytes free within [`MemoryBudget::WAIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server's memory budget (limits.memory_budget, {total} bytes) has not {wanted} bytes free"
)]
pub struct BudgetExhausted {
    /// The bytes asked for.
    pub wanted: usize,
    /// The whole budget.
    pub total: usize,
}

impl MemoryBudget {
    /// How long a charge waits for the budget before it fails.
    ///
    /// 5 s: long enough for the replies of a busy server to drain to their clients and give their
    /// bytes back; short enough that a client whose message cannot be taken hears so, rather than
    /// waiting as if the server had hung.
    pub const WAIT: Duration = Duration::from_secs(5);

    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        Self(Arc::new(Budget {
            bytes: Arc::new(Semaphore::new(total)),
            total: AtomicUsize::new(total),
            spare: OnceLock::new(),
        }))
    }

    /// Makes `pool` the kept buffers this budget drops when it is spent. A budget has one pool;
    /// a second is not registered.
    pub(crate) fn keep_spare(&self, pool: &Arc<BufferPool>) {
        let _ = self.0.spare.set(Arc::downgrade(pool));
    }

    /// Charges `bytes` if they are free now, without waiting and without dropping kept buffers:
    /// what the pool uses to keep one.
    pub(crate) fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let permits = u32::try_from(bytes).ok()?;
        let permit = Arc::clone(&self.0.bytes)
            .try_acquire_many_owned(permits)
            .ok()?;
        Some(Charge {
            budget: self.clone(),
            permit: (bytes > 0).then_some(permit),
        })
    }

    /// Drops every kept buffer, giving its bytes back; true if there were any.
    fn drop_spare(&self) -> bool {
        self.0
            .spare
            .get()
            .and_then(Weak::upgrade)
            .is_some_and(|pool| pool.release() > 0)
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> usize {
        self.0.total.load(Ordering::Relaxed)
    }

    /// Makes the budget `total` bytes. A larger one is free at once. A smaller one refuses a
    /// larger charge at once, and takes back what is free now; the rest it takes back as the
    /// charges holding it end, on a task of its own (on the current tokio runtime), so that the
    /// bytes in flight shrink to the new budget without cutting anything short.
    pub fn resize(&self, total: usize) {
        let total = total.min(Semaphore::MAX_PERMITS);
        let old = self.0.total.swap(total, Ordering::Relaxed);
        if total >= old {
            self.0.bytes.add_permits(total - old);
            return;
        }
        let owed = (old - total) - self.0.bytes.forget_permits(old - total);
        if owed == 0 {
            return;
        }
        let bytes = Arc::clone(&self.0.bytes);
        tokio::spawn(async move {
            let mut owed = owed;
            while owed > 0 {
                let step = u32::try_from(owed).unwrap_or(u32::MAX);
                // The semaphore is never closed.
                let Ok(permit) = bytes.acquire_many(step).await else {
                    return;
                };
                permit.forget();
                owed -= step as usize;
            }
        });
    }

    /// The bytes not charged at the moment.
    pub fn available(&self) -> usize {
        self.0.bytes.available_permits()
    }

    /// A charge of nothing, to grow later.
    pub fn empty(&self) -> Charge {
        Charge {
            budget: self.clone(),
            permit: None,
        }
    }

    /// Charges `bytes`, waiting at most [`MemoryBudget::WAIT`] for them to be free.
    ///
    /// # Errors
    ///
    /// [`BudgetExhausted`] when they were not free in time, or are more than the whole budget.
    pub async fn charge(&self, bytes: usize) -> Result<Charge, BudgetExhausted> {
        let mut charge = self.empty();
        charge
            .grow(bytes, tokio::time::Instant::now() + Self::WAIT)
            .await?;
        Ok(charge)
    }
}

impl Charge {
    /// The bytes charged.
    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Charges `more` bytes on top, waiting for them until `deadline`.
    ///
    /// # Errors
    ///
    /// [`BudgetExhausted`] when they were not free in time, or are more than the whole budget;
    /// the charge is then as it was.
    pub async fn grow(
        &mut self,
        more: usize,
        deadline: tokio::time::Instant,
    ) -> Result<(), BudgetExhausted> {
        if more == 0 {
            return Ok(());
        }
        let exhausted = BudgetExhausted {
            wanted: more,
            total: self.budget.total(),
        };
        // A charge larger than the whole budget would wait for ever.
        let Ok(permits) = u32::try_from(more) else {
            return Err(exhausted);
        };
        if more > self.budget.total() {
            return Err(exhausted);
        }
        let semaphore = Arc::clone(&self.budget.0.bytes);
        let mut first = semaphore.clone().try_acquire_many_owned(permits);
        if first.is_err() && self.budget.drop_spare() {
            // Memory kept for speed gives way to a message.
            first = semaphore.clone().try_acquire_many_owned(permits);
        }
        let permit = match first {
            Ok(permit) => permit,
            Err(_) => {
                match tokio::time::timeout_at(deadline, semaphore.acquire_many_owned(permits)).await
                {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is never closed; a timeout is the only way here.
                    Ok(Err(_)) | Err(_) => return Err(exhausted),
                }
            }
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }

    /// Takes over `other`'s bytes (a charge on the same budget), as one charge.
    pub(crate) fn absorb(&mut self, other: Self) {
        let Some(permit) = other.permit else {
            return;
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
    }

    /// Gives back what is charged beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let Some(held) = &mut self.permit else {
            return;
        };
        let extra = held.num_permits().saturating_sub(bytes);
        if extra > 0 {
            // Dropping the split-off part gives its permits back.
            drop(held.split(extra));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resize_grows_at_once_and_shrinks_as_charges_end() {
        let budget = MemoryBudget::new(1000);
        budget.resize(1500);
        assert_eq!((budget.total(), budget.available()), (1500, 1500));
        let held = budget.charge(1200).await.unwrap();
        budget.resize(500);
        // Over the new budget: refused at once, not waited for.
        assert!(budget.charge(600).await.is_err());
        assert_eq!(budget.available(), 0);
        drop(held);
        // The 1200 bytes come back, and 1000 of them go to the shrink.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!((budget.total(), budget.available()), (500, 500));
    }

    #[tokio::test]
    async fn charges_come_back_when_dropped() {
        let budget = MemoryBudget::new(1000);
        let a = budget.charge(600).await.unwrap();
        assert_eq!((a.bytes(), budget.available()), (600, 400));
        let mut b = budget.empty();
        b.grow(400, tokio::time::Instant::now()).await.unwrap();
        assert_eq!(budget.available(), 0);
        b.shrink_to(100);
        assert_eq!((b.bytes(), budget.available()), (100, 300));
        drop(a);
        drop(b);
        assert_eq!(budget.available(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_waits_then_fails() {
        let budget = MemoryBudget::new(1000);
        let held = budget.charge(900).await.unwrap();
        let error = budget.charge(200).await.unwrap_err();
        assert_eq!(
            error,
            BudgetExhausted {
                wanted: 200,
                total: 1000
            }
        );
        assert!(
            error.to_string().contains("limits.memory_budget"),
            "{error}"
        );
        // Bytes given back while a charge waits let it through.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.charge(200).await.map(|charge| charge.bytes()) }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(waiting.await.unwrap(), Ok(200));
    }

    #[tokio::test]
    async fn more_than_the_whole_budget_fails_at_once() {
        let budget = MemoryBudget::new(1000);
        assert!(budget.charge(1001).await.is_err());
        assert_eq!(budget.available(), 1000);
    }
}
