//! What a store holds (`HostState`), and the host functions a guest imports: `host` (log, config,
//! kv, clock) and the `message` resource, whose facts are parsed once per chain (`facts.rs`).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use qgate_hooks::{HttpRequest, Request, Session};
use qgate_ipc::{Endian, ValueView};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::{
    bindings::{host, types},
    facts::{self, FactsCell},
    kv::Kv,
    store::{Deadline, GuestLimits},
};

/// The longest string text that a `summary` (WIT) carries in `text`; longer texts are fetched with
/// `message.text`.
///
/// A free-text query is usually a line; 4 KiB covers nearly all of them, and copying 4 KiB into
/// the guest costs about 0.15 us more than copying nothing (measured in DESIGN.md).
pub const MAX_SUMMARY_TEXT_BYTES: usize = 4096;

scoped_tls::scoped_thread_local!(
    /// The request the running call is about, lent by [`crate::PluginHost`] for exactly that call
    /// on the thread that runs it: a guest call is synchronous, so its host functions run on the
    /// same thread, inside the borrow.
    static CURRENT_REQUEST: Request
);

scoped_tls::scoped_thread_local!(
    /// The facts of the lent request, shared by every call of its chain: lent with it.
    static CURRENT_FACTS: FactsCell
);

scoped_tls::scoped_thread_local!(
    /// The connection the lent request came from: lent with it, for `message.session`.
    static CURRENT_SESSION: Session
);

scoped_tls::scoped_thread_local!(
    /// The WIT session and summary of the lent request, each made on the chain's first ask and
    /// shared by its later calls: lent with it.
    static CURRENT_MADE: Made
);

scoped_tls::scoped_thread_local!(
    /// The reply an `on-response` call is about, lent beside the request it answers.
    static CURRENT_REPLY: Request
);

scoped_tls::scoped_thread_local!(
    /// The HTTP request the running `on-http` call is about, lent as [`CURRENT_REQUEST`] is.
    static CURRENT_HTTP: HttpRequest
);

scoped_tls::scoped_thread_local!(
    /// The q text and facts of the lent HTTP request, computed on the chain's first ask.
    static CURRENT_HTTP_TEXT: HttpText
);

/// The q text of an HTTP request and its facts, each computed once per chain, on the first ask.
#[derive(Debug, Default)]
pub(crate) struct HttpText {
    text: std::sync::OnceLock<Option<Vec<u8>>>,
    facts: FactsCell,
}

/// Runs `f` with `request` and its text lent to the `http-request` resource's host functions.
pub(crate) fn with_http<R>(request: &HttpRequest, text: &HttpText, f: impl FnOnce() -> R) -> R {
    CURRENT_HTTP.set(request, || CURRENT_HTTP_TEXT.set(text, f))
}

/// The host's side of an `http-request`: a marker, as [`MessageRef`] is.
#[derive(Debug)]
#[expect(
    unreachable_pub,
    reason = "`bindgen!` re-exports it from a `pub` module of its own"
)]
pub struct HttpRequestRef;

/// A message lent to the calls of one chain: the request, its connection, and what the chain made
/// of them once a plugin asked (the WIT session and summary, the facts); for `on-response`, the
/// reply too.
#[derive(Clone, Copy)]
pub(crate) struct Lent<'a> {
    pub(crate) session: &'a Session,
    pub(crate) made: &'a Made,
    pub(crate) request: &'a Request,
    pub(crate) facts: &'a FactsCell,
    pub(crate) reply: Option<&'a Request>,
}

impl<'a> Lent<'a> {
    /// A request from `session`, with what its chain made of it.
    pub(crate) fn request(
        session: &'a Session,
        made: &'a Made,
        request: &'a Request,
        facts: &'a FactsCell,
    ) -> Self {
        Self {
            session,
            made,
            request,
            facts,
            reply: None,
        }
    }
}

/// The WIT session and summary of one chain's request, each made on the first ask (by the chain
/// itself, or by a plugin through `message.session` and `message.summary`) and then shared: a
/// chain whose plugins ask for neither copies neither.
#[derive(Debug, Default)]
pub(crate) struct Made {
    session: std::sync::OnceLock<types::Session>,
    summary: std::sync::OnceLock<types::Summary>,
}

