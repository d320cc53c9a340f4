//! `qgate test FILE...`: policy tests without a network.
//!
//! A test file names a plugin chain (a config file, or `[[plugins]]` written inline) and lists
//! cases; each case is one lifecycle event of one session, and the verdict the chain must give.
//! The chain is the real one: the plugins are loaded as `qgate serve` loads them and called
//! through the same [`Hooks`] the server calls, in this process, with no socket.
//!
//! ```toml
//! config = "../../config.toml"      # relative to this file
//!
//! [[case]]
//! name = "admin adds two longs"
//! user = "admin"
//! event = "sync"
//! call = "legalOperation[1;2]"      # sends (`legalOperation;1;2)
//! expect = "reply"
//! value = "3"
//! ```
//!
//! The file's keys:
//!
//! - `config`: the config file whose `[[plugins]]` is the chain, relative to the test file; or
//! - `[[plugins]]`: the chain inline, with the keys of config.toml's `[[plugins]]` (a `path` is
//!   relative to the test file). Exactly one of the two.
//! - `[[case]]`, at least one.
//!
//! A case's keys (unknown keys are errors):
//!
//! - `name`: required, unique in the file; the failure line names it.
//! - `event`: required, `auth`, `open`, `sync`, `async` or `close` (`.z.pw`, `.z.po`, `.z.pg`,
//!   `.z.ps`, `.z.pc`).
//! - The session: `user` (`.z.u`, "" by default), `peer` (`.z.a`: `IP` or `IP:PORT`, IPv6 in
//!   brackets with a port; 127.0.0.1 by default, port [`DEFAULT_PEER_PORT`] when none is
//!   given), `handle` (`.z.w`, the case's number in the file by default), `tls` (true for a TLS
//!   session; false by default) and `tls_cn` (the subject common name of a verified client
//!   certificate; it implies `tls`).
//! - `password`: auth cases only; without it the handshake had no `:`.
//!   The password file is the server's check, not the chain's, and is not consulted.
//! - The message, sync and async cases only, exactly one of: `text`, a free-text query (sent as
//!   a string, as q's console sends it); `call`, a call written `name[arg;arg;...]` and sent as
//!   the general list `` (`name;arg;...) `` that q clients send (`name[]` sends
//!   `` (`name;::) ``); `data`, any value, sent as it is.
//!   Arguments and `data` are q data literals: atoms of every type q can write, strings,
//!   symbols, vectors (`1 2 3`, `` `a`b ``), general lists (`(1;`a;"x")`, collapsed to a vector
//!   when every item is an atom of one type, as q does), dictionaries (`` `a`b!1 2 ``) and `::`.
//!   Names (variables) and expressions are refused: there is nothing to evaluate them.
//! - `expect`: required, the verdict: `allow` (anything but a deny: an auth hook's allow or
//!   pass, an open hook's keep, a message's pass, reply or route), `deny`, `pass` (nobody
//!   answered: the message goes to the upstream), `reply` or `route`.
//!   An open case is allowed or denied (closed); a close case is always allowed, and is there
//!   for what it does to the plugins' state.
//! - `message`: with `deny`, a substring the deny's message (or the open hook's reason) must
//!   hold. An auth deny has no message.
//! - `value`: with `reply`, the value exactly as `qgate decode` prints it (`3`, `3i`,
//!   `` `a`b!1 2 ``); with `route`, the upstream's name; with an auth `allow`, the user name the
//!   hook maps the session to.
//! - `value_contains`: with `reply`, a substring of the value as `qgate decode` prints it, for
//!   a value that is not the same from run to run (a table with the time of a connection).
//!
//! Cases run in file order against one instance of the chain, so state carries over as it does
//! between connections: an `open` case puts a row in the `conns` table and a later `close` case
//! of the same handle removes it.
//!
//! Output: a line for each failing case, naming the file, the case, what was expected and what
//! came back; then `N passed, M failed` (and `, K files not run` when some could not be). The exit
//! status is 0 when every case passed, 1 when any failed, and 2 when a file cannot be read, does
//! not parse, or its chain does not load (the error, on stderr, names the file and the key).

use std::{
    collections::HashSet,
    fmt,
    io::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context as _, Result, anyhow, bail};
