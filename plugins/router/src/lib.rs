//! `router`: sends a call to a named upstream by the function it calls (gateway mode).
//!
//! A sync or async message that is a call (`` (`fn;args...) `` or `("fn";args...)`) whose
//! function matches a rule goes to that rule's upstream; everything else passes, to the next
//! plugin and then to the default upstream (the first `[[upstream]]`). Place it after the policy
//! plugins (a message they deny never reaches it) and before any plugin that answers.
//!
//! # Config
//!
//! ```toml
//! [[plugins]]
//! name = "router"
//! path = "plugins/target/wasm32-wasip2/release/router.wasm"
//! routes = ["hdb"]     # the upstreams this plugin may route to; qgate checks them at start
//!
//! [[plugins.config.rules]]
//! upstream = "hdb"
//! functions = ["getHistory", "hist.*"]   # a name, or a prefix ending in `*`
//! ```
//!
//! Rules are tried in order and the first that matches decides. Every key is required in a rule;
//! unknown keys are errors. With no rules everything passes.

use qgate_plugin_sdk::{Config, Events, MessageCtx, Plugin, Verdict, export_plugin};
use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    /// The rules, tried in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Calls of these functions go to this upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The upstream's name, as `[[upstream]]` has it.
    pub upstream: String,
    /// Function names, or prefixes ending in `*`.
    pub functions: Vec<String>,
}

impl Rule {
    fn matches(&self, function: &str) -> bool {
        self.functions
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => function.starts_with(prefix),
                None => pattern == function,
            })
    }
}

impl Routes {
    /// The verdict for a message.
    pub fn decide(&self, ctx: &MessageCtx<'_>) -> Verdict {
        let Some(function) = ctx.head() else {
            return Verdict::Pass;
        };
        self.rules
            .iter()
            .find(|rule| rule.matches(function))
            .map_or(Verdict::Pass, |rule| Verdict::route(&rule.upstream))
    }
}

impl Plugin for Routes {
    const EVENTS: Events = Events::SYNC.union(Events::ASYNC_MESSAGE);

    fn init(config: &Config) -> Result<Self, String> {
        let routes: Routes = config.parse()?;
        for (index, rule) in routes.rules.iter().enumerate() {
            if rule.upstream.is_empty() {
                return Err(format!("config: rules[{index}]: `upstream` is empty"));
            }
            if rule.functions.is_empty() {
                return Err(format!("config: rules[{index}]: `functions` is empty"));
            }
        }
        Ok(routes)
    }

    fn on_sync(&self, ctx: &MessageCtx<'_>) -> Verdict {
        self.decide(ctx)
    }

    fn on_async(&self, ctx: &MessageCtx<'_>) -> Verdict {
        self.decide(ctx)
    }
}

export_plugin!(Routes);

#[cfg(test)]
mod tests {
    use qgate_plugin_sdk::{K, testing::session};

    use super::*;

    fn plugin() -> Routes {
        let config = Config::from_json(
            r#"{"rules": [
                {"upstream": "hdb", "functions": ["getHistory", "hist.*"]},
                {"upstream": "rdb", "functions": ["*"]}
            ]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Routes::init(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn check(value: K, expect: Verdict) {
        let ctx = MessageCtx::from_value(session(4, "alice"), &value);
        assert_eq!(plugin().on_sync(&ctx), expect, "{value}");
    }

    #[test]
    fn calls_go_to_the_first_matching_rule() {
        let call = |name: &str| K::list(vec![K::symbol(name), K::long(1)]);
        check(call("getHistory"), Verdict::route("hdb"));
        check(call("hist.trades"), Verdict::route("hdb"));
        check(call("getQuote"), Verdict::route("rdb"));
        check(
            K::list(vec![K::string("getHistory"), K::long(1)]),
            Verdict::route("hdb"),
        );
    }

    #[test]
    fn free_text_passes() {
        check(K::string("select from trade"), Verdict::Pass);
    }

    #[test]
    fn a_rule_needs_an_upstream_and_functions() {
        let config = Config::from_json(r#"{"rules": [{"upstream": "", "functions": ["f"]}]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(Routes::init(&config).is_err());
    }
}
