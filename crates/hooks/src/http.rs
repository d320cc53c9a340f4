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

    /// The q text the request carries, as kdb+'s default handlers read it: for a `GET` of the
    /// root path, the query string percent-decoded (`/?select%20from%20t` is `select from t`;
    /// `+` stays `+`, as q's `.h.uh` leaves it); for a `POST`, the body. `None` otherwise.
    pub fn q_text(&self) -> Option<Vec<u8>> {
        match self.method.as_str() {
            "GET" | "HEAD" if self.path == "/" => self
                .query
                .as_deref()
                .map(|query| percent_decode(query.as_bytes())),
            "POST" => Some(self.body.clone()),
            _ => None,
        }
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

/// `%XX` sequences decoded; anything else (a `+`, a `%` not followed by two hex digits) as it is.
pub fn percent_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%'
            && let [high, low, after @ ..] = tail
            && let (Some(high), Some(low)) = (hex(*high), hex(*low))
        {
            out.push((high << 4) | low);
            rest = after;
            continue;
        }
        out.push(byte);
        rest = tail;
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_leaves_plus_and_broken_escapes_alone() {
        assert_eq!(percent_decode(b"select%20from%20t"), b"select from t");
        assert_eq!(percent_decode(b"2+2"), b"2+2");
        assert_eq!(percent_decode(b"%41%4a%zz%4"), b"AJ%zz%4");
        assert_eq!(percent_decode(b"%"), b"%");
    }

    #[test]
    fn q_text_is_the_root_query_or_the_post_body() {
        let get = HttpRequest::new("GET", "/", Some("til%2010".into()));
        assert_eq!(get.q_text().as_deref(), Some(&b"til 10"[..]));
        let page = HttpRequest::new("GET", "/index.html", Some("a".into()));
        assert_eq!(page.q_text(), None);
        let mut post = HttpRequest::new("POST", "/", None);
        post.body = b"1+1".to_vec();
        assert_eq!(post.q_text().as_deref(), Some(&b"1+1"[..]));
    }
}