use qgate_config::{Config, Plugins};
use qgate_hooks::{
    AuthVerdict, CertIdentity, CloseReason, Credentials, Handle, Hooks, OpenVerdict, Request,
    Session, TlsFacts, Verdict,
};
use qgate_host::PluginHost;
use qgate_ipc::{Atom, K, Limits, Message, MessageType, VectorData};
use qgate_q::{Node, NodeKind, Type};
use serde::Deserialize;

use crate::serve::host_options;

/// The peer's port when `peer` gives an address alone, or no `peer` is given.
///
/// A client's source port is an ephemeral one; 49152 is the first of IANA's ephemeral range, so
/// a session made up here looks like one a real client opens.
const DEFAULT_PEER_PORT: u16 = 49152;

/// The capability byte of every session: 3, what current q clients negotiate (compression and
/// timestamps), and what the server answers them with.
const CAPABILITY: u8 = 3;

/// The longest text of a value or a message shown in a failure line, in characters.
///
/// A reply can be a table of a million rows; a failure line is read by a person, and 200
/// characters show the start of any value while keeping one case to a line or two.
const MAX_SHOWN_CHARS: usize = 200;

/// The exit status when a file cannot be read or parsed, or its chain cannot load: set apart
/// from 1 (a case failed) so that a script can tell a broken test file from a broken policy.
const EXIT_BAD_FILE: u8 = 2;

/// `qgate test FILE...`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The test files (TOML): each names a config or a chain, and lists cases.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

/// A test file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The config whose `[[plugins]]` is the chain, relative to the test file.
    config: Option<PathBuf>,
    /// The chain, inline.
    plugins: Option<Plugins>,
    /// The cases, in order.
    #[serde(default, rename = "case")]
    cases: Vec<CaseSpec>,
}

/// A `[[case]]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    event: Event,
    #[serde(default)]
    user: String,
    password: Option<String>,
    peer: Option<String>,
    handle: Option<i32>,
    #[serde(default)]
    tls: bool,
    tls_cn: Option<String>,
    text: Option<String>,
    call: Option<String>,
    data: Option<String>,
    expect: Expected,
    message: Option<String>,
    value: Option<String>,
    value_contains: Option<String>,
}

/// The lifecycle events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Event {
    Auth,
    Open,
    Sync,
    Async,
    Close,
}

/// The verdict a case expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Allow,
    Deny,
    Pass,
    Reply,
    Route,
}

impl Expected {
    fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Pass => "pass",
            Self::Reply => "reply",
            Self::Route => "route",
        }
    }
}

/// A case, checked and ready to run.
struct Case {
    name: String,
    event: Action,
    session: Session,
    expect: Expected,
    message: Option<String>,
    value: Option<String>,
    value_contains: Option<String>,
}

/// A case's event, with what it carries.
enum Action {
    /// The handshake's password, `None` when it had no `:`.
    Auth(Option<Vec<u8>>),
    Open,
    Sync(Request),
    Async(Request),
    Close,
}

/// What the chain did with a case's event.
#[derive(Debug)]
enum Outcome {
    /// An auth hook's allow (with the user it maps to), an open hook's keep, a close.
    Allow(Option<String>),
    /// A deny, with its message (an auth deny has none), or an open hook's close and its reason.
    Deny(Option<String>),
    /// Nobody answered.
    Pass,
    /// An answer.
    Reply(K),
    /// A route to the upstream of this name.
    Route(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow(None) => f.write_str("allow"),
            Self::Allow(Some(user)) => write!(f, "allow as {}", shown(user)),
            Self::Deny(None) => f.write_str("deny"),
            Self::Deny(Some(message)) => write!(f, "deny {}", shown(message)),
            Self::Pass => f.write_str("pass"),
            Self::Reply(value) => write!(f, "reply {}", shown(&value.to_string())),
            Self::Route(upstream) => write!(f, "route {}", shown(upstream)),
        }
    }
}

/// `text` quoted with its control characters and quotes escaped (it can come from a plugin, which
/// may put anything in a message), cut at [`MAX_SHOWN_CHARS`].
pub(crate) fn shown(text: &str) -> String {
    let mut cut: String = text.chars().take(MAX_SHOWN_CHARS).collect();
    if cut.len() < text.len() {
        cut.push_str("...");
    }
    format!("{cut:?}")
}

