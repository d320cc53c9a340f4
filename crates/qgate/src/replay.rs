//! `qgate replay --config CANDIDATE.toml LOG.jsonl...`: recorded decisions run again through a
//! candidate chain, offline.
//!
//! Each line of a decision log (`[decision_log]`) that carries its message's bytes (a sync or
//! async message within `include_bytes`) is sent, with its session (handle, user, peer, TLS client
//! CN), through the candidate config's chain, loaded in process as `qgate serve` and `qgate test`
//! load it; lines in file order, so plugin state builds up as it did. A decision that differs from
//! the recorded one is printed with the record's id, the message, and both decisions; then a
//! summary. Records without bytes (logins, opens, messages over the cap) are counted as not
//! replayable. The exit status is 0 when nothing changed (or `--allow-changes`), 1 when a decision
//! changed, and 2 when the config or a log cannot be read.

use std::{fs, io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use qgate_config::Config;
use qgate_hooks::{CertIdentity, Handle, Hooks, Request, Session, TlsFacts};
use qgate_host::PluginHost;
use qgate_ipc::{Endian, Header, Limits, Message, MessageType};
use serde_json::Value;

use crate::{policy_test::shown, serve::host_options};

/// `qgate replay` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The candidate config: its `[[plugins]]` are the chain the records run through.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Exit 0 even when decisions changed (the changes are printed all the same).
    #[arg(long)]
    allow_changes: bool,
    /// Decision logs (JSON lines, as `[decision_log]` writes them), read in order.
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
}

/// Nothing changed.
const EXIT_SAME: u8 = 0;
/// A decision changed.
const EXIT_CHANGED: u8 = 1;
/// The config or a log could not be read.
const EXIT_BAD_INPUT: u8 = 2;

/// Runs `qgate replay`.
pub(crate) fn run(args: &Args) -> ExitCode {
    match replay(args) {
        Ok(Summary { changed, .. }) if changed > 0 && !args.allow_changes => {
            ExitCode::from(EXIT_CHANGED)
        }
        Ok(_) => ExitCode::from(EXIT_SAME),
        Err(error) => {
            // Nothing sensible is left to do if stderr is gone.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// What a replay came to.
#[derive(Debug, Default)]
struct Summary {
    replayed: usize,
    changed: usize,
    not_replayable: usize,
}

fn replay(args: &Args) -> Result<Summary> {
    let config = Config::load(&args.config).with_context(|| {
        format!(
            "{}: cannot load the candidate config",
            args.config.display()
        )
    })?;
    if config.plugins.is_empty() {
        bail!(
            "{}: the candidate has no plugins, so there is no chain to replay through",
            args.config.display()
        );
    }
    let options = host_options(&config).with_context(|| format!("{}", args.config.display()))?;
    let host = PluginHost::new(options).with_context(|| {
        format!(
            "{}: a plugin of the candidate chain failed to load",
            args.config.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut summary = Summary::default();
    let mut stdout = std::io::stdout().lock();
    for path in &args.logs {
        let text = fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the decision log", path.display()))?;
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", path.display(), number + 1);
            let record: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: not a decision log line", at()))?;
            let Some(recorded) = Recorded::read(&record).with_context(at)? else {
                summary.not_replayable += 1;
                continue;
            };
            summary.replayed += 1;
            let verdict = runtime.block_on(async {
                if recorded.sync {
                    host.on_sync(&recorded.session, &recorded.request).await
                } else {
                    host.on_async(&recorded.session, &recorded.request).await
                }
            });
            let (now, reason) = verdict.decision();
            let now = now.as_str();
            if now != recorded.decision {
                summary.changed += 1;
                let _ = writeln!(
                    stdout,
                    "{}: {} {} {}: recorded {}{}, now {now}{}",
                    recorded.id,
                    if recorded.sync { "sync" } else { "async" },
                    shown(&recorded.user),
                    recorded.what,
                    recorded.decision,
                    recorded
                        .decided_by
                        .as_deref()
                        .map(|by| format!(" by {by}"))
                        .unwrap_or_default(),
                    reason
                        .map(|why| format!(" ({})", shown(&why)))
                        .unwrap_or_default(),
                );
            }
        }
    }
    let _ = writeln!(
        stdout,
        "{} replayed, {} changed, {} not replayable (no recorded bytes: logins, opens, and \
         messages over include_bytes)",
        summary.replayed, summary.changed, summary.not_replayable
    );
    Ok(summary)
}

/// A message verdict in the decision log's words, and its reason.
/// A record that can be replayed.
struct Recorded {
    id: String,
    user: String,
    sync: bool,
    session: Session,
    request: Request,
    /// The message, briefly: its head or its text.
    what: String,
    decision: String,
    decided_by: Option<String>,
}

impl Recorded {
    /// The record's message and session; `None` when it has no bytes to replay.
    fn read(record: &Value) -> Result<Option<Self>> {
        let text = |key: &str| record.get(key).and_then(Value::as_str);
        let Some(bytes) = text("bytes") else {
            return Ok(None);
        };
        let sync = match text("event") {
            Some("sync") => true,
            Some("async") => false,
            Some(other) => bail!("event {other:?} has bytes, but only messages are replayed"),
            None => bail!("no `event`"),
        };
        let body = BASE64
            .decode(bytes)
            .map_err(|e| anyhow!("`bytes` is not base64: {e}"))?;
        let endian = match text("endian") {
            Some("big") => Endian::Big,
            Some("little") | None => Endian::Little,
            Some(other) => bail!("`endian` is {other:?}, not \"little\" or \"big\""),
        };
        let request = request(&body, endian, sync)?;
        let user = text("user").unwrap_or_default().to_owned();
        let peer: SocketAddr = text("peer")
            .unwrap_or("127.0.0.1:0")
            .parse()
            .map_err(|e| anyhow!("`peer` is not an address: {e}"))?;
        let handle = record
            .get("handle")
            .and_then(Value::as_i64)
            .and_then(|handle| i32::try_from(handle).ok())
            .unwrap_or(0);
        let mut session = Session::new(Handle(handle), user.as_bytes().to_vec(), peer, 3);
        if let Some(cn) = text("tls_cn") {
            let mut cert = CertIdentity::default();
            cert.subject_cn = Some(cn.to_owned());
            let mut tls = TlsFacts::default();
            tls.client_cert = Some(cert);
            session.tls = Some(Arc::new(tls));
        }
        let what = match (text("head"), text("text")) {
            (Some(head), _) => format!("call {}", shown(head)),
            (None, Some(query)) => format!("text {}", shown(query)),
            (None, None) => format!("a value of {} bytes", body.len()),
        };
        Ok(Some(Self {
            id: text("id").unwrap_or("?").to_owned(),
            user,
            sync,
            session,
            request,
            what,
            decision: text("decision").unwrap_or("?").to_owned(),
            decided_by: text("decided_by").map(str::to_owned),
        }))
    }
}

/// The message a body makes, as the server would have handed it to the chain.
fn request(body: &[u8], endian: Endian, sync: bool) -> Result<Request> {
    let len = u32::try_from(body.len() + 8).map_err(|_| anyhow!("`bytes` is too long"))?;
    let header = Header {
        endian,
        message_type: if sync {
            MessageType::Sync
        } else {
            MessageType::Async
        },
        compressed: false,
        len,
    };
    let mut frame = header.to_bytes().to_vec();
    frame.extend_from_slice(body);
    let message = Message::from_frame(frame, &Limits::default())
        .map_err(|e| anyhow!("`bytes` is not a message: {e}"))?;
    Request::new(message).map_err(|e| anyhow!("`bytes` is not a q value: {e}"))
}
