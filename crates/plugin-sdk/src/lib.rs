//! The guest SDK for qgate plugins: implement [`Plugin`], call [`export_plugin!`], build for
//! `wasm32-wasip2`.
//!
//! A plugin is a WebAssembly component that implements the WIT world `qgate:plugin/plugin`
//! (`wit/plugin.wit` at the repository root). This crate hides the bindings that `wit-bindgen`
//! generates for it behind four things:
//!
//! - the [`Plugin`] trait, a long-lived root whose handlers (`on_auth`, `on_open`, `on_sync`,
//!   `on_async`, `on_close`, after q's `.z.pw`, `.z.po`, `.z.pg`, `.z.ps`, `.z.pc`) default to
//!   the permissive verdict, so a plugin that implements only [`Plugin::init`] passes everything;
//! - context structs ([`AuthCtx`], [`OpenCtx`], [`MessageCtx`], [`CloseCtx`]) that give typed
//!   access to the session and to the message, pulling bytes from the host only when asked;
//! - typed q values ([`K`], from `qgate-ipc`, the server's own codec) with helpers for calls,
//!   query text, dictionaries and tables ([`q::KExt`]), and builders for replies ([`reply`]);
//! - the facts of a query ([`MessageCtx::facts`]: the tables it reads and writes, the functions it
//!   calls, its flags), parsed once by the host, with the questions a policy asks of them
//!   ([`facts::FactsExt`]);
//! - in gateway mode, replies and publications on their way to the client ([`DataCtx`]), and the
//!   table tools that filter their rows and columns ([`data`]);
//! - the host's imports as plain functions ([`host`]: log, config, key-value store, clock).
//!
//! ```
//! use qgate_plugin_sdk::{Config, Events, MessageCtx, Plugin, Verdict, export_plugin};
//!
//! /// Answers every sync request with the value it carried.
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     const EVENTS: Events = Events::SYNC;
//!
//!     fn init(_config: &Config) -> Result<Self, String> {
//!         Ok(Echo)
//!     }
//!
//!     fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
//!         Verdict::Reply(ctx.body())
//!     }
//! }
//!
//! export_plugin!(Echo);
//! ```
//!
//! Everything except the host calls also builds natively, so plugin logic is unit-tested with a
//! plain `cargo test`: [`MessageCtx::from_value`] builds a message the way the host would, and off
//! wasm the [`host`] functions use an in-memory stand-in (see `testing`).

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    //! The bindings `wit-bindgen` generates for `wit/plugin.wit`. Nothing here is hand-written.
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "qgate_plugin_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

mod ctx;
pub mod data;
mod export;
pub mod facts;
pub mod host;
pub mod http;
mod plugin;
pub mod q;
pub mod reply;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod ws;

// The public surface.
pub use crate::{
    // The WIT types every call carries, as generated (plain structs and enums).
    bindings::qgate::plugin::types::{
        AuthVerdict, CertIdentity, ColumnMask, DataSummary, DataVerdict, Decision, EventKind,
        Events, Outcome, PublicationFilter, Session, Summary, TableEdit, TableSummary, TlsFacts,
        Verdict,
    },
    // What each handler is given.
    ctx::{AuthCtx, CloseCtx, Config, MessageCtx, OpenCtx, OutcomeCtx},
    data::DataCtx,
    // What a query reads, writes and calls.
    facts::{Facts, FactsExt, Flags},
    // HTTP on the q port.
    http::{HttpCtx, HttpVerdict},
    // The trait a plugin implements.
    plugin::Plugin,
    // WebSocket on the q port.
    ws::{WsCtx, WsMessage, WsOpenVerdict, WsVerdict},
};
// q values: the codec's types, re-exported so that plugins need no second dependency.
pub use qgate_ipc::{self as ipc, Atom, Attr, K, Symbols, Vector, VectorData};

#[doc(hidden)]
pub mod __private {
    //! What [`export_plugin!`](crate::export_plugin) expands to; not part of the API.
    pub use crate::export::Glue;
}

/// Exports a [`Plugin`] as the component's implementation of the WIT world.
///
/// Use it once, at the crate root of a `cdylib` crate built for `wasm32-wasip2`. It keeps the
/// plugin in a per-instance slot, created by [`Plugin::init`] and borrowed by every handler. On
/// other targets it expands to nothing, so the same crate builds natively for its unit tests.
///
/// ```
/// # use qgate_plugin_sdk::{Config, Plugin, export_plugin};
/// struct PassEverything;
///
/// impl Plugin for PassEverything {
///     fn init(_config: &Config) -> Result<Self, String> {
///         Ok(PassEverything)
///     }
/// }
///
/// export_plugin!(PassEverything);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type QgatePluginGlue = $crate::__private::Glue<$plugin>;
            $crate::bindings::__export_plugin_world!(
                QgatePluginGlue with_types_in $crate::bindings
            );
        };
    };
}