impl Case {
    /// Whether the outcome is the one expected.
    fn accepts(&self, outcome: &Outcome) -> bool {
        let value = self.value.as_deref();
        match (self.expect, outcome) {
            (Expected::Deny, Outcome::Deny(message)) => self.message.as_ref().is_none_or(|want| {
                message
                    .as_deref()
                    .is_some_and(|message| message.contains(want.as_str()))
            }),
            (Expected::Allow, Outcome::Allow(user)) => {
                value.is_none_or(|want| user.as_deref() == Some(want))
            }
            (Expected::Allow, Outcome::Pass | Outcome::Reply(_) | Outcome::Route(_))
            | (Expected::Pass, Outcome::Pass) => value.is_none(),
            (Expected::Reply, Outcome::Reply(reply)) => {
                let shown = reply.to_string();
                value.is_none_or(|want| shown == want)
                    && self
                        .value_contains
                        .as_deref()
                        .is_none_or(|want| shown.contains(want))
            }
            (Expected::Route, Outcome::Route(upstream)) => {
                value.is_none_or(|want| upstream == want)
            }
            _ => false,
        }
    }

    /// What was expected, as a failure line says it.
    fn expected(&self) -> String {
        let mut text = self.expect.name().to_owned();
        if let Some(message) = &self.message {
            text.push_str(&format!(" containing {}", shown(message)));
        }
        if let Some(value) = &self.value {
            let what = match self.expect {
                Expected::Allow => " as",
                _ => "",
            };
            text.push_str(&format!("{what} {}", shown(value)));
        }
        if let Some(part) = &self.value_contains {
            text.push_str(&format!(" containing {}", shown(part)));
        }
        text
    }

    /// Calls the chain with the case's event.
    async fn run(&self, host: &PluginHost) -> Outcome {
        let session = &self.session;
        match &self.event {
            Action::Auth(password) => {
                let credentials = Credentials {
                    user: session.user.to_vec(),
                    password: password.clone(),
                };
                match host.on_auth(session, &credentials).await {
                    AuthVerdict::Allow(user) => {
                        Outcome::Allow(user.map(|user| String::from_utf8_lossy(&user).into_owned()))
                    }
                    AuthVerdict::Deny => Outcome::Deny(None),
                    AuthVerdict::Pass => Outcome::Pass,
                }
            }
            Action::Open => match host.on_open(session).await {
                OpenVerdict::Keep => Outcome::Allow(None),
                OpenVerdict::Close(reason) => Outcome::Deny(Some(reason)),
            },
            Action::Close => {
                host.on_close(session, &CloseReason::ClientClosed).await;
                Outcome::Allow(None)
            }
            Action::Sync(request) | Action::Async(request) => {
                let verdict = if matches!(self.event, Action::Sync(_)) {
                    host.on_sync(session, request).await
                } else {
                    host.on_async(session, request).await
                };
                match verdict {
                    Verdict::Deny(message) => Outcome::Deny(Some(message)),
                    Verdict::Pass => Outcome::Pass,
                    Verdict::Reply(body) => match body.value() {
                        Ok(value) => Outcome::Reply(value),
                        Err(error) => {
                            Outcome::Deny(Some(format!("a reply that cannot be read: {error}")))
                        }
                    },
                    Verdict::Route(upstream) => Outcome::Route(upstream),
                }
            }
        }
    }
}

