//! When to renew, and how long to wait after a failure: pure arithmetic on times, so that it is
//! tested without a clock.

use std::time::{Duration, SystemTime};

/// The largest jitter, as a fraction of `renew_before`: renewal starts up to a tenth of the
/// window early.
///
/// Certificates issued together (a fleet deployed the same day, the same host restarted) would
/// otherwise all renew in the same minute, and the CA asks its clients to spread their load (Let's
/// Encrypt's integration guide). A fraction of the window scales with it: with the default 30 days
/// renewals spread over 3 days, and a short test window gets a short jitter. Jitter only ever
/// makes renewal earlier, so the configured `renew_before` stays a guarantee: the certificate has
/// at least that long left when renewal starts.
pub(crate) const JITTER_DIVISOR: u32 = 10;

/// The first retry after a failed issuance: one minute.
///
/// Long enough that a CA hiccup or a listener still starting has passed, short enough that a
/// first start is not long without a real certificate.
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(60);

/// The longest wait between retries: six hours.
///
/// Doubling from a minute reaches it at the tenth retry, about eight and a half hours in. With
/// the default 30-day window that still leaves over a hundred tries before the certificate
/// expires, and stays well within Let's Encrypt's failed-validation limit (5 an hour per account
/// and name).
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);

/// When to renew a certificate valid from `not_before` to `not_after`: `renew_before` ahead of
/// its end, less a jitter of `jitter` (in `[0, 1)`) times `renew_before / JITTER_DIVISOR`, but
/// never before a third of its lifetime has passed.
///
/// The floor keeps a `renew_before` longer than the CA's certificates live (30 days against a
/// 6-day short-lived certificate) from renewing in a loop: such certificates are renewed at a
/// third of their life, as Let's Encrypt suggests for them.
pub(crate) fn renewal_time(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: Duration,
    jitter: f64,
) -> SystemTime {
    let jitter = (renew_before / JITTER_DIVISOR).mul_f64(jitter.clamp(0.0, 1.0));
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let floor = not_before + lifetime / 3;
    let planned = not_after
        .checked_sub(renew_before)
        .and_then(|time| time.checked_sub(jitter))
        .unwrap_or(not_before);
    planned.max(floor)
}

/// A random number in `[0, 1)` for the jitter, from the OS's random source, or `0.0` (no jitter)
/// when there is none.
pub(crate) fn random_fraction() -> f64 {
    let mut bytes = [0; 4];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.0,
    }
}

/// Exponential backoff between failed issuances: [`FIRST_RETRY`], doubling, at most
/// [`MAX_RETRY`].
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_RETRY }
    }
}

impl Backoff {
    /// The wait before the next retry, doubling the one after it.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_RETRY);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn renewal_is_the_window_ahead_less_at_most_a_tenth() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let end = start + 90 * DAY;
        assert_eq!(renewal_time(start, end, 30 * DAY, 0.0), end - 30 * DAY);
        assert_eq!(
            renewal_time(start, end, 30 * DAY, 0.5),
            end - 30 * DAY - 36 * 3600 * Duration::from_secs(1)
        );
        let latest_jitter = renewal_time(start, end, 30 * DAY, 0.999_999);
        assert!(latest_jitter > end - 33 * DAY, "{latest_jitter:?}");
        assert!(latest_jitter < end - 30 * DAY);
        // Out-of-range jitter is clamped rather than trusted.
        assert_eq!(renewal_time(start, end, 30 * DAY, -1.0), end - 30 * DAY);
        assert_eq!(renewal_time(start, end, 30 * DAY, 7.0), end - 33 * DAY);
    }

    #[test]
    fn a_window_longer_than_the_lifetime_renews_at_a_third() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let end = start + 6 * DAY;
        assert_eq!(renewal_time(start, end, 30 * DAY, 0.5), start + 2 * DAY);
        assert_eq!(
            renewal_time(end, start, 30 * DAY, 0.5),
            end,
            "inverted validity"
        );
    }

    #[test]
    fn random_fractions_are_in_range() {
        for _ in 0..1000 {
            let fraction = random_fraction();
            assert!((0.0..1.0).contains(&fraction), "{fraction}");
        }
    }

    #[test]
    fn backoff_doubles_to_six_hours() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..11).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(
            delays,
            [
                60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600
            ]
        );
    }
}
