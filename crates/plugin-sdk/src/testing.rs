//! Helpers for a plugin's native unit tests: sessions, and control of the in-memory host that
//! stands in for qgate's imports off wasm (one per test thread, so tests do not interfere).

use crate::{Session, host::Level, host::imp::FAKE};

/// A plain-TCP session from `127.0.0.1:5000` with this handle and user, capability 3.
pub fn session(handle: i32, user: &str) -> Session {
    Session {
        handle,
        user: user.to_owned(),
        peer_address: "127.0.0.1".to_owned(),
        peer_port: 5000,
        capability: 3,
        tls: None,
    }
}

/// Forgets every kv entry, log line and config key, and sets the clock to 0.
pub fn reset() {
    FAKE.with(|f| *f.borrow_mut() = Default::default());
}

/// Takes the log lines written since the last call.
pub fn logs() -> Vec<(Level, String)> {
    FAKE.with(|f| std::mem::take(&mut f.borrow_mut().logs))
}

/// Sets what [`host::log_enabled`](crate::host::log_enabled) answers, for every level: as if
/// qgate's log filter kept (`true`, the default) or dropped every plugin line.
pub fn set_logs_enabled(enabled: bool) {
    FAKE.with(|f| f.borrow_mut().logs_disabled = !enabled);
}

/// Whether a handler called [`MessageCtx::same_for_head`](crate::MessageCtx::same_for_head)
/// since the last call of this function.
pub fn same_for_head() -> bool {
    FAKE.with(|f| std::mem::take(&mut f.borrow_mut().same_for_head))
}

/// Sets what [`host::now`](crate::host::now) returns, nanoseconds since the Unix epoch.
pub fn set_now(nanos: i64) {
    FAKE.with(|f| f.borrow_mut().now = nanos);
}

/// Sets what [`host::config`](crate::host::config) returns for `key` (JSON text).
pub fn set_config(key: &str, json: &str) {
    FAKE.with(|f| {
        f.borrow_mut()
            .config
            .insert(key.to_owned(), json.to_owned());
    });
}
