//! Who is connected: the handles in use (`.z.w`) and how many connections each user has open.
//!
//! Both are claimed through guards that give them back when dropped, so a connection task that
//! ends in any way (an error, a panic, a cut at shutdown) releases what it held.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use qgate_hooks::Handle;

/// The first handle given out, as a q process's first client is usually 4 or 5 (after stdin,
/// stdout, stderr and the listening socket).
const FIRST_HANDLE: i32 = 4;

/// The handles and per-user counts of the live connections.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// A `std` mutex: it is held for a set operation, never across an `.await`.
    handles: Mutex<Handles>,
    /// A `std` mutex, for the same reason.
    users: Mutex<HashMap<Arc<[u8]>, usize>>,
}

#[derive(Debug, Default)]
struct Handles {
    /// The next handle to try; 0 before the first.
    next: i32,
    in_use: HashSet<i32>,
}

/// A handle, given back to the registry when dropped.
#[derive(Debug)]
pub(crate) struct HandleGuard {
    registry: Arc<Registry>,
    handle: Handle,
}

/// One connection counted against a user, uncounted when dropped.
#[derive(Debug)]
pub(crate) struct UserGuard {
    registry: Arc<Registry>,
    user: Arc<[u8]>,
}

impl Registry {
    /// A handle no live connection has: the next one counting up from 4, skipping those in use,
    /// wrapping before `i32::MAX`. `None` only if every positive handle is in use.
    pub(crate) fn claim_handle(self: &Arc<Self>) -> Option<HandleGuard> {
        let mut handles = lock(&self.handles);
        let span = i32::MAX - FIRST_HANDLE;
        if handles.in_use.len() >= span as usize {
            return None;
        }
        loop {
            let candidate = if handles.next < FIRST_HANDLE || handles.next == i32::MAX {
                FIRST_HANDLE
            } else {
                handles.next
            };
            handles.next = candidate.saturating_add(1);
            if handles.in_use.insert(candidate) {
                return Some(HandleGuard {
                    registry: Arc::clone(self),
                    handle: Handle(candidate),
                });
            }
        }
    }

    /// Counts one more connection for `user`, unless that would pass `max`.
    pub(crate) fn claim_user(self: &Arc<Self>, user: &Arc<[u8]>, max: usize) -> Option<UserGuard> {
        let mut users = lock(&self.users);
        let count = users.entry(Arc::clone(user)).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(UserGuard {
            registry: Arc::clone(self),
            user: Arc::clone(user),
        })
    }
}

impl HandleGuard {
    /// The handle.
    pub(crate) fn handle(&self) -> Handle {
        self.handle
    }
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        lock(&self.registry.handles).in_use.remove(&self.handle.0);
    }
}

impl Drop for UserGuard {
    fn drop(&mut self) {
        let mut users = lock(&self.registry.users);
        if let Some(count) = users.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                users.remove(&self.user);
            }
        }
    }
}

/// Locks a mutex, ignoring poisoning: the data is a set and a map of counts that every operation
/// leaves consistent, so a panic elsewhere cannot leave them half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_among_the_living() {
        let registry = Arc::new(Registry::default());
        let a = registry.claim_handle().unwrap();
        let b = registry.claim_handle().unwrap();
        assert_eq!((a.handle(), b.handle()), (Handle(4), Handle(5)));
        drop(a);
        // Counting goes on rather than reusing at once, as fds are not reused at once either.
        assert_eq!(registry.claim_handle().unwrap().handle(), Handle(6));
    }

    #[test]
    fn handles_wrap_and_skip_those_in_use() {
        let registry = Arc::new(Registry::default());
        let four = registry.claim_handle().unwrap();
        lock(&registry.handles).next = i32::MAX - 1;
        let last = registry.claim_handle().unwrap();
        assert_eq!(last.handle(), Handle(i32::MAX - 1));
        // i32::MAX is never given out; 4 is in use, so 5 is next.
        assert_eq!(registry.claim_handle().unwrap().handle(), Handle(5));
        drop(four);
    }

    #[test]
    fn users_are_counted_up_to_the_limit() {
        let registry = Arc::new(Registry::default());
        let alice: Arc<[u8]> = Arc::from(&b"alice"[..]);
        let first = registry.claim_user(&alice, 2).unwrap();
        let second = registry.claim_user(&alice, 2).unwrap();
        assert!(registry.claim_user(&alice, 2).is_none());
        drop(first);
        assert!(registry.claim_user(&alice, 2).is_some());
        drop(second);
        assert!(lock(&registry.users).is_empty());
    }
}