impl Made {
    /// The WIT form of `session`, made on the first ask.
    pub(crate) fn session(&self, session: &Session) -> &types::Session {
        self.session.get_or_init(|| self::session(session))
    }

    /// The summary of `request`, made on the first ask.
    pub(crate) fn summary(&self, request: &Request) -> &types::Summary {
        self.summary.get_or_init(|| self::summary(request))
    }
}

/// Runs `f` with `lent` lent to the `message` resource's host functions.
pub(crate) fn with_request<R>(lent: Lent<'_>, f: impl FnOnce() -> R) -> R {
    CURRENT_REQUEST.set(lent.request, || {
        CURRENT_SESSION.set(lent.session, || {
            CURRENT_MADE.set(lent.made, || {
                CURRENT_FACTS.set(lent.facts, || match lent.reply {
                    Some(reply) => CURRENT_REPLY.set(reply, f),
                    None => f(),
                })
            })
        })
    })
}

/// The host's side of a `message`: a marker. The bytes stay in the server's [`Request`]; the
/// resource's `rep` names the call it was lent for, so a handle kept past its call is refused.
#[derive(Debug)]
#[expect(
    unreachable_pub,
    reason = "`bindgen!` re-exports it from a `pub` module of its own"
)]
pub struct MessageRef;

/// What one version's stores share: its name and version for logs, its config, and the kv store
/// that all versions of the plugin share.
#[derive(Debug)]
pub(crate) struct PluginShared {
    pub(crate) name: Arc<str>,
    /// The version label for logs: the first 12 hex digits of the sha256 of its file.
    pub(crate) version: String,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) kv: Arc<Kv>,
}

/// The data of one store (one instance).
pub(crate) struct HostState {
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) limits: GuestLimits,
    /// The `rep` of the message lent to the call in progress; 0 between calls.
    pub(crate) message_rep: u32,
    /// The `rep` of the reply lent to an `on-response` call in progress; 0 otherwise.
    pub(crate) reply_rep: u32,
    /// The `rep` of the HTTP request lent to an `on-http` call in progress; 0 otherwise.
    pub(crate) http_rep: u32,
    /// When the call in progress must stop (`store::set_deadline`).
    pub(crate) deadline: Deadline,
    /// Whether the call in progress has left the async worker it started on (see
    /// `offload::on_epoch`).
    pub(crate) off_async: bool,
    /// Whether the `on-sync` or `on-async` call in progress asked for its verdict to stand for
    /// its function (`same-for-head`); reset before each such call.
    pub(crate) same_for_head: bool,
    /// An empty WASI context: no preopened directory, no environment, no network, stdio
    /// connected to nothing.
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    pub(crate) fn new(shared: Arc<PluginShared>, limits: GuestLimits) -> Self {
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            shared,
            limits,
            message_rep: 0,
            reply_rep: 0,
            http_rep: 0,
            same_for_head: false,
            deadline: Deadline::past(),
            off_async: false,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// The message lent to the current call that `message` is the handle of: the request, or
    /// the reply of an `on-response` call.
    fn request<R>(
        &self,
        message: &Resource<MessageRef>,
        f: impl FnOnce(&Request) -> R,
    ) -> wasmtime::Result<R> {
        let rep = message.rep();
        if rep != 0 && rep == self.message_rep && CURRENT_REQUEST.is_set() {
            return Ok(CURRENT_REQUEST.with(f));
        }
        if rep != 0 && rep == self.reply_rep && CURRENT_REPLY.is_set() {
            return Ok(CURRENT_REPLY.with(f));
        }
        wasmtime::bail!("message used outside the call it was passed to")
    }

    /// The facts of the message lent to the current call, parsed on the chain's first ask (a
    /// reply's, on each ask).
    fn facts(&self, message: &Resource<MessageRef>) -> wasmtime::Result<types::Facts> {
        let is_request = message.rep() == self.message_rep;
        self.request(message, |request| {
            if !is_request || !CURRENT_FACTS.is_set() {
                return facts::of_view(request.view());
            }
            CURRENT_FACTS.with(|cell| cell.get_or_init(|| facts::of_view(request.view())).clone())
        })
    }
}