/// Runs every file's cases, prints the failures and a summary, and says how it went.
pub(crate) fn run(args: &Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            // Nothing sensible is left to do if stderr is gone.
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {error}"
            );
            return ExitCode::from(EXIT_BAD_FILE);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let (mut passed, mut failed, mut bad_files) = (0_usize, 0_usize, 0_usize);
    for path in &args.files {
        let file = path.display();
        let (host, cases) = match load(path) {
            Ok(loaded) => loaded,
            Err(error) => {
                let _ = writeln!(std::io::stderr(), "error: {error:#}");
                bad_files += 1;
                continue;
            }
        };
        for case in &cases {
            let outcome = runtime.block_on(case.run(&host));
            if case.accepts(&outcome) {
                passed += 1;
            } else {
                failed += 1;
                // A closed stdout loses the line; the exit status still says it failed.
                let _ = writeln!(
                    stdout,
                    "{file}: case {}: expected {}, got {outcome}",
                    shown(&case.name),
                    case.expected()
                );
            }
        }
    }
    let not_run = match bad_files {
        0 => String::new(),
        1 => ", 1 file not run".to_owned(),
        n => format!(", {n} files not run"),
    };
    let _ = writeln!(stdout, "{passed} passed, {failed} failed{not_run}");
    let _ = stdout.flush();
    if bad_files > 0 {
        ExitCode::from(EXIT_BAD_FILE)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads a test file, loads its chain and checks its cases.
fn load(path: &Path) -> Result<(PluginHost, Vec<Case>)> {
    let file = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("{file}: cannot read"))?;
    let mut spec = parse_file(&text).with_context(|| format!("{file}"))?;
    if spec.cases.is_empty() {
        bail!("{file}: no `[[case]]`: a test file with nothing to check would always pass");
    }
    let mut names = HashSet::new();
    let cases: Vec<Case> = std::mem::take(&mut spec.cases)
        .into_iter()
        .enumerate()
        .map(|(index, case)| {
            if !names.insert(case.name.clone()) {
                bail!(
                    "{file}: case[{index}].name: {} is the name of an earlier case; each case \
                     needs its own",
                    shown(&case.name)
                );
            }
            let name = shown(&case.name);
            check_case(index, case).with_context(|| format!("{file}: case[{index}] {name}"))
        })
        .collect::<Result<_>>()?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let config = match (&spec.config, spec.plugins) {
        (Some(config), None) => {
            Config::load(dir.join(config)).with_context(|| format!("{file}: config"))?
        }
        (None, Some(plugins)) => {
            let mut config = Config::default();
            config.plugins = plugins;
            config
                .check_routes()
                .with_context(|| format!("{file}: plugins"))?;
            config
        }
        (Some(_), Some(_)) => bail!(
            "{file}: `config` and `[[plugins]]` are both given; a test file names its chain once"
        ),
        (None, None) => bail!(
            "{file}: no chain: give `config = \"PATH\"` (a config file) or `[[plugins]]` tables"
        ),
    };
    if config.plugins.is_empty() {
        bail!("{file}: the chain has no plugins, so there is nothing to test");
    }
    let mut options = host_options(&config).with_context(|| format!("{file}: plugins"))?;
    if spec.config.is_none() {
        // Inline plugins' paths are relative to the test file, as a config's are to the config.
        for plugin in &mut options.plugins {
            plugin.path = dir.join(&plugin.path);
        }
    }
    // Loaded last: a mistake in a case is reported without compiling the chain first.
    let host = PluginHost::new(options)
        .with_context(|| format!("{file}: a plugin of the chain failed to load"))?;
    Ok((host, cases))
}

/// Parses a test file's text, naming the key and the line of what is wrong.
fn parse_file(text: &str) -> Result<TestFile> {
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|error| anyhow!("line {}: {}", line_of(text, error.span()), error.message()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.inner();
        anyhow!(
            "{}line {}: {}",
            if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            },
            line_of(text, inner.span()),
            inner.message()
        )
    })
}

/// The 1-based line of a span's start, or `?` when the parser gave none.
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map_or_else(
        || "?".to_owned(),
        |span| {
            let start = span.start.min(text.len());
            (text.as_bytes()[..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1)
            .to_string()
        },
    )
}

