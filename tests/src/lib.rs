//! qgate's end-to-end test support: servers that the tests of other crates start in-process.
//!
//! [`upstream`] is a test upstream that speaks kdb+ IPC as a kdb+ process does, with scripted
//! behaviours (answers, errors, delays, dying mid-reply, huge replies, a tickerplant's
//! subscriptions, and a record of what it received), for the tests of qgate in front of kdb+.
//! The `qgate-upstream` binary wraps it for the real-client tests in `clients/`.

#![warn(missing_docs)]

pub mod upstream;
