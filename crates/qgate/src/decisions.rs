//! The decision log (`[decision_log]`): a JSON line for each decision of the plugin chain,
//! written by a thread of its own.
//!
//! The host hands each [`DecisionRecord`] to [`DecisionLog::record`] on the connection's thread;
//! it goes into a bounded queue ([`qgate_config::DecisionLog::QUEUE`]) and nothing else happens there: no
//! formatting, no I/O, no wake-up. When the queue is full the record is dropped and counted
//! (`qgate_decision_log_dropped_total`), so a slow disk never slows a client. The writer thread
//! wakes every 10 ms, formats each record queued ([`line()`]), writes them through a buffer and
//! flushes (so a line is on disk within milliseconds of its decision), and rotates the file by size:
//! `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, and so on up to `max_files`, the oldest
//! deleted.
//!
//! Each line has the keys `id` (unique in the file's history: the process's start time and a
//! sequence number, so dropped records show as gaps), `time` (RFC 3339, microseconds),
//! `handle`, `user`, `peer`, `tls_cn` (or null), `event`, `head`, `text` (when kept), `size`,
//! `decision`, `decided_by`, `version`, `reason`, `latency_us`, and `bytes` and `endian` for a
//! message recorded whole. Client text goes through JSON's escaping, so it cannot break a line. A
//! password is never in a record.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use qgate_hooks::{DecisionRecord, DecisionSink};
use qgate_ipc::Endian;
use qgate_metrics::Metrics;
use serde_json::{Map, Value, json};

/// What the writer thread is sent.
enum Job {
    /// A record, and its sequence number.
    Record(Box<DecisionRecord>, u64),
    /// Write what is buffered, then answer.
    Flush(mpsc::Sender<()>),
}

/// The decision log: a [`DecisionSink`] for the host.
#[derive(Debug)]
pub(crate) struct DecisionLog {
    queue: SyncSender<Job>,
    include_text: bool,
    include_bytes: usize,
    /// The next record's sequence number.
    next: AtomicU64,
    metrics: Metrics,
    /// The writer thread: it ends once the queue's sender, this struct's, is dropped.
    _writer: JoinHandle<()>,
}

/// Where the writer writes, and when it rotates.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The file, or `-` for stderr.
    pub(crate) path: PathBuf,
    pub(crate) max_file_bytes: u64,
    pub(crate) max_files: usize,
    pub(crate) include_text: bool,
    pub(crate) include_bytes: usize,
    pub(crate) queue: usize,
}

impl DecisionLog {
    /// How often the writer writes what has been queued: a line is on disk within this of its
    /// decision, and the queue takes [`qgate_config::DecisionLog::QUEUE`] decisions a tick
    /// (millions a second) before one is dropped.
    const TICK: Duration = Duration::from_millis(10);

    /// Opens the log (creating the file, mode 0600, or appending to it) and starts its writer.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or the thread cannot be started.
    pub(crate) fn start(settings: &Settings, metrics: Metrics) -> io::Result<Arc<Self>> {
        let output = Output::open(settings)?;
        let (queue, jobs) = mpsc::sync_channel(settings.queue);
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let writer = std::thread::Builder::new()
            .name("qgate-decisions".into())
            .spawn(move || write_all(&jobs, output, started))?;
        Ok(Arc::new(Self {
            queue,
            include_text: settings.include_text,
            include_bytes: settings.include_bytes,
            next: AtomicU64::new(1),
            metrics,
            _writer: writer,
        }))
    }

    /// Writes every record queued so far, waiting at most `wait`: for a shutdown.
    pub(crate) fn flush(&self, wait: Duration) {
        let (done, answer) = mpsc::channel();
        if self.queue.send(Job::Flush(done)).is_ok() {
            let _ = answer.recv_timeout(wait);
        }
    }
}

impl DecisionSink for DecisionLog {
    fn include_text(&self) -> bool {
        self.include_text
    }

    fn include_bytes(&self) -> usize {
        self.include_bytes
    }

    fn record(&self, record: DecisionRecord) {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(Job::Record(Box::new(record), sequence)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.decision_dropped();
            }
        }
    }
}

/// The file (or stderr) and its rotation.
struct Output {
    path: Option<PathBuf>,
    file: BufWriter<Box<dyn io::Write + Send>>,
    written: u64,
    max_file_bytes: u64,
    max_files: usize,
}

