//! The decoder never allocates more than its memory budget, measured with a counting global
//! allocator.
//!
//! The allocator counts every allocation of the process, so this file is its own test binary with
//! a single test: nothing else runs while a decode is measured.
//! `peak_alloc` provides the allocator, so that no `unsafe` is written here (the workspace forbids
//! it).

#![allow(clippy::unwrap_used, reason = "tests")]

mod strategy;

use peak_alloc::PeakAlloc;
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, TestRunner},
};
use qgate_ipc::{DecodeError, DecodeOptions, Endian, K, decode_with, encode};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// What the decoder may allocate beyond its budget: the budget counts the memory of the value, and
/// a symbol, an error's text or a lambda's context is copied before it is charged. The inputs
/// here are at most 4 KiB, so one such copy is at most that.
const SLACK: usize = 4096 + 256;

/// Decodes `body` with a budget of `limit` bytes and returns how many bytes the decode had
/// allocated at its peak, over what was allocated before it started.
fn peak_of_decode(body: &[u8], endian: Endian, limit: usize) -> (usize, Result<K, DecodeError>) {
    let options = DecodeOptions { max_bytes: limit };
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let result = decode_with(body, endian, &options);
    let peak = ALLOCATOR.peak_usage().saturating_sub(before);
    (peak, result)
}

fn check(body: &[u8], limit: usize) -> Result<(), TestCaseError> {
    for endian in [Endian::Little, Endian::Big] {
        let (peak, result) = peak_of_decode(body, endian, limit);
        prop_assert!(
            peak <= limit + SLACK,
            "decoding {} bytes with a budget of {limit} allocated {peak} bytes ({result:?})",
            body.len(),
        );
    }
    Ok(())
}

fn encoded(value: &K) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, &mut out).unwrap();
    out
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: strategy::cases(cases),
        ..Config::default()
    })
}

/// A budget: small ones make most real values too large, large ones let them through.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(256),
        Just(1024),
        Just(4096),
        Just(16 << 10),
        Just(64 << 10)
    ]
}

/// Bodies that claim far more than they hold, 2^31 - 1 items of each kind in a few bytes, in
/// `endian` byte order.
fn huge_claims(endian: Endian) -> Vec<Vec<u8>> {
    let max = match endian {
        Endian::Little => i32::MAX.to_le_bytes(),
        Endian::Big => i32::MAX.to_be_bytes(),
    };
    let mut bodies = Vec::new();
    // Every vector type, and the general list, with a 2 GB count and eight bytes of items.
    for t in [
        0u8, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
    ] {
        let mut body = vec![t, 0];
        body.extend_from_slice(&max);
        body.extend_from_slice(&[0; 8]);
        bodies.push(body);
    }
    // Projection and composition counts.
    for t in [104u8, 105] {
        let mut body = vec![t];
        body.extend_from_slice(&max);
        body.extend_from_slice(&[0xff, 1]);
        bodies.push(body);
    }
    // A table whose column list claims 2 GB of columns, after one column name.
    let one = match endian {
        Endian::Little => 1i32.to_le_bytes(),
        Endian::Big => 1i32.to_be_bytes(),
    };
    let mut body = vec![98, 0, 99, 11, 0];
    body.extend_from_slice(&one);
    body.extend_from_slice(&[b'a', 0, 0, 0]);
    body.extend_from_slice(&max);
    bodies.push(body);
    bodies
}

/// One test, so that nothing else allocates while a decode is measured.
#[test]
fn the_decoder_stays_within_its_memory_budget() {
    // A 2 GB claim in a small body is refused before anything is allocated for it.
    for endian in [Endian::Little, Endian::Big] {
        for body in huge_claims(endian) {
            let (peak, result) = peak_of_decode(&body, endian, 1 << 30);
            assert!(result.is_err(), "{body:?} decoded");
            // Nothing, or for the table its one column name, a few dozen bytes.
            assert!(peak <= 128, "{body:?} ({result:?}) allocated {peak} bytes");
        }
    }

    // A legal message that expands: 2000 boolean atoms are 4 KB on the wire and a K each in
    // memory. Within the budget it decodes; below it, it is refused within the budget.
    let bools = encoded(&K::list(vec![
        K::Atom(qgate_ipc::Atom::Boolean(true));
        2000
    ]));
    let (_, result) = peak_of_decode(&bools, Endian::Little, 1 << 20);
    assert!(result.is_ok());
    for limit in [1024, 16 << 10] {
        let (peak, result) = peak_of_decode(&bools, Endian::Little, limit);
        assert_eq!(result, Err(DecodeError::TooLarge { limit }));
        assert!(
            peak <= limit + SLACK,
            "{peak} bytes for a budget of {limit}"
        );
    }

    // Arbitrary bytes.
    runner(512)
        .run(&(vec(any::<u8>(), 0..4096), limit()), |(body, limit)| {
            check(&body, limit)
        })
        .unwrap();

    // Damaged encodings of real values, which get deep into the decoder.
    let damaged = strategy::value().prop_flat_map(|value| strategy::mutated(encoded(&value)));
    runner(512)
        .run(&(damaged, limit()), |(body, limit)| check(&body, limit))
        .unwrap();

    // Intact encodings of real values: within the budget or refused, never beyond it.
    runner(512)
        .run(&(strategy::value(), limit()), |(value, limit)| {
            check(&encoded(&value), limit)
        })
        .unwrap();
}
