//! Validated values: each newtype parses its TOML form once, so a [`crate::Config`] that exists is
//! a valid one ("parse, don't validate").
//!
//! Each type has a hand-written serde visitor rather than `#[serde(try_from = "String")]`, for two
//! reasons: several accept either an integer or a string (`65536` or `"64KiB"`), and a visitor's
//! `expecting` text is what the error says after "expected", so a wrong type reads
//! `invalid type: string "x", expected a positive integer` rather than naming a Rust type.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// The address to listen on: `"127.0.0.1:5000"`, `"[::1]:5000"`, or a bare port.
///
/// A bare port, `5000` or `"5000"`, means every IPv4 interface (`0.0.0.0:5000`), as q's `-p 5000`
/// does. Host names are not resolved: write an IP address. Port 0 asks the system for a free port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub(crate) SocketAddr);

impl Listen {
    /// The socket address.
    pub fn get(self) -> SocketAddr {
        self.0
    }
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Self {
        Self(addr)
    }
}

impl FromStr for Listen {
    type Err = String;

    /// Parses `host:port` or a bare port, as the `listen` key and the `-p` flag take them.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let port = text
                .parse::<u16>()
                .map_err(|_| format!("invalid port {text:?}: ports go up to 65535"))?;
            return Ok(Self(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))));
        }
        text.parse::<SocketAddr>().map(Self).map_err(|_| {
            format!(
                "invalid address {text:?}: expected an IP address and port such as \
                 \"127.0.0.1:5000\" or \"[::1]:5000\", or a port such as \"5000\""
            )
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListenVisitor;

        impl Visitor<'_> for ListenVisitor {
            type Value = Listen;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address such as \"127.0.0.1:5000\" or a port such as 5000")
            }

            fn visit_i64<E: de::Error>(self, port: i64) -> Result<Listen, E> {
                let port = u16::try_from(port).map_err(|_| {
                    E::invalid_value(Unexpected::Signed(port), &"a port, 0 to 65535")
                })?;
                Ok(Listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))))
            }

            fn visit_u64<E: de::Error>(self, port: u64) -> Result<Listen, E> {
                let port = u16::try_from(port).map_err(|_| {
                    E::invalid_value(Unexpected::Unsigned(port), &"a port, 0 to 65535")
                })?;
                Ok(Listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Listen, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ListenVisitor)
    }
}

/// A length of time written with a unit: `"10s"`, `"500ms"`, `"2m"`, `"1h"`, `"30d"`, or a sum
/// such as `"1m30s"`. Zero (`"0s"`) is allowed. A day is 24 hours.
///
/// A bare number is an error rather than a guess at the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub(crate) Duration);

impl HumanDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(duration: Duration) -> Self {
        Self(duration)
    }
}

impl fmt::Display for HumanDuration {
    /// In the largest unit that writes it whole, as the config takes it: `"10s"`, `"1500ms"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        let (number, unit) = match millis {
            0 => (0, "s"),
            m if m % 3_600_000 == 0 => (m / 3_600_000, "h"),
            m if m % 60_000 == 0 => (m / 60_000, "m"),
            m if m % 1_000 == 0 => (m / 1_000, "s"),
            m => (m, "ms"),
        };
        write!(f, "\"{number}{unit}\"")
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(Self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrVisitor::<Self>::new(
            "a duration such as \"10s\", \"500ms\" or \"2m\"",
        ))
    }
}

/// A timeout: a duration as [`HumanDuration`] writes it, greater than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub(crate) Duration);

impl Timeout {
    /// The duration, never zero.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<Duration> for Timeout {
    type Error = String;

    fn try_from(duration: Duration) -> Result<Self, String> {
        if duration.is_zero() {
            return Err("a timeout of zero would expire at once; use a positive duration".into());
        }
        Ok(Self(duration))
    }
}

impl FromStr for Timeout {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::try_from(parse_duration(text)?)
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrVisitor::<Self>::new(
            "a duration such as \"10s\", \"500ms\" or \"2m\"",
        ))
    }
}

/// A timeout that can be turned off: `"off"`, or a positive duration as [`Timeout`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutOrOff(pub(crate) Option<Duration>);

impl TimeoutOrOff {
    /// No timeout.
    pub const OFF: Self = Self(None);

    /// The duration, or `None` for no timeout.
    pub fn get(self) -> Option<Duration> {
        self.0
    }
}

impl From<Timeout> for TimeoutOrOff {
    fn from(timeout: Timeout) -> Self {
        Self(Some(timeout.get()))
    }
}

