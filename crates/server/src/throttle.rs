//! Brute-force protection: failed logins make later attempts from the same address, and for the
//! same user name, wait longer and longer.
//!
//! Every login attempt, whatever checks it (the password file, the auth hook, later an HTTP
//! login), asks [`LoginThrottle::admit`] first, with the peer's address and the user name it
//! claims, and reports its outcome on the [`Attempt`] it gets back.
//!
//! ```text
//!   admit(address, user) ──► Refuse (locked out: no check at all)
//!          │
//!          └──► Attempt { wait } ── sleep(wait) ── check the password ── attempt.succeeded()
//!                                                                     └─ attempt.failed()
//! ```
//!
//! Each address and each user name has a record of its recent failures. Until
//! [`LoginBackoff::failures_before_delay`] of them, nothing waits, so a typo slows nobody; from
//! then on each later attempt waits [`LoginBackoff::first_delay`], doubling with every further
//! failure up to [`LoginBackoff::max_delay`].
//! For an address the delay is a queue, not a pause: each attempt takes the address's next free
//! turn, a delay after the one before, so that a hundred parallel connections guessing at once
//! wait a hundred delays, not one; an attempt whose turn is further away than `max_delay` is
//! refused at once, without a check (a lockout, which lasts until the queue drains).
//! For a user name it is a pause of the current delay, never a refusal, so that guessing at a
//! name cannot lock its owner out.
//!
//! The wait comes before the check and is the same whatever the password, so a failed attempt
//! cannot be told from a good one before the wait is over: closing early teaches the attacker
//! nothing. The waiting connection holds only its own handshake slot (counted against its own
//! address, see `admission.rs`), never a logged-in connection's slot or a user's.
//!
//! Who is slowed: the address that fails (any user name it tries), and a user name that fails
//! (from any address, so a guesser with many addresses is slowed too). The real owner of a name
//! under attack waits up to `max_delay` to log in while the attack lasts; nobody else waits at
//! all. A successful login clears its address's and its user name's failures.
//!
//! The records also decide what is logged: each address's failures and refusals go to the log
//! a few times a window, then as a count (see `logging.rs`), so a flood of bad logins cannot
//! flood the log. That holds with the waits turned off too.
//!
//! Records are forgotten [`FORGET_AFTER`] after their last failure, and there are at most
//! [`MAX_RECORDS`] of each kind, so a flood of made-up user names costs bounded memory. User
//! names are kept as keyed 64-bit hashes, never as text.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::{admission::address_key, logging::Repeats, options::LoginBackoff};

/// How long a record is kept after its last failure.
///
/// 15 minutes: longer than any delay, so an attacker cannot wait a lockout out and start again
/// from no delay; short enough that a user who mistyped this morning is not slowed this
/// afternoon.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// The most records kept for addresses, and again for user names.
///
/// 100 000 of each, about 10 MiB in all: far more than the addresses and names that fail within
/// [`FORGET_AFTER`] on a healthy system. Past it the oldest records are dropped first.
pub(crate) const MAX_RECORDS: usize = 100_000;

/// Failed logins by address and by user name, and the turns they give later attempts.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    /// A config reload replaces them; the failures counted so far stay.
    rules: ArcSwap<LoginBackoff>,
    /// A `std` mutex: held for a few map operations, never across an `.await`.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_address: HashMap<IpAddr, Record>,
    by_user: HashMap<u64, Record>,
    /// Keys the user-name hashes, so that nobody can choose names that collide.
    hasher: RandomState,
}

#[derive(Debug)]
struct Record {
    /// Failures since the last success, within [`FORGET_AFTER`] of each other.
    failures: u32,
    /// The next free turn.
    next_turn: Instant,
    last_failure: Instant,
    /// The log lines about this record.
    log: Repeats,
}

impl Record {
    /// Whether its failures still count: the last is less than [`FORGET_AFTER`] old.
    fn is_fresh(&self, now: Instant) -> bool {
        now.duration_since(self.last_failure) < FORGET_AFTER
    }
}

/// What [`LoginThrottle::admit`] decided.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Check the credentials after waiting `wait`, and report the outcome on the attempt.
    Proceed {
        /// How long to wait before checking: the same for a good and a bad password.
        wait: Duration,
        /// Where to report the outcome.
        attempt: Attempt,
    },
    /// The address's turns are taken further ahead than `max_delay`: refuse without checking.
    Refuse {
        /// How many failures the address has.
        failures: u32,
        /// `Some(n)` when the refusal is to be logged, `n` being how many lines about this
        /// address were left out since the last.
        log: Option<u64>,
    },
}

/// A failure, counted: what the caller logs.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The address's failures, this one included.
    pub(crate) failures: u32,
    /// What the next attempt from the address, or for the user name, waits.
    pub(crate) delay: Duration,
    /// `Some(n)` when the failure is to be logged, `n` being how many lines about this address
    /// were left out since the last.
    pub(crate) log: Option<u64>,
}

