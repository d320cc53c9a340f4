//! `echo`: answers every sync request with the value it carried, byte for byte.
//!
//! The smallest useful backend: with it, a client's `h"1+1"` gets `"1+1"` back and `` h(`f;1) ``
//! gets `` (`f;1) ``. Async messages are not taken (they pass). It has no config.

use qgate_plugin_sdk::{Config, Events, MessageCtx, Plugin, Verdict, export_plugin};

/// The plugin; it keeps nothing.
pub struct Echo;

impl Plugin for Echo {
    const EVENTS: Events = Events::SYNC;

    fn init(_config: &Config) -> Result<Self, String> {
        Ok(Echo)
    }

    /// Replies with the message's own bytes, without decoding them.
    fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
        Verdict::Reply(ctx.body())
    }
}

export_plugin!(Echo);

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::{K, testing::session};

    use super::*;

    #[test]
    fn a_sync_message_is_answered_with_itself() {
        let value = K::list(vec![K::symbol("f"), K::long(1), K::string("x")]);
        let ctx = MessageCtx::from_value(session(4, "alice"), &value);
        let echo = Echo::init(&Config::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(echo.on_sync(&ctx), Verdict::reply(&value));
    }
}
