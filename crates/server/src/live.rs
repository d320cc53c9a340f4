//! The settings a running server takes without a restart: its limits, its login backoff and its
//! password file ([`ServerSettings`], which a config reload uses).
//!
//! ```text
//!   ServerSettings::prepare(options)   checks the limits, loads a password file that changed;
//!        │                             nothing changes yet, and an error changes nothing
//!        ▼
//!   Prepared::apply()                  swaps them in, at once, and cannot fail
//! ```
//!
//! What changes applies to what comes after it. A connection takes the limits in force when it
//! is accepted (its timeouts, its message and handshake sizes, its expansion limit) and keeps
//! them; `max_connections`, `max_connections_per_user` and the handshake limits are checked
//! against the values in force at each login and each accept, so lowering one closes nobody and
//! refuses the connections past it; the memory budget grows at once and shrinks as the charges
//! in flight end ([`MemoryBudget::resize`]); the login backoff applies to the next attempt, with
//! the failures counted so far; a new password file is checked by the next login, and the old
//! file's watch stops.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::{
    admission::Admission,
    budget::MemoryBudget,
    options::{LoginBackoff, PasswordFile, ServerLimits, ServerOptions},
    password::PasswordStore,
    throttle::LoginThrottle,
};

/// A handle on a server's live settings; see the module's docs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub(crate) limits: Arc<ArcSwap<ServerLimits>>,
    pub(crate) password: Arc<PasswordSlot>,
    pub(crate) logins: Arc<LoginThrottle>,
    pub(crate) budget: MemoryBudget,
    pub(crate) admission: Arc<Admission>,
    /// The server's runtime, where the new password file's watch and a shrinking budget's task
    /// run.
    pub(crate) runtime: tokio::runtime::Handle,
}

/// The password file in force, and the task that watches it.
#[derive(Debug, Default)]
pub(crate) struct PasswordSlot {
    store: ArcSwapOption<PasswordStore>,
    /// A `std` mutex, held to replace the task.
    watch: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PasswordSlot {
    /// The store in force; `None` without a password file.
    pub(crate) fn load(&self) -> Option<Arc<PasswordStore>> {
        self.store.load_full()
    }

    /// Whether the file in force is `-u` (restricted).
    pub(crate) fn restricted(&self) -> bool {
        self.store
            .load()
            .as_ref()
            .is_some_and(|store| store.restricted())
    }

    /// Puts `store` in force and watches it, stopping the watch of the one it replaces.
    pub(crate) fn set(&self, store: Option<Arc<PasswordStore>>) {
        let watch = store
            .as_ref()
            .map(|store| tokio::spawn(Arc::clone(store).watch()));
        self.store.store(store);
        let old = std::mem::replace(
            &mut *self.watch.lock().unwrap_or_else(PoisonError::into_inner),
            watch,
        );
        if let Some(old) = old {
            old.abort();
        }
    }
}

impl Drop for PasswordSlot {
    fn drop(&mut self) {
        if let Some(watch) = self
            .watch
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            watch.abort();
        }
    }
}

/// Settings checked and loaded by [`ServerSettings::prepare`], ready to swap in.
#[derive(Debug)]
#[must_use = "nothing changes until it is applied"]
pub struct Prepared {
    settings: ServerSettings,
    limits: ServerLimits,
    login_backoff: LoginBackoff,
    /// `Some` when the password file changed: the new one, loaded (or `None` for none).
    password: Option<Option<Arc<PasswordStore>>>,
}