/// One admitted login attempt. Dropping it without reporting counts as nothing (a client that
/// closed during its wait).
#[derive(Debug)]
pub(crate) struct Attempt {
    throttle: Arc<LoginThrottle>,
    address: IpAddr,
    user: u64,
}

impl LoginThrottle {
    /// A throttle with these rules.
    pub(crate) fn new(rules: LoginBackoff) -> Self {
        Self {
            rules: ArcSwap::from_pointee(rules),
            state: Mutex::default(),
        }
    }

    /// The rules in force.
    pub(crate) fn rules(&self) -> LoginBackoff {
        LoginBackoff::clone(&self.rules.load())
    }

    /// Applies `rules` to the attempts from now on.
    pub(crate) fn set_rules(&self, rules: LoginBackoff) {
        self.rules.store(Arc::new(rules));
    }

    /// Admits a login attempt from `address` for `user`: the wait before its check, or a
    /// refusal.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr, user: &[u8]) -> Admission {
        let address = address_key(address);
        let now = Instant::now();
        let mut state = self.lock();
        let user = state.hasher.hash_one(user);
        let user_wait = state
            .by_user
            .get(&user)
            .filter(|record| record.is_fresh(now))
            .map_or(Duration::ZERO, |record| self.penalty(record.failures));
        let mut wait = user_wait;
        if let Some(record) = state.by_address.get_mut(&address)
            && record.is_fresh(now)
            && let Some(penalty) = self.queued_penalty(record.failures)
        {
            let turn = record.next_turn.saturating_duration_since(now);
            if turn > self.rules.load().max_delay {
                return Admission::Refuse {
                    failures: record.failures,
                    log: record.log.note(),
                };
            }
            // Take the turn: this address's next attempt comes a penalty after this one.
            wait = wait.max(turn);
            record.next_turn = now + turn + penalty;
        }
        Admission::Proceed {
            wait,
            attempt: Attempt {
                throttle: Arc::clone(self),
                address,
                user,
            },
        }
    }

    /// The delay that `failures` failures cost each later attempt: nothing for the first
    /// `failures_before_delay`, or with the protection off; then `first_delay`, doubling with
    /// each failure, up to `max_delay`.
    fn penalty(&self, failures: u32) -> Duration {
        self.queued_penalty(failures).unwrap_or(Duration::ZERO)
    }

    /// [`LoginThrottle::penalty`], `None` while it is nothing.
    fn queued_penalty(&self, failures: u32) -> Option<Duration> {
        let first_delay = self.rules.load().first_delay?;
        let over = failures.checked_sub(self.rules.load().failures_before_delay)?;
        Some(
            first_delay
                .saturating_mul(1 << over.min(30))
                .min(self.rules.load().max_delay),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The maps hold counters that every operation leaves consistent; a panic elsewhere
        // cannot leave them half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, address: IpAddr, user: u64) -> Failure {
        let now = Instant::now();
        let penalty = |failures| self.penalty(failures);
        let mut state = self.lock();
        let by_user = record(&mut state.by_user, user, now);
        let user_delay = fail(by_user, now, penalty);
        let by_address = record(&mut state.by_address, address, now);
        let address_delay = fail(by_address, now, penalty);
        Failure {
            failures: by_address.failures,
            delay: user_delay.max(address_delay),
            log: by_address.log.note(),
        }
    }

    fn succeeded(&self, address: IpAddr, user: u64) {
        let mut state = self.lock();
        state.by_address.remove(&address);
        state.by_user.remove(&user);
    }
}

/// The record for `key`, made if there is none, after forgetting stale ones when the map is
/// full.
fn record<K: std::hash::Hash + Eq + Copy>(
    map: &mut HashMap<K, Record>,
    key: K,
    now: Instant,
) -> &mut Record {
    if !map.contains_key(&key) && map.len() >= MAX_RECORDS {
        map.retain(|_, record| record.is_fresh(now));
        if map.len() >= MAX_RECORDS {
            // Still full of live records: drop the oldest quarter, so that this runs once per
            // quarter of the map rather than at every new name.
            let mut ages: Vec<Instant> = map.values().map(|record| record.last_failure).collect();
            let cut = ages.len() / 4;
            let (_, &mut oldest_kept, _) = ages.select_nth_unstable(cut);
            map.retain(|_, record| record.last_failure >= oldest_kept);
        }
    }
    map.entry(key).or_insert_with(|| Record {
        failures: 0,
        next_turn: now,
        last_failure: now,
        log: Repeats::default(),
    })
}

/// Counts a failure on `record`; returns the delay it now costs the next attempt.
fn fail(record: &mut Record, now: Instant, penalty: impl Fn(u32) -> Duration) -> Duration {
    if !record.is_fresh(now) {
        record.failures = 0;
    }
    record.failures = record.failures.saturating_add(1);
    record.last_failure = now;
    let delay = penalty(record.failures);
    record.next_turn = record.next_turn.max(now + delay);
    delay
}