impl FromStr for TimeoutOrOff {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "off" {
            return Ok(Self::OFF);
        }
        text.parse::<Timeout>().map(Self::from)
    }
}

impl<'de> Deserialize<'de> for TimeoutOrOff {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrVisitor::<Self>::new(
            "\"off\" or a duration such as \"10s\", \"500ms\" or \"2m\"",
        ))
    }
}

/// A number of bytes, greater than zero: an integer (`65536`), or a string with a binary unit
/// (`"64KiB"`, `"256MiB"`, `"1GiB"`; `B`, `KiB`, `MiB`, `GiB` and `TiB` are understood).
///
/// Decimal units (`KB`, `MB`) are refused rather than guessed at: is `"1MB"` 10^6 bytes or 2^20?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub(crate) usize);

impl ByteSize {
    /// The size in bytes, never zero.
    pub fn get(self) -> usize {
        self.0
    }
}

impl TryFrom<u64> for ByteSize {
    type Error = String;

    fn try_from(bytes: u64) -> Result<Self, String> {
        if bytes == 0 {
            return Err("a size of zero bytes would refuse everything; use a positive size".into());
        }
        usize::try_from(bytes)
            .map(Self)
            .map_err(|_| format!("{bytes} bytes is more than this machine can address"))
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, unit) = text.split_at(digits);
        if number.is_empty() {
            return Err(format!(
                "invalid size {text:?}: expected a number of bytes, such as \"65536\" or \"64KiB\""
            ));
        }
        let shift = match unit.trim_start() {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            "TiB" => 40,
            other => {
                return Err(format!(
                    "invalid size {text:?}: unknown unit `{other}`, expected B, KiB, MiB, GiB or TiB"
                ));
            }
        };
        let too_large = || format!("invalid size {text:?}: too large");
        let number: u64 = number.parse().map_err(|_| too_large())?;
        let bytes = number.checked_mul(1 << shift).ok_or_else(too_large)?;
        Self::try_from(bytes).map_err(|reason| format!("invalid size {text:?}: {reason}"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes such as 65536 or \"64KiB\"")
            }

            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                let unsigned = u64::try_from(bytes)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(bytes), &self))?;
                self.visit_u64(unsigned)
            }

            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                ByteSize::try_from(bytes).map_err(E::custom)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// A count of things, greater than zero: an integer such as `1000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count(pub(crate) usize);

impl Count {
    /// The count, never zero.
    pub fn get(self) -> usize {
        self.0
    }
}

impl TryFrom<usize> for Count {
    type Error = String;

    fn try_from(count: usize) -> Result<Self, String> {
        if count == 0 {
            return Err("expected a positive integer, not 0".into());
        }
        Ok(Self(count))
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;

        impl Visitor<'_> for CountVisitor {
            type Value = Count;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive integer")
            }

            fn visit_i64<E: de::Error>(self, count: i64) -> Result<Count, E> {
                match usize::try_from(count) {
                    Ok(count) if count > 0 => Ok(Count(count)),
                    _ => Err(E::invalid_value(Unexpected::Signed(count), &self)),
                }
            }

            fn visit_u64<E: de::Error>(self, count: u64) -> Result<Count, E> {
                match usize::try_from(count) {
                    Ok(count) if count > 0 => Ok(Count(count)),
                    _ => Err(E::invalid_value(Unexpected::Unsigned(count), &self)),
                }
            }
        }

        deserializer.deserialize_any(CountVisitor)
    }
}

/// A visitor for the types written only as strings: it parses with [`FromStr`] and says what it
/// expected when given anything else.
struct StrVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T: FromStr<Err = String>> StrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            parse: T::from_str,
        }
    }
}

impl<T> Visitor<'_> for StrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.parse)(text).map_err(E::custom)
    }
}

/// Parses a sum of `<integer><unit>` terms, the units being `ms`, `s`, `m`, `h` and `d`, with optional
/// spaces between terms and between a number and its unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |reason: &str| format!("invalid duration {:?}: {reason}", text.trim());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid("expected a number and a unit, such as \"10s\""));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(invalid("expected a number, such as the 10 in \"10s\""));
        }
        let (number, after) = rest.split_at(digits);
        let after = after.trim_start();
        let unit_len = after.len()
            - after
                .trim_start_matches(|c: char| !c.is_ascii_digit() && !c.is_whitespace())
                .len();
        let (unit, after) = after.split_at(unit_len);
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(invalid("a number needs a unit: ms, s, m, h or d")),
            fraction if fraction.starts_with('.') => {
                return Err(invalid(
                    "fractions are not understood; use a smaller unit, such as \"1500ms\"",
                ));
            }
            other => {
                return Err(invalid(&format!(
                    "unknown unit `{other}`, expected ms, s, m, h or d"
                )));
            }
        };
        let millis = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(millis_per_unit))
            .ok_or_else(|| invalid("too long"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| invalid("too long"))?;
        rest = after.trim_start();
    }
    Ok(total)
}

