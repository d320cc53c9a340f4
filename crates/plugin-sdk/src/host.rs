//! What the host grants a plugin, as plain functions: [`log`], [`config`], the key-value store
//! ([`kv`]) and the clock ([`now`]).
//!
//! On `wasm32` each function calls the host's import of the same name. On other targets (a
//! plugin's native unit tests) they use an in-memory stand-in per thread: a key-value map, a log
//! that [`testing::logs`](crate::testing::logs) returns, no config, and a clock that
//! [`testing::set_now`](crate::testing::set_now) sets.

use serde::de::DeserializeOwned;

pub use crate::bindings::qgate::plugin::host::Level;

/// Writes `message` to qgate's log at `level`, tagged by the host with the plugin's name and
/// version.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Whether a line at `level` would be written: false when qgate's log filter drops it. A plugin
/// that builds lines costing more than a check (a JSON object, say) asks first.
pub fn log_enabled(level: Level) -> bool {
    imp::log_enabled(level)
}

/// Logs at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// A key of the plugin's table in `config.toml`, parsed into `T`; `Ok(None)` when it is absent.
///
/// The whole table is also handed to [`Plugin::init`](crate::Plugin::init) as a
/// [`Config`](crate::Config), which is usually more convenient.
///
/// # Errors
///
/// A message naming the key when its value does not fit `T`.
pub fn config<T: DeserializeOwned>(key: &str) -> Result<Option<T>, String> {
    match imp::config(key) {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|err| format!("config key `{key}`: {err}")),
    }
}

/// Wall-clock time, nanoseconds since the Unix epoch.
pub fn now() -> i64 {
    imp::now()
}

/// The plugin's key-value store: shared by every instance of the plugin and kept when the host
/// replaces an instance (hot-swap, or after a trap).
pub mod kv {
    use qgate_ipc::{Endian, K};

    use super::imp;

    /// The value stored under `key`.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        imp::kv_get(key)
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn set(key: &str, value: &[u8]) {
        imp::kv_set(key, value);
    }

    /// Removes `key`; true when it was there.
    pub fn delete(key: &str) -> bool {
        imp::kv_delete(key)
    }

    /// The keys that start with `prefix`, in order.
    pub fn keys(prefix: &str) -> Vec<String> {
        imp::kv_keys(prefix)
    }

    /// The q value stored under `key` by [`set_value`]; `None` when absent or not a value.
    pub fn value(key: &str) -> Option<K> {
        qgate_ipc::decode(&get(key)?, Endian::Little).ok()
    }

    /// Stores a q value under `key`, as kdb+ IPC bytes.
    ///
    /// # Errors
    ///
    /// A message when the value cannot be encoded (a symbol with a NUL byte).
    pub fn set_value(key: &str, value: &K) -> Result<(), String> {
        let mut bytes = Vec::new();
        qgate_ipc::encode(value, &mut bytes).map_err(|err| format!("kv `{key}`: {err}"))?;
        set(key, &bytes);
        Ok(())
    }
}

/// The host's imports.
#[cfg(target_arch = "wasm32")]
pub(crate) mod imp {
    pub(crate) use crate::bindings::qgate::plugin::host::same_for_head;
    pub(super) use crate::bindings::qgate::plugin::host::{
        config, kv_delete, kv_get, kv_keys, kv_set, log, log_enabled, now,
    };
}

/// The in-memory stand-in for native tests.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod imp {
    use std::{cell::RefCell, collections::BTreeMap};

    use super::Level;

    /// The stand-in's state, one per test thread.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub(crate) kv: BTreeMap<String, Vec<u8>>,
        pub(crate) logs: Vec<(Level, String)>,
        pub(crate) config: BTreeMap<String, String>,
        pub(crate) now: i64,
        /// Whether [`log_enabled`] says yes: `testing::set_logs_enabled`.
        pub(crate) logs_disabled: bool,
        /// Whether a handler called `same_for_head`: `testing::same_for_head`.
        pub(crate) same_for_head: bool,
    }

    thread_local! {
        pub(crate) static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
    }

    pub(super) fn log(level: Level, message: &str) {
        FAKE.with(|f| f.borrow_mut().logs.push((level, message.to_owned())));
    }

    pub(super) fn log_enabled(_level: Level) -> bool {
        FAKE.with(|f| !f.borrow().logs_disabled)
    }

    pub(crate) fn same_for_head() {
        FAKE.with(|f| f.borrow_mut().same_for_head = true);
    }

    pub(super) fn config(key: &str) -> Option<String> {
        FAKE.with(|f| f.borrow().config.get(key).cloned())
    }

    pub(super) fn now() -> i64 {
        FAKE.with(|f| f.borrow().now)
    }

    pub(super) fn kv_get(key: &str) -> Option<Vec<u8>> {
        FAKE.with(|f| f.borrow().kv.get(key).cloned())
    }

    pub(super) fn kv_set(key: &str, value: &[u8]) {
        FAKE.with(|f| f.borrow_mut().kv.insert(key.to_owned(), value.to_vec()));
    }

    pub(super) fn kv_delete(key: &str) -> bool {
        FAKE.with(|f| f.borrow_mut().kv.remove(key).is_some())
    }

    pub(super) fn kv_keys(prefix: &str) -> Vec<String> {
        FAKE.with(|f| {
            f.borrow()
                .kv
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect()
        })
    }
}