impl Attempt {
    /// The credentials were good: the address's and the user name's failures are cleared.
    pub(crate) fn succeeded(self) {
        self.throttle.succeeded(self.address, self.user);
    }

    /// The credentials were refused: the failure is counted against the address and the user
    /// name.
    pub(crate) fn failed(self) -> Failure {
        self.throttle.failed(self.address, self.user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(first_ms: u64, max_ms: u64, before: u32) -> Arc<LoginThrottle> {
        Arc::new(LoginThrottle::new(LoginBackoff {
            first_delay: Some(Duration::from_millis(first_ms)),
            max_delay: Duration::from_millis(max_ms),
            failures_before_delay: before,
        }))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Admits an attempt and returns its wait, or `None` for a refusal.
    fn admit(
        throttle: &Arc<LoginThrottle>,
        address: &str,
        user: &str,
    ) -> Option<(Duration, Attempt)> {
        match throttle.admit(ip(address), user.as_bytes()) {
            Admission::Proceed { wait, attempt } => Some((wait, attempt)),
            Admission::Refuse { .. } => None,
        }
    }

    fn fail(throttle: &Arc<LoginThrottle>, address: &str, user: &str) -> Duration {
        let (wait, attempt) = admit(throttle, address, user).expect("admitted");
        attempt.failed();
        wait
    }

    #[tokio::test(start_paused = true)]
    async fn waits_grow_after_the_free_failures() {
        let throttle = throttle(100, 1000, 3);
        for _ in 0..3 {
            assert_eq!(fail(&throttle, "10.0.0.1", "alice"), Duration::ZERO);
        }
        // From the third failure on, each next attempt waits, doubling to the cap.
        for expect in [100, 200, 400, 800, 1000, 1000] {
            let (wait, attempt) = admit(&throttle, "10.0.0.1", "alice").unwrap();
            assert_eq!(wait, Duration::from_millis(expect));
            tokio::time::advance(wait).await;
            attempt.failed();
        }
        // Another address and another user are not slowed.
        assert_eq!(
            admit(&throttle, "10.0.0.2", "bob").unwrap().0,
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_attempts_queue_and_past_the_cap_are_refused() {
        let throttle = throttle(100, 1000, 1);
        fail(&throttle, "10.0.0.1", "alice");
        let waits: Vec<_> = (0..20)
            .map_while(|i| admit(&throttle, "10.0.0.1", &format!("user{i}")))
            .map(|(wait, _)| wait.as_millis())
            .collect();
        // Each takes the next turn, a penalty after the one before, until the queue is a
        // `max_delay` long.
        assert_eq!(waits, [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
        assert!(admit(&throttle, "10.0.0.1", "anyone").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_name_under_attack_is_slowed_never_refused() {
        let throttle = throttle(100, 1000, 1);
        // Guesses at alice from many addresses.
        for i in 0..10 {
            fail(&throttle, &format!("10.0.1.{i}"), "alice");
        }
        // Her owner, from a fresh address, waits the longest delay but is let through.
        let (wait, attempt) = admit(&throttle, "10.0.2.1", "alice").unwrap();
        assert_eq!(wait, Duration::from_millis(1000));
        attempt.succeeded();
        // Her success cleared her name's record.
        assert_eq!(
            admit(&throttle, "10.0.2.2", "alice").unwrap().0,
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_clears_its_address() {
        let throttle = throttle(100, 1000, 1);
        fail(&throttle, "10.0.0.1", "alice");
        let (wait, attempt) = admit(&throttle, "10.0.0.1", "bob").unwrap();
        assert_eq!(wait, Duration::from_millis(100));
        attempt.succeeded();
        assert_eq!(
            admit(&throttle, "10.0.0.1", "carol").unwrap().0,
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_forgotten_and_logged_a_few_times_a_window() {
        let throttle = throttle(100, 100, 1);
        let mut logged = 0;
        for _ in 0..100 {
            let (wait, attempt) = admit(&throttle, "10.0.0.1", "alice").unwrap();
            tokio::time::advance(wait).await;
            if attempt.failed().log.is_some() {
                logged += 1;
            }
        }
        assert_eq!(logged, crate::logging::REPEATS_PER_WINDOW);
        tokio::time::advance(FORGET_AFTER).await;
        assert_eq!(
            admit(&throttle, "10.0.0.1", "alice").unwrap().0,
            Duration::ZERO
        );
    }

    #[tokio::test]
    async fn off_means_nobody_waits_and_the_log_is_still_summarised() {
        let throttle = Arc::new(LoginThrottle::new(LoginBackoff {
            first_delay: None,
            ..LoginBackoff::default()
        }));
        let mut logged = 0;
        for _ in 0..100 {
            let (wait, attempt) = admit(&throttle, "10.0.0.1", "alice").unwrap();
            assert_eq!(wait, Duration::ZERO);
            if attempt.failed().log.is_some() {
                logged += 1;
            }
        }
        assert_eq!(logged, crate::logging::REPEATS_PER_WINDOW);
    }
}