impl HostState {
    /// The HTTP request lent to the current call that `request` is the handle of.
    fn http<R>(
        &self,
        request: &Resource<HttpRequestRef>,
        f: impl FnOnce(&HttpRequest, &HttpText) -> R,
    ) -> wasmtime::Result<R> {
        let rep = request.rep();
        if rep != 0 && rep == self.http_rep && CURRENT_HTTP.is_set() && CURRENT_HTTP_TEXT.is_set() {
            return Ok(CURRENT_HTTP.with(|request| CURRENT_HTTP_TEXT.with(|text| f(request, text))));
        }
        wasmtime::bail!("HTTP request used outside the call it was passed to")
    }
}

impl HttpText {
    /// The request's q text (`qgate_q::http_text`), computed once.
    fn text(&self, request: &HttpRequest) -> Option<Vec<u8>> {
        self.text
            .get_or_init(|| {
                qgate_q::http_text(
                    &request.method,
                    &request.path,
                    request.query.as_deref(),
                    &request.body,
                )
            })
            .clone()
    }

    /// The request's q text for a log line: at most `max` bytes of it, cut at a character
    /// boundary, lossily as UTF-8.
    pub(crate) fn text_cut(&self, request: &HttpRequest, max: usize) -> Option<String> {
        let text = self.text(request)?;
        let text = String::from_utf8_lossy(&text);
        let mut end = text.len().min(max);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Some(text[..end].to_owned())
    }

    /// The facts of that text, parsed once.
    pub(crate) fn facts(&self, request: &HttpRequest) -> types::Facts {
        self.facts
            .get_or_init(|| match self.text(request) {
                Some(text) => facts::of_text(&text),
                None => facts::none(),
            })
            .clone()
    }
}

impl types::HostHttpRequest for HostState {
    fn body(&mut self, request: Resource<HttpRequestRef>) -> wasmtime::Result<Vec<u8>> {
        self.http(&request, |request, _| request.body.clone())
    }

    fn text(&mut self, request: Resource<HttpRequestRef>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.http(&request, |request, text| text.text(request))
    }

    fn facts(&mut self, request: Resource<HttpRequestRef>) -> wasmtime::Result<types::Facts> {
        self.http(&request, |request, text| text.facts(request))
    }

    fn drop(&mut self, _request: Resource<HttpRequestRef>) -> wasmtime::Result<()> {
        // Requests are only ever lent (`borrow<http-request>`).
        Ok(())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        let (plugin, version) = (&*self.shared.name, &*self.shared.version);
        match level {
            host::Level::Trace => tracing::trace!(plugin, version, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, version, "{message}"),
            host::Level::Info => tracing::info!(plugin, version, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, version, "{message}"),
            host::Level::Error => tracing::error!(plugin, version, "{message}"),
        }
        Ok(())
    }

    fn log_enabled(&mut self, level: host::Level) -> wasmtime::Result<bool> {
        // The same target as `log`'s lines: this module's.
        Ok(match level {
            host::Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            host::Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            host::Level::Info => tracing::enabled!(tracing::Level::INFO),
            host::Level::Warn => tracing::enabled!(tracing::Level::WARN),
            host::Level::Error => tracing::enabled!(tracing::Level::ERROR),
        })
    }

    fn same_for_head(&mut self) -> wasmtime::Result<()> {
        self.same_for_head = true;
        Ok(())
    }

    fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.shared.config.get(&key).cloned())
    }

    fn kv_get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.shared.kv.get(&key))
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        Ok(self.shared.kv.set(key, value)?)
    }

    fn kv_delete(&mut self, key: String) -> wasmtime::Result<bool> {
        Ok(self.shared.kv.delete(&key))
    }

    fn kv_keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.shared.kv.keys(&prefix))
    }

    fn now(&mut self) -> wasmtime::Result<i64> {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
    }
}

impl types::Host for HostState {}