/// Checks a case's keys against its event and expectation, and builds its session and message.
fn check_case(index: usize, spec: CaseSpec) -> Result<Case> {
    if spec.name.is_empty() {
        bail!("name: is empty; a failure line names the case by it");
    }
    let messages = [
        ("text", spec.text.is_some()),
        ("call", spec.call.is_some()),
        ("data", spec.data.is_some()),
    ];
    let given: Vec<&str> = messages
        .iter()
        .filter(|(_, given)| *given)
        .map(|(key, _)| *key)
        .collect();
    let event = match spec.event {
        Event::Sync => Action::Sync(read_message(&spec, &given, MessageType::Sync)?),
        Event::Async => Action::Async(read_message(&spec, &given, MessageType::Async)?),
        Event::Auth => Action::Auth(spec.password.clone().map(String::into_bytes)),
        Event::Open => Action::Open,
        Event::Close => Action::Close,
    };
    if !matches!(spec.event, Event::Sync | Event::Async)
        && let Some(key) = given.first()
    {
        bail!(
            "{key}: only sync and async cases send a message, this is {} case",
            an_event(spec.event)
        );
    }
    if spec.password.is_some() && spec.event != Event::Auth {
        bail!("password: only auth cases have one");
    }
    let allowed: &[Expected] = match spec.event {
        Event::Auth => &[Expected::Allow, Expected::Deny, Expected::Pass],
        Event::Open => &[Expected::Allow, Expected::Deny],
        Event::Close => &[Expected::Allow],
        Event::Sync | Event::Async => &[
            Expected::Allow,
            Expected::Deny,
            Expected::Pass,
            Expected::Reply,
            Expected::Route,
        ],
    };
    if !allowed.contains(&spec.expect) {
        let names: Vec<&str> = allowed.iter().map(|expect| expect.name()).collect();
        bail!(
            "expect: {} case cannot {}; it can {}",
            an_event(spec.event),
            spec.expect.name(),
            names.join(", ")
        );
    }
    if spec.message.is_some() && spec.expect != Expected::Deny {
        bail!(
            "message: is for `expect = \"deny\"`; a {} has none",
            spec.expect.name()
        );
    }
    if spec.message.is_some() && spec.event == Event::Auth {
        bail!("message: an auth hook denies without a message");
    }
    let value_fits = match spec.expect {
        Expected::Reply | Expected::Route => true,
        Expected::Allow => spec.event == Event::Auth,
        Expected::Deny | Expected::Pass => false,
    };
    if spec.value_contains.is_some() && spec.expect != Expected::Reply {
        bail!("value_contains: is for `expect = \"reply\"`");
    }
    if spec.value.is_some() && !value_fits {
        bail!(
            "value: is for `expect = \"reply\"` (the value), `\"route\"` (the upstream) or an \
             auth `\"allow\"` (the user it maps to)"
        );
    }
    let peer = match &spec.peer {
        None => SocketAddr::new(IpAddr::from([127, 0, 0, 1]), DEFAULT_PEER_PORT),
        Some(peer) => read_peer(peer)?,
    };
    let handle = match spec.handle {
        Some(handle) => handle,
        None => i32::try_from(index + 1).context("handle: too many cases to number")?,
    };
    let mut session = Session::new(
        Handle(handle),
        spec.user.as_bytes().to_vec(),
        peer,
        CAPABILITY,
    );
    if spec.tls || spec.tls_cn.is_some() {
        let mut tls = TlsFacts::default();
        tls.protocol = "TLSv1.3".to_owned();
        tls.cipher = "TLS13_AES_256_GCM_SHA384".to_owned();
        if let Some(cn) = spec.tls_cn {
            let mut cert = CertIdentity::default();
            cert.subject_cn = Some(cn);
            tls.client_cert = Some(cert);
        }
        session.tls = Some(Arc::new(tls));
    }
    Ok(Case {
        name: spec.name,
        event,
        session,
        expect: spec.expect,
        message: spec.message,
        value: spec.value,
        value_contains: spec.value_contains,
    })
}

/// The message of a sync or async case: its one `text`, `call` or `data`, as a client sends it.
fn read_message(spec: &CaseSpec, given: &[&str], message_type: MessageType) -> Result<Request> {
    let value = match (given, &spec.text, &spec.call, &spec.data) {
        ([_], Some(text), _, _) => K::string(text),
        ([_], _, Some(call), _) => read_call(call).context("call")?,
        ([_], _, _, Some(data)) => read_data(data).context("data")?,
        ([], ..) => bail!(
            "{} case needs its message: `text`, `call` or `data`",
            an_event(spec.event)
        ),
        _ => bail!(
            "{}: a case sends one message; give one of `text`, `call` and `data`",
            given.join(" and ")
        ),
    };
    request(message_type, &value)
}

