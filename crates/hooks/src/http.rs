//! HTTP on the q port, as the hooks see it: a request that logged in ([`HttpRequest`]), and what
//! the hooks make of it ([`HttpVerdict`]).
//!
//! A kdb+ port answers HTTP as well as q: a `GET` reaches `.z.ph`, a `POST` reaches `.z.pp`.
//! The server reads the request within its limits, checks its login (HTTP Basic, against the
//! password file and then [`crate::Hooks::on_auth`], or a client certificate), and then asks
//! [`crate::Hooks::on_http`].
//! What every hook passes goes to [`crate::Backend::http`] (in gateway mode, the upstream kdb+'s
//! own HTTP), or gets a `404` saying that nothing answered.
//!
//! Bodies are plain bytes, read whole within the server's `max_body_bytes` before the hooks see
//! them: a web request to a q process is a query, not an upload.

use std::fmt;

/// An HTTP request from a client that logged in.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpRequest {
    /// The method, as sent: `GET`, `POST`, ...
    pub method: String,
    /// The path, as sent (still percent-encoded): `/`, `/index.html`.
    pub path: String,
    /// The query string after `?`, as sent (still percent-encoded); `None` without a `?`.
    pub query: Option<String>,
    /// The headers in the order sent, names lower case. The `authorization` header is not among
    /// them: the server has checked it, and the session carries the user it names.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, whole.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A request with no headers and no body.
    pub fn new(method: impl Into<String>, path: impl Into<String>, query: Option<String>) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            query,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_slice())
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query.as_ref().map(String::len))
            .field("headers", &self.headers.len())
            .field("body", &self.body.len())
            .finish()
    }
}

/// An HTTP response made by a hook or received from the backend.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers; the server sets `content-length` itself.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, whole.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with this status and body and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// With one more header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A `text/plain` response.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self::new(status, text.into().into_bytes())
            .with_header("content-type", "text/plain; charset=utf-8")
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body", &self.body.len())
            .finish()
    }
}

/// What the hooks make of an HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpVerdict {
    /// No opinion: the next hook, then the backend, decide.
    Pass,
    /// Answer with this response.
    Respond(HttpResponse),
    /// Refuse with this status (a 4xx or 5xx; anything else is sent as 403) and text.
    Deny {
        /// The status code.
        status: u16,
        /// Why, sent as the body.
        text: String,
    },
    /// Send the request to the backend's service of this name, ending the chain.
    Route(String),
}

/// The response a request gets when every hook passed and there is no backend.
pub const NOTHING_ANSWERED_HTTP: &str =
    "qgate: nothing answered this request: no plugin answered it and no upstream is configured";