/// A plugin's pinned sha256 digest: 64 hex digits, `sha256 = "9f86d0..."`, as `sha256sum` or
/// `qgate plugins` prints it. Kept in lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sha256(String);

impl Sha256 {
    /// The digest as 64 lower-case hex digits.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

impl FromStr for Sha256 {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "invalid sha256 {text:?}: a sha256 digest is 64 hex digits, as `sha256sum FILE` \
                 prints it"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Sha256Visitor;

        impl Visitor<'_> for Sha256Visitor {
            type Value = Sha256;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sha256 digest (64 hex digits)")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Sha256, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Sha256Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: FromStr<Err = String> + fmt::Debug + PartialEq>(
        text: &str,
        expect: Result<T, &str>,
    ) {
        let got = text.parse::<T>();
        match (&got, &expect) {
            (Ok(got), Ok(expect)) => assert_eq!(got, expect, "{text:?}"),
            (Err(got), Err(expect)) => assert!(got.contains(expect), "{text:?}: {got}"),
            _ => panic!("{text:?}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn durations() {
        let ok = |ms| Ok(HumanDuration(Duration::from_millis(ms)));
        check::<HumanDuration>("10s", ok(10_000));
        check::<HumanDuration>("500ms", ok(500));
        check::<HumanDuration>("2m", ok(120_000));
        check::<HumanDuration>("1h", ok(3_600_000));
        check::<HumanDuration>("30d", ok(30 * 86_400_000));
        check::<HumanDuration>("1d12h", ok(36 * 3_600_000));
        check::<HumanDuration>("1m30s", ok(90_000));
        check::<HumanDuration>(" 1m 30 s ", ok(90_000));
        check::<HumanDuration>("0s", ok(0));
        check::<HumanDuration>("10", Err("a number needs a unit"));
        check::<HumanDuration>("10 parsecs", Err("unknown unit `parsecs`"));
        check::<HumanDuration>("1.5s", Err("fractions are not understood"));
        check::<HumanDuration>("", Err("expected a number and a unit"));
        check::<HumanDuration>("s", Err("expected a number"));
        check::<HumanDuration>("99999999999999999999h", Err("too long"));
        check::<Timeout>("0s", Err("zero"));
        check::<Timeout>("1ms", Ok(Timeout(Duration::from_millis(1))));
        check::<TimeoutOrOff>("off", Ok(TimeoutOrOff::OFF));
        check::<TimeoutOrOff>("5m", Ok(TimeoutOrOff(Some(Duration::from_secs(300)))));
        check::<TimeoutOrOff>("0ms", Err("zero"));
    }

    #[test]
    fn sizes() {
        check::<ByteSize>("65536", Ok(ByteSize(65_536)));
        check::<ByteSize>("1B", Ok(ByteSize(1)));
        check::<ByteSize>("64KiB", Ok(ByteSize(64 << 10)));
        check::<ByteSize>("256 MiB", Ok(ByteSize(256 << 20)));
        check::<ByteSize>("1GiB", Ok(ByteSize(1 << 30)));
        check::<ByteSize>("2TiB", Ok(ByteSize(2 << 40)));
        check::<ByteSize>("1MB", Err("unknown unit `MB`"));
        check::<ByteSize>("0KiB", Err("zero"));
        check::<ByteSize>("KiB", Err("expected a number of bytes"));
        check::<ByteSize>("99999999999TiB", Err("too large"));
    }

    #[test]
    fn listen() {
        let addr = |text: &str| Ok(Listen(text.parse().unwrap()));
        check::<Listen>("127.0.0.1:5000", addr("127.0.0.1:5000"));
        check::<Listen>("[::1]:5000", addr("[::1]:5000"));
        check::<Listen>("5000", addr("0.0.0.0:5000"));
        check::<Listen>("0", addr("0.0.0.0:0"));
        check::<Listen>("65536", Err("ports go up to 65535"));
        check::<Listen>("localhost:5000", Err("expected an IP address and port"));
        check::<Listen>("127.0.0.1", Err("expected an IP address and port"));
    }
}
