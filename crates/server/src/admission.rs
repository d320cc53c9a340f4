//! Who may start a handshake: the cap on connections that have not logged in yet, with random
//! early drop as sshd's `MaxStartups start:rate:full`, and a cap per source address.
//!
//! A connection holds a handshake slot from its accept until its login is decided (the TLS
//! handshake, the q handshake, a brute-force wait, the auth hook), then gives it back; a
//! connection that logs in then holds one of `max_connections` instead. So sockets that connect
//! and say nothing fill at most the handshake slots, never the slots of logged-in clients, and
//! `handshake_timeout` empties them.
//!
//! ```text
//!   pending handshakes:  0 ........ early_drop ............... max_handshakes
//!   a new connection:    accepted   dropped with probability   dropped
//!                                   30% rising to 100%
//! ```
//!
//! Random early drop keeps a flood from filling the last slots at once: past `early_drop`, each
//! new connection is dropped with a probability that grows linearly from
//! [`EARLY_DROP_PERCENT`] to 100% at `max_handshakes`, so legitimate clients (which retry) still
//! get through while the flood's connections time out. One address may hold at most
//! `max_handshakes_per_address` of the slots, so a single host cannot take them all and keep
//! others out. IPv6 addresses are counted by their /64 prefix, since one host usually holds a
//! whole /64.

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, RandomState},
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use crate::options::ServerLimits;

/// The probability, in percent, of dropping a new connection once `handshake_early_drop`
/// handshakes are pending; it rises linearly to 100 at `max_handshakes`.
///
/// 30%: sshd's default (`MaxStartups 10:30:100`); a client that retries twice gets through with
/// a probability of 97% at the threshold.
pub(crate) const EARLY_DROP_PERCENT: u64 = 30;

/// The handshake slots, counted in all and per address.
#[derive(Debug)]
pub(crate) struct Admission {
    /// A `std` mutex: held for a counter update and a map lookup, never across an `.await`.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `max_handshakes`, `handshake_early_drop` (at most `max`) and
    /// `max_handshakes_per_address`: a config reload changes them.
    max: usize,
    early_drop: usize,
    per_address: usize,
    pending: usize,
    by_address: HashMap<IpAddr, usize>,
    /// A xorshift generator for early drop: it needs to be unpredictable to nobody, only fair.
    random: u64,
}

/// Why a connection got no handshake slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Randomly dropped past `handshake_early_drop`.
    EarlyDrop,
    /// `max_handshakes` are pending.
    Full,
    /// The address has `max_handshakes_per_address` pending.
    PerAddress,
}

impl Refusal {
    /// The limit, as the config names it.
    pub(crate) fn limit(self) -> &'static str {
        match self {
            Self::EarlyDrop => "handshake_early_drop",
            Self::Full => "max_handshakes",
            Self::PerAddress => "max_handshakes_per_address",
        }
    }

    /// The value of that limit.
    pub(crate) fn max(self, limits: &ServerLimits) -> usize {
        match self {
            Self::EarlyDrop => limits.handshake_early_drop,
            Self::Full => limits.max_handshakes,
            Self::PerAddress => limits.max_handshakes_per_address,
        }
    }
}

/// A handshake slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct HandshakeSlot {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Admission {
    /// The slots that `limits` allow.
    pub(crate) fn new(limits: &ServerLimits) -> Self {
        Self {
            state: Mutex::new(State {
                max: limits.max_handshakes,
                early_drop: limits.handshake_early_drop.min(limits.max_handshakes),
                per_address: limits.max_handshakes_per_address,
                pending: 0,
                by_address: HashMap::new(),
                // Any odd seed works; this one differs from process to process.
                random: RandomState::new().hash_one(0u64) | 1,
            }),
        }
    }

    /// Applies `limits` to the handshakes admitted from now on; those pending keep their slots.
    pub(crate) fn set_limits(&self, limits: &ServerLimits) {
        let mut state = self.lock();
        state.max = limits.max_handshakes;
        state.early_drop = limits.handshake_early_drop.min(limits.max_handshakes);
        state.per_address = limits.max_handshakes_per_address;
    }

    /// A handshake slot for a connection from `address`, or why there is none.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<HandshakeSlot, Refusal> {
        let address = address_key(address);
        let mut state = self.lock();
        if state.pending >= state.max {
            return Err(Refusal::Full);
        }
        if state.by_address.get(&address).copied().unwrap_or(0) >= state.per_address {
            return Err(Refusal::PerAddress);
        }
        if state.pending >= state.early_drop {
            let over = (state.pending - state.early_drop) as u64;
            let span = (state.max - state.early_drop).max(1) as u64;
            let percent = EARLY_DROP_PERCENT + (100 - EARLY_DROP_PERCENT) * over / span;
            if state.next_random() % 100 < percent {
                return Err(Refusal::EarlyDrop);
            }
        }
        state.pending += 1;
        *state.by_address.entry(address).or_insert(0) += 1;
        Ok(HandshakeSlot {
            admission: Arc::clone(self),
            address,
        })
    }

    /// How many handshakes are pending.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().pending
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counters that every operation leaves consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn next_random(&mut self) -> u64 {
        // xorshift64*.
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        state.pending = state.pending.saturating_sub(1);
        if let Some(count) = state.by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                state.by_address.remove(&self.address);
            }
        }
    }
}

/// The address a peer is counted under: IPv4 as it is (an IPv4-mapped IPv6 address as its IPv4
/// address), IPv6 by its /64 prefix.
pub(crate) fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = v6.segments();
                IpAddr::V6(Ipv6Addr::new(
                    prefix[0], prefix[1], prefix[2], prefix[3], 0, 0, 0, 0,
                ))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, early_drop: usize, per_address: usize) -> Arc<Admission> {
        let limits = ServerLimits {
            max_handshakes: max,
            handshake_early_drop: early_drop,
            max_handshakes_per_address: per_address,
            ..ServerLimits::default()
        };
        Arc::new(Admission::new(&limits))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let admission = admission(10, 10, 3);
        let held: Vec<_> = (0..3)
            .map(|_| admission.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(
            admission.admit(ip("10.0.0.1")).unwrap_err(),
            Refusal::PerAddress
        );
        let other = admission.admit(ip("10.0.0.2")).unwrap();
        drop(held);
        assert!(admission.admit(ip("10.0.0.1")).is_ok());
        drop(other);
        assert_eq!(admission.pending(), 0);
    }

    #[test]
    fn past_the_threshold_some_are_dropped_and_at_the_cap_all() {
        let admission = admission(100, 50, 1000);
        let mut held: Vec<_> = (0..50)
            .map(|i| {
                admission
                    .admit(ip(&format!("10.0.{}.{}", i / 200, i % 200)))
                    .unwrap()
            })
            .collect();
        let mut dropped = 0;
        for i in 0..1000 {
            match admission.admit(ip(&format!("10.1.{}.{}", i / 200, i % 200))) {
                Ok(slot) => held.push(slot),
                Err(Refusal::EarlyDrop | Refusal::Full) => dropped += 1,
                Err(Refusal::PerAddress) => unreachable!("one connection an address"),
            }
        }
        assert_eq!(admission.pending(), 100);
        assert_eq!(dropped, 950);
        assert_eq!(admission.admit(ip("10.9.9.9")).unwrap_err(), Refusal::Full);
    }

    #[test]
    fn ipv6_hosts_are_counted_by_their_64() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(address_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(address_key(ip("10.0.0.1")), ip("10.0.0.1"));
    }
}
