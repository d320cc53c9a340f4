//! The key-value store a plugin's instances share, and that outlives its versions; with a
//! `kv_file`, loaded at start and written back off the hot path (`KvSaver`).
//!
//! The file is the entries in key order, each a key and a value with their lengths
//! (little-endian `u32`s), after an 8-byte magic; it is written to a temporary file (mode 0600)
//! in the same directory, then renamed over the old one, so a crash leaves the old file or the
//! new one, never half of either.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use qgate_files::{FileReader, ReadRules};

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

/// How often a changed store is written to its `kv_file`, at most.
///
/// A plugin's state (learned firewall shapes, a connection table) changes with traffic; writing
/// at most every 5 s bounds the disk writes to one file a plugin every 5 s however busy the
/// server, and loses at most 5 s of changes in a crash (a shutdown writes the last ones).
pub const KV_SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// The largest `kv_file` read at start: the store's own cap plus the 8 bytes of length a key and
/// a value take in the file, for as many entries as could fit, and the magic.
const MAX_KV_FILE_BYTES: u64 = (MAX_KV_TOTAL_BYTES as u64) * 9 + 8;

/// The first bytes of a `kv_file`.
const MAGIC: &[u8; 8] = b"qgatekv1";

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
    /// Whether the store changed since it was last written to its file.
    dirty: AtomicBool,
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
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        let mut inner = self.lock();
        match inner.map.remove(key) {
            Some(value) => {
                inner.bytes -= key.len() + value.len();
                self.dirty.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The store saved in `path`, or an empty one when there is no such file. The file is read
    /// as an untrusted path (a regular file, at most [`MAX_KV_FILE_BYTES`], within
    /// `qgate-files`' time limit) and every entry is held to the store's limits.
    pub(crate) fn load(path: &Path) -> Result<Kv, String> {
        let bytes = match FileReader::new(path, ReadRules::new(MAX_KV_FILE_BYTES)).read() {
            Ok(bytes) => bytes,
            Err(error) if error.is_not_found() => return Ok(Kv::default()),
            Err(error) => return Err(error.to_string()),
        };
        let kv = Kv::default();
        let mut rest = bytes
            .strip_prefix(MAGIC)
            .ok_or("not a qgate kv file: it does not start with `qgatekv1`")?;
        while !rest.is_empty() {
            let (key, after) = field(rest).ok_or("truncated: an entry's key is cut short")?;
            let (value, after) = field(after).ok_or("truncated: an entry's value is cut short")?;
            let key = std::str::from_utf8(key).map_err(|_| "a key is not UTF-8")?;
            kv.set(key.to_owned(), value.to_vec())
                .map_err(|e| e.to_string())?;
            rest = after;
        }
        kv.dirty.store(false, Ordering::Relaxed);
        Ok(kv)
    }

    /// Writes the store to `path` when it changed since the last write: a copy is taken under
    /// the lock, and the file is written after it is released.
    pub(crate) fn save_if_changed(&self, path: &Path) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let mut out = MAGIC.to_vec();
        {
            let inner = self.lock();
            out.reserve(inner.bytes + 8 * inner.map.len());
            for (key, value) in &inner.map {
                for field in [key.as_bytes(), value.as_slice()] {
                    // Keys and values are at most 1 MiB (the limits above), so their lengths fit.
                    out.extend_from_slice(
                        &u32::try_from(field.len()).unwrap_or(u32::MAX).to_le_bytes(),
                    );
                    out.extend_from_slice(field);
                }
            }
        }
        write_atomically(path, &out).inspect_err(|_| {
            // Written next time.
            self.dirty.store(true, Ordering::Relaxed);
        })
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

/// A length-prefixed field, and the bytes after it.
fn field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Writes `bytes` to a temporary file beside `path` (mode 0600), syncs it, and renames it over
/// `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp-{}", std::process::id()));
    let temp = PathBuf::from(temp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes the stores that have a `kv_file`, on a thread of its own: every [`KV_SAVE_INTERVAL`]
/// when they changed, and once more when dropped (at shutdown).
pub(crate) struct KvSaver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The stores it writes; a config reload replaces them. A `std` mutex, held by the thread for
    /// a copy of the list, and by a reload for a replacement.
    stores: Arc<Mutex<Vec<Persisted>>>,
}

/// A store, its file, and the plugin's name for logs.
pub(crate) type Persisted = (Arc<Kv>, PathBuf, String);

impl KvSaver {
    /// Starts the thread, for `stores`.
    pub(crate) fn start(stores: Vec<Persisted>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let stores = Arc::new(Mutex::new(stores));
        let list = Arc::clone(&stores);
        let copy = move || list.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let thread = std::thread::Builder::new()
            .name("qgate-kv-save".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "a dedicated thread, not an async worker"
                    )]
                    std::thread::sleep(SAVER_TICK);
                    if last.elapsed() >= KV_SAVE_INTERVAL {
                        save_all(&copy());
                        last = Instant::now();
                    }
                }
                save_all(&copy());
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            stores,
        })
    }

    /// Writes `stores` from now on. A store that was written and is not in `stores` is written
    /// once more, here, if it changed since: a plugin that a reload removed keeps its last state.
    pub(crate) fn replace(&self, stores: Vec<Persisted>) {
        let old = std::mem::replace(
            &mut *self.stores.lock().unwrap_or_else(PoisonError::into_inner),
            stores.clone(),
        );
        let dropped = old
            .into_iter()
            .filter(|(kv, path, _)| {
                !stores
                    .iter()
                    .any(|(other, other_path, _)| Arc::ptr_eq(kv, other) && path == other_path)
            })
            .collect::<Vec<_>>();
        save_all(&dropped);
    }
}

/// How often the saver thread looks at its stop flag: a shutdown waits at most this long for it.
const SAVER_TICK: Duration = Duration::from_millis(100);

fn save_all(stores: &[Persisted]) {
    for (kv, path, plugin) in stores {
        if let Err(error) = kv.save_if_changed(path) {
            tracing::warn!(plugin, path = %path.display(), %error, "cannot write the plugin's kv_file; retrying later");
        }
    }
}

impl Drop for KvSaver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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

    #[test]
    fn a_saved_store_loads_back_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("qgate-kv-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kv.bin");
        let kv = Kv::load(&path).unwrap();
        kv.set("shape/alice/1".into(), b"(?;`t;();0b;())".to_vec())
            .unwrap();
        kv.set("empty".into(), Vec::new()).unwrap();
        kv.save_if_changed(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let back = Kv::load(&path).unwrap();
        assert_eq!(back.keys(""), ["empty", "shape/alice/1"]);
        assert_eq!(
            back.get("shape/alice/1").as_deref(),
            Some(&b"(?;`t;();0b;())"[..])
        );
        assert_eq!(back.lock().bytes, kv.lock().bytes);

        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(Kv::load(&path).unwrap_err().contains("truncated"));
        fs::write(&path, b"not kv").unwrap();
        assert!(Kv::load(&path).unwrap_err().contains("qgatekv1"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
