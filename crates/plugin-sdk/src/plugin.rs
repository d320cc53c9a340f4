//! The [`Plugin`] trait: the callbacks a plugin implements, each with a permissive default.

use crate::{
    AuthVerdict, DataVerdict, Events, Verdict,
    ctx::{AuthCtx, CloseCtx, Config, MessageCtx, OpenCtx, OutcomeCtx},
    data::DataCtx,
    http::{HttpCtx, HttpVerdict},
    ws::{WsCtx, WsOpenVerdict, WsVerdict},
};

/// A qgate plugin: one value per loaded instance, created by [`Plugin::init`] from the plugin's
/// config and asked about every event it takes.
///
/// Every handler has a default that lets the event through (pass, keep the connection, do
/// nothing), so a plugin that implements only `init` is a valid plugin that passes everything;
/// override the handlers you need and narrow [`Plugin::EVENTS`] to them.
///
/// Handlers take `&self`: a component instance is single-threaded and never re-entered, so state
/// that changes lives in a `Cell` or `RefCell`. State that must outlive this instance (which the
/// host replaces on a hot-swap or after a trap) goes in the host's key-value store,
/// [`host::kv`](crate::host::kv).
///
/// A handler that panics traps the instance; the host counts that as a deny for auth, sync and
/// async (fail-closed) and logs it, and replaces the instance.
pub trait Plugin: Sized + 'static {
    /// The events the host calls this plugin for; the host never calls it for the others.
    ///
    /// The default is every event but `OUTCOME`, `RESPONSE`, `PUBLICATION`, `HTTP` and the
    /// WebSocket events (`WS_OPEN`, `WS_MESSAGE`, `WS_CLOSE`), which is
    /// always correct: a handler you did not override passes. Narrowing it
    /// (`Events::SYNC.union(Events::CLOSE)`) saves a call into the plugin for each event it
    /// ignores. A handler you override but leave out of `EVENTS` is never called: a plugin that
    /// implements [`Plugin::on_outcome`] adds `Events::OUTCOME`, one that implements
    /// [`Plugin::on_response`] adds `Events::RESPONSE` (taking it makes the host hold each reply
    /// whole before the client gets it, so it is never on by default), one that implements
    /// [`Plugin::on_http`] adds `Events::HTTP`, and one that implements the WebSocket handlers adds
    /// their events.
    const EVENTS: Events = Events::all()
        .difference(Events::OUTCOME)
        .difference(Events::RESPONSE)
        .difference(Events::PUBLICATION)
        .difference(Events::HTTP)
        .difference(Events::WS_OPEN)
        .difference(Events::WS_MESSAGE)
        .difference(Events::WS_CLOSE);

    /// Called in every new instance of the plugin, with its table from `config.toml`: the host
    /// keeps a small pool of interchangeable instances and makes a new one when all are busy or
    /// one has trapped. Build the same value every time; keep state that instances share, or
    /// that must outlive a swap, in [`crate::host::kv`].
    ///
    /// # Errors
    ///
    /// A message saying what is wrong (name the config key). From the first instance, the host
    /// refuses to load this version and reports the message (a hot-swap keeps the old version);
    /// from a later one, that call fails like a trap.
    fn init(config: &Config) -> Result<Self, String>;

    /// The events this plugin takes, asked once after `init`: [`Plugin::EVENTS`], unless the
    /// plugin decides at start (an auditor whose every line the log filter drops takes nothing,
    /// and costs nothing). The log filter and the config do not change while a version runs.
    fn events(&self) -> Events {
        Self::EVENTS
    }

    /// `.z.pw`: fires after the handshake and the host's password-file check, before the client
    /// gets its capability byte, with the user name and the password the client sent.
    ///
    /// [`AuthVerdict::Allow`] accepts the client (and may replace the user name later events
    /// see), [`AuthVerdict::Deny`] closes the socket without a byte (the client reports
    /// `'access`), [`AuthVerdict::Pass`] leaves the decision to the next plugin and the built-in
    /// checks.
    ///
    /// The default passes.
    fn on_auth(&self, ctx: &AuthCtx) -> AuthVerdict {
        let _ = ctx;
        AuthVerdict::Pass
    }

    /// `.z.po`: fires once per connection, after the capability byte is sent.
    ///
    /// # Errors
    ///
    /// An error closes the connection, with the message in the server's log.
    ///
    /// The default keeps the connection and does nothing.
    fn on_open(&self, ctx: &OpenCtx) -> Result<(), String> {
        let _ = ctx;
        Ok(())
    }

    /// `.z.pg`: fires for each sync request (the client waits for an answer), in arrival order.
    ///
    /// [`Verdict::Deny`] answers with that q error, [`Verdict::Reply`] answers with a value
    /// (build one with [`Verdict::reply`]), [`Verdict::Pass`] hands the request to the next
    /// plugin and then to the backend (in gateway mode, the default upstream), and
    /// [`Verdict::Route`] sends it to the named upstream (build one with [`Verdict::route`]).
    ///
    /// When the verdict depends on the user and the function alone, call
    /// [`MessageCtx::same_for_head`] before returning it: qgate then gives it for the
    /// connection's later calls of the function without calling the plugin.
    ///
    /// The default passes.
    fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
        let _ = ctx;
        Verdict::Pass
    }

    /// `.z.ps`: fires for each async message (no answer is sent), in arrival order.
    ///
    /// [`Verdict::Deny`] drops the message and logs the reason, as q drops async errors;
    /// [`Verdict::Reply`] accepts it without passing it on; [`Verdict::Pass`] hands it to the
    /// next plugin and then to the backend; [`Verdict::Route`] sends it to the named upstream.
    ///
    /// The default passes.
    fn on_async(&self, ctx: &MessageCtx<'_>) -> Verdict {
        let _ = ctx;
        Verdict::Pass
    }

    /// `.z.pc`: fires once after a connection has closed, whichever side closed it, with the
    /// reason in words. Only connections that were opened (auth allowed them) are closed.
    ///
    /// The default does nothing.
    fn on_close(&self, ctx: &CloseCtx) {
        let _ = ctx;
    }

    /// Fires after the whole chain has decided an auth, open, sync or async event, with the
    /// decision, the plugin that made it, the deny message and the time the chain took: what an
    /// audit trail records, and for messages their facts ([`OutcomeCtx::facts`]). Only with
    /// `Events::OUTCOME` in [`Plugin::EVENTS`], which the default leaves out.
    ///
    /// The default does nothing.
    fn on_outcome(&self, ctx: &OutcomeCtx<'_>) {
        let _ = ctx;
    }

    /// In gateway mode, the reply an upstream sent to a sync request the chain passed, before
    /// the client gets it: [`DataVerdict::Pass`] sends it as it came, [`DataVerdict::Edit`] has
    /// the host filter its tables' rows and columns (build one with
    /// [`data::EditBuilder`](crate::data::EditBuilder)), [`DataVerdict::Replace`] sends another
    /// value, [`DataVerdict::Deny`] sends a q error instead. [`DataVerdict::PassAlways`] passes
    /// it and every later reply on the connection without calling the plugin again (for a
    /// verdict that depends on the connection alone: the large replies then stream through as
    /// with no plugin). Only with `Events::RESPONSE` in [`Plugin::EVENTS`].
    ///
    /// The default passes.
    fn on_response(&self, ctx: &DataCtx<'_>) -> DataVerdict {
        let _ = ctx;
        DataVerdict::Pass
    }

    /// In gateway mode, an async message an upstream sends the client unasked (a tickerplant's
    /// `(`upd;`trade;rows)`), before the client gets it; verdicts as for
    /// [`Plugin::on_response`], except that a deny drops the message (the host logs it), and
    /// that [`DataVerdict::FilterAlways`] has the host apply a
    /// [`PublicationFilter`](crate::PublicationFilter) to this and every later publication on the
    /// connection by itself, without calling the plugin again: a feed of thousands of messages a
    /// second then costs no call each. Only with `Events::PUBLICATION` in [`Plugin::EVENTS`].
    ///
    /// The default passes.
    fn on_publication(&self, ctx: &DataCtx<'_>) -> DataVerdict {
        let _ = ctx;
        DataVerdict::Pass
    }

    /// `.z.ph` and `.z.pp`: fires for each HTTP request on the q port, once its login is
    /// accepted, when [`Plugin::EVENTS`] has `Events::HTTP`.
    ///
    /// [`http::respond`](crate::http::respond) answers, [`http::deny`](crate::http::deny)
    /// refuses, [`HttpVerdict::Pass`] hands the request to the next plugin and then to the
    /// backend (in gateway mode, the default upstream's own HTTP, where `.z.ph` runs), and
    /// [`HttpVerdict::Route`] sends it to a named upstream. The request's q text has the same
    /// [`facts`](HttpCtx::facts) a free-text query has: a policy that checks queries checks this
    /// too.
    ///
    /// While any plugin of the chain takes `sync` and none takes `http`, the host refuses HTTP
    /// requests rather than let them past the checks that q queries get.
    ///
    /// The default passes.
    fn on_http(&self, ctx: &HttpCtx<'_>) -> HttpVerdict {
        let _ = ctx;
        HttpVerdict::Pass
    }

    /// `.z.wo`: fires for each WebSocket upgrade on the q port, once its login is accepted (as
    /// an HTTP request's) and before the client gets its `101`, when [`Plugin::EVENTS`] has
    /// `Events::WS_OPEN`. The context is the upgrade request (no body).
    ///
    /// [`ws::deny_open`](crate::ws::deny_open) refuses it with an HTTP status. The default
    /// accepts.
    fn on_ws_open(&self, ctx: &HttpCtx<'_>) -> WsOpenVerdict {
        let _ = ctx;
        WsOpenVerdict::Accept
    }

    /// `.z.ws`: fires for each message (text or binary) of an open WebSocket, in order, when
    /// [`Plugin::EVENTS`] has `Events::WS_MESSAGE`.
    ///
    /// [`ws::reply_text`](crate::ws::reply_text) and [`WsVerdict::Reply`] answer,
    /// [`ws::deny`](crate::ws::deny) drops the message (nothing is sent back),
    /// [`ws::close`](crate::ws::close) closes the WebSocket, and [`WsVerdict::Pass`] hands the
    /// message to the next plugin and then to the backend (in gateway mode, the default
    /// upstream's own WebSocket, where `.z.ws` runs; with none, it is dropped).
    ///
    /// While any plugin of the chain takes `sync` and none takes `ws-message`, the host denies
    /// WebSocket messages rather than let them past the checks that q queries get.
    ///
    /// The default passes.
    fn on_ws_message(&self, ctx: &WsCtx) -> WsVerdict {
        let _ = ctx;
        WsVerdict::Pass
    }

    /// `.z.wc`: fires once after a WebSocket has closed, whichever side closed it, when
    /// [`Plugin::EVENTS`] has `Events::WS_CLOSE`. The default does nothing.
    fn on_ws_close(&self, ctx: &CloseCtx) {
        let _ = ctx;
    }
}