/// The event's name with its article, for messages: "an auth", "a sync".
fn an_event(event: Event) -> &'static str {
    match event {
        Event::Auth => "an auth",
        Event::Open => "an open",
        Event::Sync => "a sync",
        Event::Async => "an async",
        Event::Close => "a close",
    }
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`.
fn read_peer(text: &str) -> Result<SocketAddr> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_PEER_PORT))
        .map_err(|_| anyhow!("peer: {} is not IP, IP:PORT or [IPv6]:PORT", shown(text)))
}

/// A message as a client sends it: encoded, framed and validated as the server does.
fn request(message_type: MessageType, value: &K) -> Result<Request> {
    let frame = qgate_ipc::encode_message(message_type, value)
        .map_err(|error| anyhow!("the message cannot be encoded: {error}"))?;
    let message = Message::from_frame(frame, &Limits::default())
        .map_err(|error| anyhow!("the message is not a valid frame: {error}"))?;
    Request::new(message).map_err(|error| anyhow!("the message is not valid: {error}"))
}

/// Reads `name[arg;...]` into the general list `` (`name;arg;...) ``.
fn read_call(text: &str) -> Result<K> {
    let tree = qgate_q::parse(text.as_bytes()).map_err(|error| anyhow!("{error}"))?;
    let root = tree.root();
    let not_a_call = || {
        anyhow!(
            "{} is not a call; write `name[arg;arg;...]` with q data as the arguments",
            shown(text)
        )
    };
    match root.kind() {
        NodeKind::List => {
            let mut items = root.items();
            let Some(NodeKind::Name(name)) = items.next().map(|head| head.kind()) else {
                return Err(not_a_call());
            };
            let mut call = vec![K::symbol(name)];
            for (index, arg) in items.enumerate() {
                call.push(value(arg).with_context(|| format!("argument {}", index + 1))?);
            }
            Ok(K::list(call))
        }
        // `f[x]`: q parses a call whose arguments are all names as a symbol vector.
        NodeKind::Vector(Type::Symbol) => match root.items().nth(1).and_then(|arg| arg.name()) {
            Some(arg) => Err(name_error(arg)).context("argument 1"),
            None => Err(not_a_call()),
        },
        _ => Err(not_a_call()),
    }
}

/// Reads a q data literal.
fn read_data(text: &str) -> Result<K> {
    let tree = qgate_q::parse(text.as_bytes()).map_err(|error| anyhow!("{error}"))?;
    value(tree.root())
}

fn name_error(name: &str) -> anyhow::Error {
    anyhow!("`{name}` is a name, and names are not evaluated here; a symbol is written `{name}")
}