impl ServerSettings {
    /// Checks the live part of `options` (`limits`, `login_backoff`, `password_file`) and loads
    /// a password file other than the one in force, without changing anything.
    ///
    /// # Errors
    ///
    /// The limits disagree (a memory budget smaller than the largest message), or the new
    /// password file cannot be read or has a bad line: as [`crate::Server::new`] would refuse
    /// them.
    pub async fn prepare(&self, options: &ServerOptions) -> anyhow::Result<Prepared> {
        options.limits.check()?;
        let current = self.password.load();
        let current = current.as_ref().map(|store| PasswordFile {
            path: store.path().to_path_buf(),
            restricted: store.restricted(),
        });
        let password = if current == options.password_file {
            None
        } else {
            Some(match &options.password_file {
                Some(file) => Some(Arc::new(PasswordStore::load(file).await?)),
                None => None,
            })
        };
        Ok(Prepared {
            settings: self.clone(),
            limits: options.limits.clone(),
            login_backoff: options.login_backoff.clone(),
            password,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> ServerLimits {
        ServerLimits::clone(&self.limits.load())
    }
}

impl Prepared {
    /// Swaps the settings in; the names of those that changed, as the config names them
    /// (`limits.idle_timeout`, `auth.password_file`).
    pub fn apply(self) -> Vec<&'static str> {
        let Self {
            settings,
            limits,
            login_backoff,
            password,
        } = self;
        let _runtime = settings.runtime.enter();
        let old = settings.limits();
        let mut changed = limit_changes(&old, &limits);
        if changed.is_empty() && password.is_none() && settings.logins.rules() == login_backoff {
            return changed;
        }
        if old.memory_budget != limits.memory_budget {
            settings.budget.resize(limits.memory_budget);
        }
        settings.admission.set_limits(&limits);
        settings.limits.store(Arc::new(limits));
        if settings.logins.rules() != login_backoff {
            settings.logins.set_rules(login_backoff);
            changed.push("auth (login backoff)");
        }
        if let Some(password) = password {
            match &password {
                Some(store) => tracing::info!(
                    path = %store.path().display(),
                    restricted = store.restricted(),
                    "password file in force"
                ),
                None => tracing::warn!(
                    "no password file any more: logins are checked by the auth plugins alone, \
                     and without one everyone is let in"
                ),
            }
            settings.password.set(password);
            changed.push("auth.password_file");
        }
        changed
    }
}

/// The limits that differ between `old` and `new`, by their keys in the config.
fn limit_changes(old: &ServerLimits, new: &ServerLimits) -> Vec<&'static str> {
    macro_rules! differing {
        ($($field:ident),* $(,)?) => {
            [$((concat!("limits.", stringify!($field)), old.$field != new.$field)),*]
        };
    }
    differing!(
        max_message_bytes,
        max_handshake_bytes,
        handshake_timeout,
        idle_timeout,
        body_timeout,
        write_timeout,
        max_expansion,
        memory_budget,
        max_connections,
        max_connections_per_user,
        max_handshakes,
        handshake_early_drop,
        max_handshakes_per_address,
    )
    .into_iter()
    .filter_map(|(key, differs)| differs.then_some(key))
    .collect()
}

/// The logged-in connections, against `max_connections` as it is at each login.
#[derive(Debug, Default)]
pub(crate) struct Seats(Arc<AtomicUsize>);

/// A logged-in connection's seat, given back when dropped.
#[derive(Debug)]
pub(crate) struct Seat(Arc<AtomicUsize>);

impl Seats {
    /// A seat, unless `max` are taken.
    pub(crate) fn take(&self, max: usize) -> Option<Seat> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < max).then_some(taken + 1)
            })
            .ok()
            .map(|_| Seat(Arc::clone(&self.0)))
    }

    /// How many are taken.
    pub(crate) fn taken(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_follow_the_limit_in_force() {
        let seats = Seats::default();
        let a = seats.take(2).expect("a seat");
        let _b = seats.take(2).expect("a seat");
        assert!(seats.take(2).is_none());
        // Lowered below what is taken: nobody is closed, nobody new gets in.
        assert!(seats.take(1).is_none());
        assert_eq!(seats.taken(), 2);
        drop(a);
        assert!(seats.take(1).is_none());
        assert!(seats.take(3).is_some());
    }

    #[test]
    fn only_changed_limits_are_named() {
        let old = ServerLimits::default();
        let mut new = old.clone();
        assert!(limit_changes(&old, &new).is_empty());
        new.max_connections += 1;
        new.idle_timeout = Some(std::time::Duration::from_secs(60));
        assert_eq!(
            limit_changes(&old, &new),
            ["limits.idle_timeout", "limits.max_connections"]
        );
    }
}
