//! The plugin file watch: reloads a plugin when its file changes, or a file its config names
//! (`{ file = "PATH" }`), or in a locked deployment the signature of either.
//!
//! Each plugin file has a thread of its own that polls its metadata (following symlinks: device,
//! inode, modification time, length) every [`POLL_INTERVAL`]. A change is acted on once the
//! metadata has stayed the same for two polls in a row, so a file still being written is not
//! loaded; a version that fails to load leaves the old one serving, and the next change is tried
//! again. Polling rather than inotify: it needs no platform API, sees a symlink being re-pointed,
//! and one `stat` per plugin a second costs nothing.
//!
//! One thread per file, so that one file cannot stall the watch of the others: a `stat` on a
//! stalled network mount waits in the kernel for as long as the mount is stalled, and a reload
//! waits for its read up to the host's time limit. What is at the path is the host's to judge:
//! it reads only a regular file, so a FIFO or a device renamed over a plugin is refused at once.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use qgate_host::PluginHost;

use crate::admin;

/// How often each plugin file is looked at.
///
/// A deploy is noticed within two intervals (the change, then the same again); one second keeps
/// that under the time it takes someone to check, and costs one `stat` per plugin a second.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a poll sees of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    dev: u64,
    ino: u64,
    modified: Option<SystemTime>,
    len: u64,
}

fn seen(path: &std::path::Path) -> Option<Seen> {
    let meta = fs::metadata(path).ok()?;
    Some(Seen {
        dev: meta.dev(),
        ino: meta.ino(),
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// One watched file.
struct Watched {
    name: String,
    path: PathBuf,
    /// What the file looked like when it was last acted on (or at start).
    acted: Option<Seen>,
    /// A change seen at the last poll, waiting for one more poll to see it unchanged.
    pending: Option<Seen>,
}

/// The watch threads, by plugin and file, each with the flag that stops it.
pub(crate) struct Watch {
    host: Weak<PluginHost>,
    /// A `std` mutex, held to start or stop threads (at start and after a config reload).
    threads: Mutex<HashMap<(String, PathBuf), Arc<AtomicBool>>>,
}

/// Starts a watch thread for each plugin file. Each ends when the host is dropped, or when a
/// config reload takes its file out of the chain ([`Watch::sync`]).
///
/// # Errors
///
/// When a thread cannot be started.
pub(crate) fn start(host: &Arc<PluginHost>) -> std::io::Result<Arc<Watch>> {
    let watch = Arc::new(Watch {
        host: Arc::downgrade(host),
        threads: Mutex::default(),
    });
    watch.sync()?;
    Ok(watch)
}

impl Watch {
    /// Watches the files of the chain in force: a thread for each file not yet watched, and a
    /// stop for each thread whose file is no longer the chain's.
    ///
    /// # Errors
    ///
    /// When a thread cannot be started.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let Some(host) = self.host.upgrade() else {
            return Ok(());
        };
        let wanted = host.plugin_paths();
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        threads.retain(|key, stop| {
            let keep = wanted.contains(key);
            if !keep {
                stop.store(true, Ordering::Relaxed);
            }
            keep
        });
        for (name, path) in wanted {
            let key = (name, path);
            if threads.contains_key(&key) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let mut file = Watched {
                name: key.0.clone(),
                acted: seen(&key.1),
                path: key.1.clone(),
                pending: None,
            };
            let host = self.host.clone();
            let flag = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("qgate-watch".into())
                .spawn(move || {
                    loop {
                        #[expect(
                            clippy::disallowed_methods,
                            reason = "a dedicated thread, not an async worker"
                        )]
                        std::thread::sleep(POLL_INTERVAL);
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        let Some(host) = host.upgrade() else { return };
                        poll(&host, &mut file);
                    }
                })?;
            threads.insert(key, stop);
        }
        Ok(())
    }
}

fn poll(host: &PluginHost, file: &mut Watched) {
    let now = seen(&file.path);
    if now == file.acted {
        file.pending = None;
        return;
    }
    if now.is_some() && file.pending == now {
        tracing::info!(plugin = file.name, path = %file.path.display(), "plugin file changed");
        file.acted = now;
        file.pending = None;
        admin::reload_if_changed_logged(host, &file.name);
    } else {
        // A missing file is waited out: a deploy that removes and re-creates it is not a reason
        // to stop serving.
        file.pending = now;
    }
}
