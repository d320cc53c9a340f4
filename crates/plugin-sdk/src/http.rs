//! HTTP on the q port (`.z.ph`, `.z.pp`): what [`Plugin::on_http`](crate::Plugin::on_http) is
//! given ([`HttpCtx`]) and the verdicts it returns ([`HttpVerdict`], built with [`respond`] and
//! [`deny`]).
//!
//! A request reaches plugins once its login is accepted; the session's user is the one its
//! Basic credentials (or its client certificate) named. Its q text (`GET /?expr`, a POST's body)
//! has the same [`Facts`] a free-text IPC query has, so a policy checks both alike.

use std::cell::OnceCell;

use crate::{
    Session,
    bindings::qgate::plugin::types::{HttpDeny, HttpHead, HttpHeader, HttpRequest, HttpResponse},
    facts::{self, Facts},
};

pub use crate::bindings::qgate::plugin::types::HttpVerdict;

/// Where a request's body and text are.
enum Source<'a> {
    /// In the host, fetched on demand.
    Host(&'a HttpRequest),
    /// In the guest: a request built by [`HttpCtx::new`].
    Local(Vec<u8>),
}

/// What [`Plugin::on_http`](crate::Plugin::on_http) is given: the session, the request's method,
/// path, query and headers, and its body and q text, fetched on demand.
pub struct HttpCtx<'a> {
    session: Session,
    head: HttpHead,
    source: Source<'a>,
    text: OnceCell<Option<Vec<u8>>>,
    facts: OnceCell<Facts>,
}

impl std::fmt::Debug for HttpCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCtx")
            .field("session", &self.session)
            .field("method", &self.head.method)
            .field("path", &self.head.path)
            .finish_non_exhaustive()
    }
}

impl<'a> HttpCtx<'a> {
    /// A context over a request that stays in the host.
    pub(crate) fn host(session: Session, head: HttpHead, request: &'a HttpRequest) -> Self {
        Self {
            session,
            head,
            source: Source::Host(request),
            text: OnceCell::new(),
            facts: OnceCell::new(),
        }
    }

    /// A context over a WebSocket upgrade: its head, no body.
    pub(crate) fn upgrade(session: Session, head: HttpHead) -> HttpCtx<'static> {
        HttpCtx {
            session,
            head,
            source: Source::Local(Vec::new()),
            text: OnceCell::new(),
            facts: OnceCell::new(),
        }
    }

    /// A context over a request built here, as the host would pass it; for tests. `target` is
    /// the path and query as in a request line (`/?til%2010`).
    pub fn new(
        session: Session,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpCtx<'static> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (target, None),
        };
        HttpCtx {
            session,
            head: HttpHead {
                method: method.to_owned(),
                path: path.to_owned(),
                query,
                headers: headers
                    .iter()
                    .map(|(name, value)| HttpHeader {
                        name: name.to_ascii_lowercase(),
                        value: value.as_bytes().to_vec(),
                    })
                    .collect(),
                body_size: body.len() as u64,
            },
            source: Source::Local(body.to_vec()),
            text: OnceCell::new(),
            facts: OnceCell::new(),
        }
    }

    /// The connection the request came on.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The user (`.z.u`), as the login named it.
    pub fn user(&self) -> &str {
        &self.session.user
    }

    /// The method as sent: `GET`, `POST`, ...
    pub fn method(&self) -> &str {
        &self.head.method
    }

    /// The path as sent (percent-encoded): `/`, `/index.html`.
    pub fn path(&self) -> &str {
        &self.head.path
    }

    /// The query string after `?` as sent (percent-encoded).
    pub fn query(&self) -> Option<&str> {
        self.head.query.as_deref()
    }

    /// The first value of the header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value.as_slice())
    }

    /// Every header, in the order sent, names lower case.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.head
            .headers
            .iter()
            .map(|header| (header.name.as_str(), header.value.as_slice()))
    }

    /// The size of the body in bytes.
    pub fn body_size(&self) -> u64 {
        self.head.body_size
    }

    /// The body, copied from the host.
    pub fn body(&self) -> Vec<u8> {
        match &self.source {
            Source::Host(request) => request.body(),
            Source::Local(body) => body.clone(),
        }
    }

    /// The q text the request carries, as kdb+'s default handlers read it: the query of
    /// `GET /?expr`, `%XX`-decoded (`+` stays `+`, as q's `.h.uh` leaves it), or a POST's body;
    /// `None` for other requests. Bytes that are not UTF-8 are replaced.
    pub fn text(&self) -> Option<String> {
        self.text_bytes()
            .map(|text| String::from_utf8_lossy(text).into_owned())
    }

    fn text_bytes(&self) -> Option<&[u8]> {
        self.text
            .get_or_init(|| match &self.source {
                Source::Host(request) => request.text(),
                Source::Local(body) => qgate_q::http_text(
                    &self.head.method,
                    &self.head.path,
                    self.head.query.as_deref(),
                    body,
                ),
            })
            .as_deref()
    }

    /// The facts of the request's q text, as a free-text IPC query has them (none without text).
    /// The host parses the text once for the whole chain.
    pub fn facts(&self) -> &Facts {
        self.facts.get_or_init(|| match &self.source {
            Source::Host(request) => facts::from_wit(request.facts()),
            Source::Local(_) => match self.text_bytes() {
                Some(text) => Facts::of_text(text),
                None => Facts::default(),
            },
        })
    }
}

/// Answers with `status`, a `content-type` header and `body`.
pub fn respond(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> HttpVerdict {
    HttpVerdict::Respond(HttpResponse {
        status,
        headers: vec![HttpHeader {
            name: "content-type".to_owned(),
            value: content_type.as_bytes().to_vec(),
        }],
        body: body.into(),
    })
}

/// Refuses with `status` (a 4xx or 5xx) and `text` as the body.
pub fn deny(status: u16, text: impl Into<String>) -> HttpVerdict {
    HttpVerdict::Deny(HttpDeny {
        status,
        text: text.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::session;

    #[test]
    fn a_test_request_has_the_text_and_facts_the_host_would_give() {
        let ctx = HttpCtx::new(
            session(1, "u"),
            "GET",
            "/?select%20from%20trade",
            &[("Accept", "text/html")],
            b"",
        );
        assert_eq!(ctx.path(), "/");
        assert_eq!(ctx.query(), Some("select%20from%20trade"));
        assert_eq!(ctx.header("accept"), Some(&b"text/html"[..]));
        assert_eq!(ctx.text().as_deref(), Some("select from trade"));
        assert_eq!(ctx.facts().tables_read, ["trade"]);
        let post = HttpCtx::new(session(1, "u"), "POST", "/", &[], b"f[1]");
        assert_eq!(post.text().as_deref(), Some("f[1]"));
        let page = HttpCtx::new(session(1, "u"), "GET", "/index.html", &[], b"");
        assert_eq!(page.text(), None);
        assert_eq!(page.facts(), &Facts::default());
    }
}
