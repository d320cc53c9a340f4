//! The glue between the generated `Guest` trait and a [`Plugin`]: one plugin value per component
//! instance, kept in a thread-local slot.
//!
//! A component instance is single-threaded and the host never re-enters it, so a `RefCell` in a
//! `thread_local!` is enough and needs no `unsafe`. The slot holds an `Rc` that each handler
//! clones before calling into the plugin, so no borrow of the slot is held while plugin code runs.

use std::{any::Any, cell::RefCell, marker::PhantomData, rc::Rc};

use crate::{
    AuthVerdict, DataSummary, DataVerdict, Events, Outcome, Plugin, Session, Summary, Verdict,
    bindings::{
        Guest,
        qgate::plugin::types::{HttpHead, HttpRequest, Message, WsMessage},
    },
    ctx::{AuthCtx, CloseCtx, Config, MessageCtx, OpenCtx, OutcomeCtx},
    data::DataCtx,
    host,
    http::{HttpCtx, HttpVerdict},
    ws::{WsCtx, WsOpenVerdict, WsVerdict},
};

thread_local! {
    /// The plugin value `init` created; `None` before `init` succeeds.
    static INSTANCE: RefCell<Option<Rc<dyn Any>>> = const { RefCell::new(None) };
}

/// The verdict of a handler called before `init` succeeded (the host never does this): refuse,
/// as the host treats any plugin failure for auth, sync and async.
const NOT_INITIALIZED: &str = "plugin not initialised";

/// Implements the generated `Guest` trait for the plugin `P`; named by
/// [`export_plugin!`](crate::export_plugin).
pub struct Glue<P>(PhantomData<P>);

/// The plugin value of this instance.
fn instance<P: Plugin>() -> Option<Rc<P>> {
    let any = INSTANCE.with(|slot| slot.borrow().clone())?;
    any.downcast::<P>().ok()
}

/// Runs `f` on the plugin, or logs and returns `otherwise` before `init`.
fn with_plugin<P: Plugin, R>(otherwise: R, f: impl FnOnce(&P) -> R) -> R {
    match instance::<P>() {
        Some(plugin) => f(&plugin),
        None => {
            host::log(host::Level::Error, NOT_INITIALIZED);
            otherwise
        }
    }
}

impl<P: Plugin> Guest for Glue<P> {
    fn init(config: String) -> Result<(), String> {
        let config = Config::from_json(&config)?;
        let plugin = P::init(&config)?;
        INSTANCE.with(|slot| *slot.borrow_mut() = Some(Rc::new(plugin)));
        Ok(())
    }

    fn events() -> Events {
        with_plugin::<P, _>(P::EVENTS, |plugin| plugin.events())
    }

    fn on_auth(session: Session, password: Option<Vec<u8>>) -> AuthVerdict {
        with_plugin::<P, _>(AuthVerdict::Deny, |plugin| {
            plugin.on_auth(&AuthCtx::new(session, password))
        })
    }

    fn on_open(session: Session) -> Result<(), String> {
        with_plugin::<P, _>(Err(NOT_INITIALIZED.to_owned()), |plugin| {
            plugin.on_open(&OpenCtx::new(session))
        })
    }

    fn on_sync(message: &Message) -> Verdict {
        with_plugin::<P, _>(Verdict::Deny(NOT_INITIALIZED.to_owned()), |plugin| {
            plugin.on_sync(&MessageCtx::host(message))
        })
    }

    fn on_async(message: &Message) -> Verdict {
        with_plugin::<P, _>(Verdict::Deny(NOT_INITIALIZED.to_owned()), |plugin| {
            plugin.on_async(&MessageCtx::host(message))
        })
    }

    fn on_close(session: Session, reason: String) {
        with_plugin::<P, _>((), |plugin| {
            plugin.on_close(&CloseCtx::new(session, reason))
        });
    }

    fn on_outcome(
        session: Session,
        summary: Option<Summary>,
        message: Option<&Message>,
        outcome: Outcome,
    ) {
        with_plugin::<P, _>((), |plugin| {
            plugin.on_outcome(&OutcomeCtx::host(session, summary, message, outcome))
        });
    }