impl Output {
    fn open(settings: &Settings) -> io::Result<Self> {
        if settings.path == Path::new("-") {
            return Ok(Self {
                path: None,
                file: BufWriter::new(Box::new(io::stderr())),
                written: 0,
                max_file_bytes: u64::MAX,
                max_files: 0,
            });
        }
        let file = open_append(&settings.path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: Some(settings.path.clone()),
            file: BufWriter::with_capacity(64 << 10, Box::new(file)),
            written,
            max_file_bytes: settings.max_file_bytes,
            max_files: settings.max_files,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.written > 0 && self.written.saturating_add(line.len() as u64) > self.max_file_bytes
        {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.written = self.written.saturating_add(line.len() as u64);
        Ok(())
    }

    /// `PATH` to `PATH.1`, each `PATH.N` to `PATH.N+1`, the last deleted; then a new `PATH`.
    fn rotate(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.file.flush()?;
        let numbered = |n: usize| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.max_files == 0 {
            fs::remove_file(&path)?;
        } else {
            let _ = fs::remove_file(numbered(self.max_files));
            for n in (1..self.max_files).rev() {
                let from = numbered(n);
                if from.exists() {
                    fs::rename(&from, numbered(n + 1))?;
                }
            }
            fs::rename(&path, numbered(1))?;
        }
        self.file = BufWriter::with_capacity(64 << 10, Box::new(open_append(&path)?));
        self.written = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The writer thread: until every sender is gone, every [`DecisionLog::TICK`] writes what has
/// been queued and flushes it.
///
/// It sleeps between ticks rather than waiting on the queue, so that a decision never wakes it:
/// on a busy server a wake-up per decision (a futex call, and a thread scheduled on a core the
/// connections need) cost more than the record itself.
fn write_all(jobs: &Receiver<Job>, mut output: Output, started_ms: u128) {
    let mut failed = false;
    let report = |error: io::Error, failed: &mut bool| {
        // Said once per run of failures, not once per line.
        if !*failed {
            tracing::error!(%error, "cannot write the decision log; records are lost until it can");
        }
        *failed = true;
    };
    let mut text = String::new();
    loop {
        let mut wrote = false;
        let ended = loop {
            match jobs.try_recv() {
                Ok(Job::Record(record, sequence)) => {
                    text.clear();
                    text.push_str(&line(&record, started_ms, sequence).to_string());
                    text.push('\n');
                    match output.write_line(text.as_bytes()) {
                        Ok(()) => failed = false,
                        Err(error) => report(error, &mut failed),
                    }
                    wrote = true;
                }
                Ok(Job::Flush(done)) => {
                    if let Err(error) = output.file.flush() {
                        report(error, &mut failed);
                    }
                    let _ = done.send(());
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if wrote && let Err(error) = output.file.flush() {
            report(error, &mut failed);
        }
        if ended {
            return;
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a dedicated thread, not an async worker"
        )]
        std::thread::sleep(DecisionLog::TICK);
    }
}

/// A record as its JSON line (without the newline).
pub(crate) fn line(record: &DecisionRecord, started_ms: u128, sequence: u64) -> Value {
    let session = &record.session;
    let time = chrono::DateTime::<chrono::Utc>::from(record.time)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let tls_cn = session
        .tls
        .as_ref()
        .and_then(|tls| tls.client_cert.as_ref())
        .and_then(|cert| cert.subject_cn.clone());
    let mut line = Map::new();
    line.insert("id".into(), json!(format!("{started_ms:x}-{sequence}")));
    line.insert("time".into(), json!(time));
    line.insert("handle".into(), json!(session.handle.0));
    line.insert("user".into(), json!(session.user_lossy()));
    line.insert("peer".into(), json!(session.peer.to_string()));
    line.insert("tls_cn".into(), json!(tls_cn));
    line.insert("event".into(), json!(record.event.as_str()));
    line.insert("head".into(), json!(record.head.as_deref()));
    if let Some(text) = &record.text {
        line.insert("text".into(), json!(&**text));
    }
    line.insert("size".into(), json!(record.size));
    line.insert("decision".into(), json!(record.decision.as_str()));
    line.insert("decided_by".into(), json!(record.decided_by.as_deref()));
    line.insert("version".into(), json!(record.version.as_deref()));
    line.insert("reason".into(), json!(record.reason));
    let latency_us = record.latency.as_secs_f64() * 1e6;
    line.insert(
        "latency_us".into(),
        json!((latency_us * 10.0).round() / 10.0),
    );
    if let Some(live) = record.live {
        line.insert("shadow".into(), json!(true));
        line.insert("live_decision".into(), json!(live.as_str()));
    }
    if let Some(bytes) = &record.bytes {
        line.insert("bytes".into(), json!(BASE64.encode(&bytes.body)));
        let endian = match bytes.endian {
            Endian::Little => "little",
            Endian::Big => "big",
        };
        line.insert("endian".into(), json!(endian));
    }
    Value::Object(line)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use qgate_hooks::{DecisionEvent, DecisionKind, Handle, RecordedBytes, Session};

    use super::*;

    fn record(user: &str, text: &str) -> DecisionRecord {
        let peer: SocketAddr = "10.1.2.3:5001".parse().expect("an address");
        let session = Session::new(Handle(9), user.as_bytes().to_vec(), peer, 3);
        let mut record = DecisionRecord::new(session, DecisionEvent::Sync, DecisionKind::Denied);
        record.text = Some(Arc::from(text));
        record.size = 12;
        record.decided_by = Some(Arc::from("allowlist"));
        record.version = Some(Arc::from("9d41e07c2a55"));
        record.reason = Some("access: no".to_owned());
        record.latency = Duration::from_nanos(12_345);
        record
    }

    #[test]
    fn a_line_has_every_key_and_escapes_client_text() {
        let mut record = record("ali\nce", "select from t\n{\"forged\":1}");
        record.bytes = Some(RecordedBytes {
            body: vec![10, 0, 1, 0, 0, 0, b'x'],
            endian: Endian::Little,
        });
        let line = line(&record, 0xabc, 7);
        let text = line.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(line["id"], "abc-7");
        assert_eq!(line["user"], "ali\nce");
        assert_eq!(line["peer"], "10.1.2.3:5001");
        assert_eq!(line["tls_cn"], Value::Null);
        assert_eq!(line["event"], "sync");
        assert_eq!(line["text"], "select from t\n{\"forged\":1}");
        assert_eq!(line["decision"], "denied");
        assert_eq!(line["decided_by"], "allowlist");
        assert_eq!(line["version"], "9d41e07c2a55");
        assert_eq!(line["reason"], "access: no");
        assert_eq!(line["latency_us"], 12.3);
        assert_eq!(line["bytes"], "CgABAAAAeA==");
        assert_eq!(line["endian"], "little");
        for key in ["handle", "time", "head", "size"] {
            assert!(line.get(key).is_some(), "{key} missing: {text}");
        }
    }

    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("qgate-decisions-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    #[test]
    fn every_record_is_written_and_the_file_rotates_by_size() {
        let dir = scratch("rotate");
        let path = dir.join("decisions.jsonl");
        let settings = Settings {
            path: path.clone(),
            max_file_bytes: 2_000,
            max_files: 2,
            include_text: true,
            include_bytes: 0,
            queue: 10_000,
        };
        let log = DecisionLog::start(&settings, Metrics::new()).expect("started");
        for n in 0..100 {
            log.record(record("alice", &format!("query {n}")));
        }
        log.flush(Duration::from_secs(10));
        let lines: Vec<String> = [
            path.with_extension("jsonl.2"),
            path.with_extension("jsonl.1"),
            path.clone(),
        ]
        .iter()
        .filter_map(|file| fs::read_to_string(file).ok())
        .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
        // Two rotated files and the current one hold the newest records, in order.
        let last: Vec<u64> = lines
            .iter()
            .map(|line| {
                let value: Value = serde_json::from_str(line).expect("a JSON line");
                let id = value["id"].as_str().expect("an id").to_owned();
                id.rsplit('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("a sequence")
            })
            .collect();
        assert!(!last.is_empty());
        assert_eq!(last.last(), Some(&100));
        assert!(
            last.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "{last:?}"
        );
        assert!(!path.with_extension("jsonl.3").exists());
        for file in [&path, &path.with_extension("jsonl.1")] {
            let size = fs::metadata(file).expect("a file").len();
            assert!(size <= 2_000, "{} is {size} bytes", file.display());
        }
        drop(log);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_queue_drops_and_counts_rather_than_waits() {
        let dir = scratch("full");
        let settings = Settings {
            path: dir.join("decisions.jsonl"),
            max_file_bytes: u64::MAX,
            max_files: 1,
            include_text: false,
            include_bytes: 0,
            queue: 1,
        };
        let metrics = Metrics::new();
        let log = DecisionLog::start(&settings, metrics).expect("started");
        for _ in 0..10_000 {
            log.record(record("alice", "x"));
        }
        log.flush(Duration::from_secs(10));
        let written = fs::read_to_string(dir.join("decisions.jsonl"))
            .expect("the file")
            .lines()
            .count();
        // Records that found the queue full were dropped, not waited for.
        assert!(written < 10_000, "{written} written");
        let _ = fs::remove_dir_all(&dir);
    }
}
