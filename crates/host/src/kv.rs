//! The key-value store a plugin's instances share, and that outlives its versions.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

/// The longest key, in bytes.
///
/// Keys name things (a user, a connection handle, a bucket); 1 KiB is far more than any name needs
/// and keeps `kv-keys` answers small.
pub const MAX_KV_KEY_BYTES: usize = 1024;

/// The largest value, in bytes.
///
/// The store holds state (counters, tables of connections, rate-limit buckets), not data: 1 MiB
/// is room for a table of thousands of entries, and a guest that wants more is misusing it.
pub const MAX_KV_VALUE_BYTES: usize = 1 << 20;

/// The most bytes (keys plus values) one plugin may keep.
///
/// The store lives in the host's memory, outside the guest's memory cap, so it needs its own:
/// 64 MiB per plugin bounds what a misbehaving plugin can take from the process.
pub const MAX_KV_TOTAL_BYTES: usize = 64 << 20;

/// Why a store operation was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KvError {
    #[error("kv key of {0} bytes is longer than the limit of {MAX_KV_KEY_BYTES}")]
    KeyTooLong(usize),
    #[error("kv value of {0} bytes is larger than the limit of {MAX_KV_VALUE_BYTES}")]
    ValueTooLarge(usize),
    #[error("kv store would hold {0} bytes, over the limit of {MAX_KV_TOTAL_BYTES}")]
    Full(usize),
}

/// One plugin's store: ordered, so that `keys(prefix)` is a range scan.
#[derive(Debug, Default)]
pub(crate) struct Kv {
    /// A `std` mutex: every operation is a short, non-async critical section.
    inner: Mutex<KvInner>,
}

#[derive(Debug, Default)]
struct KvInner {
    map: BTreeMap<String, Vec<u8>>,
    bytes: usize,
}

impl Kv {
    fn lock(&self) -> std::sync::MutexGuard<'_, KvInner> {
        // A panic while holding the lock cannot leave the map half-updated (each operation is one
        // map call), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().map.get(key).cloned()
    }

    pub(crate) fn set(&self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        if key.len() > MAX_KV_KEY_BYTES {
            return Err(KvError::KeyTooLong(key.len()));
        }
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(KvError::ValueTooLarge(value.len()));
        }
        let mut inner = self.lock();
        let old = inner.map.get(&key).map_or(0, |v| key.len() + v.len());
        let total = inner.bytes - old + key.len() + value.len();
        if total > MAX_KV_TOTAL_BYTES {
            return Err(KvError::Full(total));
        }
        inner.bytes = total;
        inner.map.insert(key, value);
        Ok(())
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        let mut inner = self.lock();
        match inner.map.remove(key) {
            Some(value) => {
                inner.bytes -= key.len() + value.len();
                true
            }
            None => false,
        }
    }

    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_a_prefix_range_and_sizes_are_counted() {
        let kv = Kv::default();
        kv.set("a/1".into(), vec![1]).unwrap();
        kv.set("a/2".into(), vec![2, 2]).unwrap();
        kv.set("b".into(), vec![]).unwrap();
        assert_eq!(kv.keys("a/"), ["a/1", "a/2"]);
        assert_eq!(kv.lock().bytes, 3 + 1 + 3 + 2 + 1);
        kv.set("a/2".into(), vec![]).unwrap();
        assert!(kv.delete("a/1"));
        assert!(!kv.delete("a/1"));
        assert_eq!(kv.lock().bytes, 3 + 1);
        assert!(matches!(
            kv.set("x".repeat(MAX_KV_KEY_BYTES + 1), vec![]),
            Err(KvError::KeyTooLong(_))
        ));
        assert!(matches!(
            kv.set("x".into(), vec![0; MAX_KV_VALUE_BYTES + 1]),
            Err(KvError::ValueTooLarge(_))
        ));
    }
}