/// The value of a parse-tree node that is a q data literal.
fn value(node: Node<'_>) -> Result<K> {
    let not_data = || {
        anyhow!(
            "{} is not q data; only literals are read: atoms, strings, symbols, vectors, \
             (a;b) lists, dictionaries and ::",
            shown(&node.to_string())
        )
    };
    match node.kind() {
        NodeKind::Null => Ok(K::Null),
        NodeKind::Char(c) => Ok(K::Atom(Atom::Char(c))),
        NodeKind::String(text) => Ok(K::string(text)),
        NodeKind::Atom(q_atom) => atom(q_atom).map(K::Atom).ok_or_else(not_data),
        NodeKind::Name(name) => Err(name_error(name)),
        // `,`a`: q's parse enlists a symbol literal, so that it is no name.
        NodeKind::Vector(Type::Symbol) if node.len() == 1 => node
            .items()
            .find_map(|item| item.name())
            .map(K::symbol)
            .ok_or_else(not_data),
        // `` `f`x ``: the name `f` applied to the name `x`.
        NodeKind::Vector(Type::Symbol) => match node.items().nth(1).and_then(|item| item.name()) {
            Some(name) => Err(name_error(name)),
            None => Err(not_data()),
        },
        NodeKind::Vector(_) => {
            let atoms = node
                .items()
                .map(|item| match item.kind() {
                    NodeKind::Atom(q_atom) => atom(q_atom),
                    NodeKind::Char(c) => Some(Atom::Char(c)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(not_data)?;
            vector(&atoms).map(K::vector).ok_or_else(not_data)
        }
        NodeKind::List => {
            let items: Vec<Node<'_>> = node.items().collect();
            match items.as_slice() {
                [] => Ok(K::list(Vec::new())),
                // `,x`: a constant, as q's parse quotes a symbol literal so that it is no name.
                [quoted] => match quoted.kind() {
                    NodeKind::Name(name) => Ok(K::symbol(name)),
                    NodeKind::Vector(Type::Symbol) => {
                        Ok(K::symbols(quoted.items().filter_map(|item| item.name())))
                    }
                    _ => value(*quoted),
                },
                [head, rest @ ..] if matches!(head.kind(), NodeKind::Keyword(k) if k.name() == "enlist") =>
                {
                    let items = rest
                        .iter()
                        .map(|item| value(*item))
                        .collect::<Result<_>>()?;
                    Ok(collapse(items))
                }
                [head, keys, values] if matches!(head.kind(), NodeKind::Primitive("!")) => {
                    Ok(K::dict(value(*keys)?, value(*values)?))
                }
                _ => Err(not_data()),
            }
        }
        _ => Err(not_data()),
    }
}

/// A general list as q makes it: a vector when every item is an atom of one type.
fn collapse(items: Vec<K>) -> K {
    let atoms: Option<Vec<Atom>> = items
        .iter()
        .map(|item| match item {
            K::Atom(atom) => Some(atom.clone()),
            _ => None,
        })
        .collect();
    match atoms.as_deref().and_then(vector) {
        Some(data) => K::vector(data),
        None => K::list(items),
    }
}

/// The vector of `atoms`, when they are all of one type (and there is at least one).
fn vector(atoms: &[Atom]) -> Option<VectorData> {
    macro_rules! collect {
        ($variant:ident) => {
            VectorData::$variant(
                atoms
                    .iter()
                    .map(|atom| match atom {
                        Atom::$variant(x) => Some(x.clone()),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
            )
        };
    }
    Some(match atoms.first()? {
        Atom::Boolean(_) => collect!(Boolean),
        Atom::Guid(_) => collect!(Guid),
        Atom::Byte(_) => collect!(Byte),
        Atom::Short(_) => collect!(Short),
        Atom::Int(_) => collect!(Int),
        Atom::Long(_) => collect!(Long),
        Atom::Real(_) => collect!(Real),
        Atom::Float(_) => collect!(Float),
        Atom::Char(_) => collect!(Char),
        Atom::Symbol(_) => VectorData::Symbol(
            atoms
                .iter()
                .map(|atom| match atom {
                    Atom::Symbol(name) => Some(name.as_slice()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?
                .into_iter()
                .collect(),
        ),
        Atom::Timestamp(_) => collect!(Timestamp),
        Atom::Month(_) => collect!(Month),
        Atom::Date(_) => collect!(Date),
        Atom::Datetime(_) => collect!(Datetime),
        Atom::Timespan(_) => collect!(Timespan),
        Atom::Minute(_) => collect!(Minute),
        Atom::Second(_) => collect!(Second),
        Atom::Time(_) => collect!(Time),
    })
}

/// The wire atom of a parsed one.
fn atom(atom: qgate_q::Atom) -> Option<Atom> {
    use qgate_q::Atom as Q;
    Some(match atom {
        Q::Boolean(x) => Atom::Boolean(x),
        Q::Guid(x) => Atom::Guid(x),
        Q::Byte(x) => Atom::Byte(x),
        Q::Short(x) => Atom::Short(x),
        Q::Int(x) => Atom::Int(x),
        Q::Long(x) => Atom::Long(x),
        Q::Real(x) => Atom::Real(x),
        Q::Float(x) => Atom::Float(x),
        Q::Timestamp(x) => Atom::Timestamp(x),
        Q::Month(x) => Atom::Month(x),
        Q::Date(x) => Atom::Date(x),
        Q::Datetime(x) => Atom::Datetime(x),
        Q::Timespan(x) => Atom::Timespan(x),
        Q::Minute(x) => Atom::Minute(x),
        Q::Second(x) => Atom::Second(x),
        Q::Time(x) => Atom::Time(x),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> String {
        read_data(text).map_or_else(
            |error| format!("error: {error:#}"),
            |value| value.to_string(),
        )
    }

    #[test]
    fn data_literals_read_as_q_reads_them() {
        for (text, shown) in [
            ("42", "42"),
            ("-3", "-3"),
            ("1i", "1i"),
            ("2.5", "2.5"),
            ("1b", "1b"),
            ("\"x\"", "\"x\""),
            ("\"xy\"", "\"xy\""),
            ("`a", "`a"),
            ("`a`b", "`a`b"),
            ("1 2 3", "1 2 3"),
            ("(1;2)", "1 2"),
            ("(1;`a;\"x\")", "(1;`a;\"x\")"),
            ("(`a;`b)", "`a`b"),
            ("()", "()"),
            ("::", "::"),
            ("`a`b!1 2", "`a`b!1 2"),
            ("2000.01.02", "2000.01.02"),
        ] {
            assert_eq!(data(text), shown, "{text}");
        }
    }

    #[test]
    fn names_and_expressions_are_refused() {
        assert!(data("x").contains("`x` is a name"), "{}", data("x"));
        assert!(data("1+2").contains("is not q data"), "{}", data("1+2"));
        assert!(data("til 3").contains("is not q data"), "{}", data("til 3"));
    }

    fn case(keys: &str) -> Result<Case> {
        let file = parse_file(&format!("[[case]]\nname = \"c\"\n{keys}"))?;
        let spec = file.cases.into_iter().next().expect("one case");
        check_case(0, spec)
    }

    fn error(keys: &str) -> String {
        match case(keys) {
            Ok(_) => format!("no error for {keys:?}"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn a_case_makes_its_session() {
        let made = case(
            "event = \"sync\"\nuser = \"u\"\npeer = \"[::1]:6000\"\ntls_cn = \"cn\"\n\
             text = \"x\"\nexpect = \"allow\"",
        )
        .expect("a valid case");
        let session = &made.session;
        assert_eq!(&*session.user, b"u");
        assert_eq!(session.handle, Handle(1));
        assert_eq!(session.peer, "[::1]:6000".parse().expect("an address"));
        let tls = session.tls.as_ref().expect("a TLS session");
        let cert = tls.client_cert.as_ref().expect("a client certificate");
        assert_eq!(cert.subject_cn.as_deref(), Some("cn"));

        let plain = case("event = \"open\"\npeer = \"10.0.0.1\"\nhandle = 9\nexpect = \"deny\"")
            .expect("a valid case");
        assert_eq!(plain.session.handle, Handle(9));
        assert_eq!(
            plain.session.peer,
            SocketAddr::new(IpAddr::from([10, 0, 0, 1]), DEFAULT_PEER_PORT)
        );
        assert!(plain.session.tls.is_none());
        let tls = case("event = \"close\"\ntls = true\nexpect = \"allow\"").expect("a valid case");
        let facts = tls.session.tls.as_ref().expect("a TLS session");
        assert!(facts.client_cert.is_none());
    }

    #[test]
    fn keys_that_do_not_fit_the_case_are_refused() {
        for (keys, want) in [
            (
                "event = \"sync\"\ntext = \"x\"\npassword = \"p\"\nexpect = \"allow\"",
                "password: only auth cases",
            ),
            (
                "event = \"sync\"\ntext = \"x\"\nexpect = \"deny\"\nvalue = \"1\"",
                "value: is for",
            ),
            (
                "event = \"sync\"\ntext = \"x\"\nexpect = \"allow\"\nvalue_contains = \"1\"",
                "value_contains: is for",
            ),
            (
                "event = \"auth\"\nexpect = \"deny\"\nmessage = \"m\"",
                "message: an auth hook denies without",
            ),
            (
                "event = \"close\"\nexpect = \"deny\"",
                "expect: a close case cannot deny",
            ),
            (
                "event = \"open\"\ntext = \"x\"\nexpect = \"allow\"",
                "text: only sync and async cases",
            ),
            (
                "event = \"async\"\nexpect = \"allow\"",
                "an async case needs its message",
            ),
            (
                "event = \"sync\"\ntext = \"x\"\npeer = \"host:1\"\nexpect = \"allow\"",
                "peer: \"host:1\" is not IP",
            ),
        ] {
            let got = error(keys);
            assert!(got.contains(want), "{keys:?}: {got}");
        }
    }

    #[test]
    fn calls_become_general_lists() {
        let call = |text: &str| {
            read_call(text).map_or_else(|error| format!("error: {error:#}"), |v| v.to_string())
        };
        assert_eq!(call("legalOperation[1;2]"), "(`legalOperation;1;2)");
        assert_eq!(call("f[`a;\"s\";1 2]"), "(`f;`a;\"s\";1 2)");
        assert_eq!(call("f[]"), "(`f;::)");
        assert!(
            call("f[x]").contains("argument 1: `x` is a name"),
            "{}",
            call("f[x]")
        );
        assert!(
            call("f[1;y]").contains("argument 2: `y` is a name"),
            "{}",
            call("f[1;y]")
        );
        assert!(call("1+2").contains("is not a call"), "{}", call("1+2"));
    }
}
