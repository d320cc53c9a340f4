//! The host side of the WIT contract: the one `bindgen!` over `wit/` in the workspace.
//!
//! Nothing here is written by hand except the options: every generated item comes from
//! `wit/plugin.wit` at build time.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    // Every host function may trap: a guest that breaks a limit (a kv value too large, a message
    // asked for outside its call) is stopped rather than answered.
    imports: { default: trappable },
    with: {
        // The message a call is about: the host lends it for one call (see `state::MessageRef`).
        "qgate:plugin/types.message": crate::state::MessageRef,
        // An HTTP request, lent the same way (see `state::HttpRequestRef`).
        "qgate:plugin/types.http-request": crate::state::HttpRequestRef,
    },
});

pub(crate) use self::qgate::plugin::{host, types};