impl types::HostMessage for HostState {
    fn session(&mut self, message: Resource<MessageRef>) -> wasmtime::Result<types::Session> {
        // Checks that the handle is the lent one; the session is the same for a reply.
        self.request(&message, |_| ())?;
        if !CURRENT_SESSION.is_set() || !CURRENT_MADE.is_set() {
            wasmtime::bail!("message used outside the call it was passed to")
        }
        Ok(CURRENT_SESSION.with(|session| CURRENT_MADE.with(|made| made.session(session).clone())))
    }

    fn summary(&mut self, message: Resource<MessageRef>) -> wasmtime::Result<types::Summary> {
        let is_request = message.rep() == self.message_rep;
        self.request(&message, |request| {
            if is_request && CURRENT_MADE.is_set() {
                CURRENT_MADE.with(|made| made.summary(request).clone())
            } else {
                summary(request)
            }
        })
    }

    fn body(&mut self, message: Resource<MessageRef>) -> wasmtime::Result<Vec<u8>> {
        self.request(&message, |request| little_endian(request.view()))?
    }

    fn arg(
        &mut self,
        message: Resource<MessageRef>,
        index: u32,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        self.request(&message, |request| {
            let arg = request
                .view()
                .call()
                .and_then(|call| call.arg(usize::try_from(index).ok()?));
            arg.map(little_endian).transpose()
        })?
    }

    fn text(&mut self, message: Resource<MessageRef>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.request(&message, |request| {
            request.view().string().map(<[u8]>::to_vec)
        })
    }

    fn facts(&mut self, message: Resource<MessageRef>) -> wasmtime::Result<types::Facts> {
        HostState::facts(self, &message)
    }

    fn column(
        &mut self,
        message: Resource<MessageRef>,
        table: u32,
        name: String,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        self.request(&message, |request| {
            crate::data::column(request, table, name.as_bytes())
        })?
    }

    fn drop(&mut self, _message: Resource<MessageRef>) -> wasmtime::Result<()> {
        // Messages are only ever lent (`borrow<message>`), so there is nothing to free.
        Ok(())
    }
}

/// A value's bytes as a little-endian body: a copy of the bytes when they already are, a
/// re-encoding when the client sent big-endian.
pub(crate) fn little_endian(view: ValueView<'_>) -> wasmtime::Result<Vec<u8>> {
    match view.endian() {
        Endian::Little => Ok(view.as_bytes().to_vec()),
        Endian::Big => {
            let value = view.to_k()?;
            let mut out = Vec::new();
            qgate_ipc::encode(&value, &mut out)?;
            Ok(out)
        }
    }
}

/// The WIT session for a hooks session.
pub(crate) fn session(session: &Session) -> types::Session {
    types::Session {
        handle: session.handle.0,
        user: session.user_lossy().into_owned(),
        peer_address: session.peer.ip().to_string(),
        peer_port: session.peer.port(),
        capability: session.capability,
        tls: session.tls.as_deref().map(|tls| types::TlsFacts {
            protocol: tls.protocol.clone(),
            cipher: tls.cipher.clone(),
            sni: tls.sni.clone(),
            client_cert: tls.client_cert.as_ref().map(|cert| types::CertIdentity {
                subject_cn: cert.subject_cn.clone(),
                sans: cert.sans.clone(),
                fingerprint_sha256: cert.fingerprint_sha256.clone(),
                not_before: cert.not_before,
                not_after: cert.not_after,
            }),
        }),
    }
}

/// The summary of a request, read in place from its view: only the head's name and a short
/// text are copied.
pub(crate) fn summary(request: &Request) -> types::Summary {
    let view = request.view();
    let call = view.call();
    let text = view
        .string()
        .filter(|text| text.len() <= MAX_SUMMARY_TEXT_BYTES)
        .map(|text| String::from_utf8_lossy(text).into_owned());
    types::Summary {
        type_code: view.type_code(),
        size: view.as_bytes().len() as u64,
        head: call
            .as_ref()
            .map(|call| String::from_utf8_lossy(call.name()).into_owned()),
        head_is_symbol: call.as_ref().is_some_and(|call| call.has_symbol_head()),
        arg_count: call.as_ref().map_or(0, |call| {
            u32::try_from(call.arg_count()).unwrap_or(u32::MAX)
        }),
        text,
    }
}