    fn on_response(
        session: Session,
        request_summary: Summary,
        request: &Message,
        summary: DataSummary,
        reply: &Message,
    ) -> DataVerdict {
        with_plugin::<P, _>(DataVerdict::Deny(NOT_INITIALIZED.to_owned()), |plugin| {
            plugin.on_response(&DataCtx::host(
                session,
                Some((request_summary, request)),
                summary,
                reply,
            ))
        })
    }

    fn on_publication(session: Session, summary: DataSummary, message: &Message) -> DataVerdict {
        with_plugin::<P, _>(DataVerdict::Deny(NOT_INITIALIZED.to_owned()), |plugin| {
            plugin.on_publication(&DataCtx::host(session, None, summary, message))
        })
    }

    fn on_http(session: Session, head: HttpHead, request: &HttpRequest) -> HttpVerdict {
        with_plugin::<P, _>(crate::http::deny(500, NOT_INITIALIZED), |plugin| {
            plugin.on_http(&HttpCtx::host(session, head, request))
        })
    }

    fn on_ws_open(session: Session, head: HttpHead) -> WsOpenVerdict {
        with_plugin::<P, _>(crate::ws::deny_open(500, NOT_INITIALIZED), |plugin| {
            plugin.on_ws_open(&HttpCtx::upgrade(session, head))
        })
    }

    fn on_ws_message(session: Session, message: WsMessage) -> WsVerdict {
        with_plugin::<P, _>(crate::ws::deny(NOT_INITIALIZED), |plugin| {
            plugin.on_ws_message(&WsCtx::new(session, message))
        })
    }

    fn on_ws_close(session: Session, reason: String) {
        with_plugin::<P, _>((), |plugin| {
            plugin.on_ws_close(&CloseCtx::new(session, reason));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, session};

    /// The smallest plugin: it implements only `init`.
    struct Nothing;

    impl Plugin for Nothing {
        fn init(config: &Config) -> Result<Self, String> {
            match config.get::<bool>("fail")? {
                Some(true) => Err("told to fail".to_owned()),
                _ => Ok(Nothing),
            }
        }
    }

    type G = Glue<Nothing>;

    #[test]
    fn a_plugin_with_only_init_passes_everything() {
        INSTANCE.with(|slot| *slot.borrow_mut() = None);
        testing::reset();
        // Before init: fail closed, and say so.
        assert_eq!(G::on_auth(session(1, "u"), None), AuthVerdict::Deny);
        assert_eq!(testing::logs().len(), 1);

        assert_eq!(G::init(String::new()), Ok(()));
        assert_eq!(
            G::events(),
            Events::all()
                .difference(Events::OUTCOME)
                .difference(Events::RESPONSE)
                .difference(Events::PUBLICATION)
                .difference(Events::HTTP)
                .difference(Events::WS_OPEN)
                .difference(Events::WS_MESSAGE)
                .difference(Events::WS_CLOSE)
        );
        assert_eq!(
            G::on_ws_message(session(1, "u"), crate::ws::text_message("x")),
            WsVerdict::Pass
        );
        assert_eq!(
            G::on_ws_open(
                session(1, "u"),
                crate::bindings::qgate::plugin::types::HttpHead {
                    method: "GET".into(),
                    path: "/".into(),
                    query: None,
                    headers: Vec::new(),
                    body_size: 0,
                }
            ),
            WsOpenVerdict::Accept
        );
        assert_eq!(
            G::on_auth(session(1, "u"), Some(b"pw".to_vec())),
            AuthVerdict::Pass
        );
        assert_eq!(G::on_open(session(1, "u")), Ok(()));
        G::on_close(session(1, "u"), "closed".to_owned());
        assert!(testing::logs().is_empty());
    }

    #[test]
    fn a_failing_init_reports_its_message() {
        assert_eq!(
            G::init(r#"{"fail": true}"#.to_owned()),
            Err("told to fail".to_owned())
        );
        assert!(G::init("[]".to_owned()).is_err());
        assert!(G::init(r#"{"fail": 3}"#.to_owned()).is_err());
    }
}
